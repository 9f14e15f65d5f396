//! Property tests: a form body serialized from random parameters parses back to them
//! (percent-encoding, `+` for space, empty values absent, repeatable `resource`/`audience`),
//! and a repeated single-valued parameter is always refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::prelude::*;
use segl_core::form::{Form, MAX_PARAMS};
use segl_proto::ErrorCode;

/// application/x-www-form-urlencoded, with spaces as `+` or `%20` at random.
fn encode(text: &str, plus: bool) -> String {
    let encoded = utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
    if plus {
        encoded.replace("%20", "+")
    } else {
        encoded
    }
}

fn single_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "grant_type",
            "scope",
            "client_id",
            "code",
            "redirect_uri"
        ])
        .prop_map(str::to_owned),
        "\\PC{1,12}",
    ]
    .prop_filter("repeatable names are generated apart", |n| {
        n != "resource" && n != "audience"
    })
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof!["[ -~]{0,20}", "\\PC{0,20}", any::<String>()]
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn serialized_form_parses_back(
        singles in prop::collection::btree_map(single_name(), value(), 0..20),
        resources in prop::collection::vec(value(), 0..5),
        audiences in prop::collection::vec(value(), 0..5),
        plus in any::<bool>(),
        positions in prop::collection::vec(any::<prop::sample::Index>(), 20),
    ) {
        // The repeated values in order, the single ones anywhere between them.
        let mut pairs: Vec<String> = resources
            .iter()
            .map(|v| format!("resource={}", encode(v, plus)))
            .chain(audiences.iter().map(|v| format!("audience={}", encode(v, plus))))
            .collect();
        for ((n, v), at) in singles.iter().zip(&positions) {
            let at = at.index(pairs.len() + 1);
            pairs.insert(at, format!("{}={}", encode(n, plus), encode(v, plus)));
        }
        let body = pairs.join("&");
        let mut form = Form::parse(body.as_bytes()).unwrap();
        for (name, value) in &singles {
            let expected = (!value.is_empty()).then_some(value.as_str());
            prop_assert_eq!(form.get(name), expected, "{}", name);
        }
        let non_empty = |v: &Vec<String>| v.iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>();
        prop_assert_eq!(form.take_all("resource"), non_empty(&resources));
        prop_assert_eq!(form.take_all("audience"), non_empty(&audiences));
        for name in singles.keys() {
            form.take(name);
        }
        prop_assert!(form.is_empty(), "a parameter came from nowhere: {:?}", form);
    }

    #[test]
    fn repeated_single_parameter_is_refused(
        name in single_name(),
        first in "\\PC{1,10}",
        second in "\\PC{1,10}",
        others in prop::collection::btree_map("[a-z]{1,6}_x", "[a-z]{1,6}", 0..5),
    ) {
        let mut body: Vec<String> = others.iter().map(|(n, v)| format!("{n}={v}")).collect();
        body.insert(0, format!("{}={}", encode(&name, true), encode(&first, true)));
        body.push(format!("{}={}", encode(&name, false), encode(&second, false)));
        let e = Form::parse(body.join("&").as_bytes()).unwrap_err();
        prop_assert_eq!(e.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn parameter_count_is_bounded(extra in 0usize..8, names in prop::collection::btree_map("[a-z]{1,8}", Just(()), MAX_PARAMS + 1..MAX_PARAMS + 20)) {
        let body: Vec<String> = names.keys().map(|n| format!("{n}=1")).collect();
        let within: Vec<String> = body.iter().take(MAX_PARAMS - extra).cloned().collect();
        prop_assert!(Form::parse(within.join("&").as_bytes()).is_ok());
        prop_assert!(Form::parse(body.join("&").as_bytes()).is_err());
    }
}

#[test]
fn invalid_utf8_is_refused_wherever_it_is() {
    for body in [&b"a=%C3"[..], b"%FF=1", b"a=\xff", b"a=1&b=%E2%82"] {
        assert_eq!(
            Form::parse(body).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }
    assert_eq!(
        Form::parse("a=%C3%A9+%2B".as_bytes()).unwrap().get("a"),
        Some("é +")
    );
}
