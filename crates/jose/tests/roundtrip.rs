//! Property tests: what the JOSE crate writes, it reads back unchanged — JWKs, signed JWTs
//! over random claims, base64url — and its strict JSON parser reads what serde_json reads,
//! except duplicate members, which it refuses and names.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use proptest::prelude::*;
use segl_jose::{
    Alg, Error, JsonObject, Jwk, SigningKey, UnverifiedJws, b64_decode, b64_encode, parse_object,
    sign_jwt,
};
use serde_json::Value;
use std::sync::OnceLock;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One key per algorithm family (RSA generation is the slow one: once).
fn keys() -> &'static [SigningKey] {
    static KEYS: OnceLock<Vec<SigningKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        [Alg::ES256, Alg::EdDSA, Alg::PS256, Alg::ES384]
            .into_iter()
            .map(|a| SigningKey::generate(a).unwrap())
            .collect()
    })
}

/// Member names, including the characters that once confused error reporting.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,10}",
        "[a-z`\"\\\\]{0,3}( at line [0-9]+)?( column [0-9]+)?[a-z`]{0,3}",
    ]
}

/// Any JSON value, nested at most `depth` deep.
fn json(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(name(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn object(depth: u32) -> impl Strategy<Value = JsonObject> {
    prop::collection::btree_map(name(), json(depth), 0..8).prop_map(|m| m.into_iter().collect())
}

fn opt() -> impl Strategy<Value = Option<String>> {
    prop::option::of("\\PC{0,16}")
}

fn jwk() -> impl Strategy<Value = Jwk> {
    (
        ("\\PC{0,6}", opt(), opt(), opt(), opt(), opt(), opt(), opt()),
        (opt(), opt(), opt(), opt(), opt(), opt(), opt()),
    )
        .prop_map(
            |((kty, kid, alg, use_, n, e, crv, x), (y, d, p, q, dp, dq, qi))| Jwk {
                kty,
                kid,
                alg,
                use_,
                n,
                e,
                crv,
                x,
                y,
                d,
                p,
                q,
                dp,
                dq,
                qi,
            },
        )
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn jwk_json_round_trip(jwk in jwk()) {
        let text = serde_json::to_vec(&jwk).unwrap();
        prop_assert_eq!(Jwk::from_json(&text).unwrap(), jwk.clone());
        let public = jwk.to_public();
        prop_assert!(!public.has_private_members());
        prop_assert_eq!(Jwk::from_json(&serde_json::to_vec(&public).unwrap()).unwrap(), public);
    }

    #[test]
    fn base64url_round_trip(data in prop::collection::vec(any::<u8>(), 0..200)) {
        let text = b64_encode(&data);
        prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        prop_assert_eq!(b64_decode(&text).unwrap(), data);
        // Strict: padding and the standard alphabet are refused.
        let padded = format!("{text}=");
        prop_assert!(b64_decode(&padded).is_err());
        let standard = text.replace('-', "+").replace('_', "/");
        prop_assert_eq!(b64_decode(&standard).is_ok(), standard == text);
    }

    #[test]
    fn strict_parser_reads_what_serde_json_reads(obj in object(4)) {
        for text in [serde_json::to_string(&obj).unwrap(), serde_json::to_string_pretty(&obj).unwrap()] {
            let loose: Value = serde_json::from_str(&text).unwrap();
            let strict = parse_object(text.as_bytes()).unwrap();
            prop_assert_eq!(Value::Object(strict), loose);
        }
    }

    #[test]
    fn duplicate_members_are_refused_and_named(
        obj in object(2),
        dup in name(),
        first in json(1),
        second in json(1),
        wrap in 0usize..3,
    ) {
        // {"dup": first, ...obj without dup..., "dup": second}, possibly nested deeper.
        let mut members = vec![format!("{}:{}", Value::from(dup.clone()), first)];
        members.extend(
            obj.iter()
                .filter(|(k, _)| **k != dup)
                .map(|(k, v)| format!("{}:{}", Value::from(k.clone()), v)),
        );
        members.push(format!("{}:{}", Value::from(dup.clone()), second));
        let mut text = format!("{{{}}}", members.join(","));
        for _ in 0..wrap {
            text = format!("{{\"outer\":[{text}]}}");
        }
        prop_assert_eq!(parse_object(text.as_bytes()), Err(Error::DuplicateMember(dup)));
    }
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn signed_random_claims_parse_and_verify(claims in object(3), which in 0usize..4, typ in "[a-z+]{1,12}") {
        let key = &keys()[which];
        let jwt = sign_jwt(key, &typ, &claims).unwrap();
        let jws = UnverifiedJws::parse(&jwt).unwrap();
        prop_assert_eq!(jws.alg(), key.alg());
        prop_assert_eq!(jws.unverified_header_str("typ"), Some(typ.as_str()));
        prop_assert_eq!(jws.unverified_header_str("kid"), Some(key.kid()));
        prop_assert_eq!(jws.unverified_claims(), &claims);
        let verified = jws.verify(&key.verifying_key().unwrap()).unwrap();
        prop_assert_eq!(verified.claims(), &claims);
        // Another key of the same algorithm family never verifies it.
        let other = SigningKey::generate(key.alg()).unwrap();
        let again = UnverifiedJws::parse(&jwt).unwrap();
        prop_assert_eq!(again.verify(&other.verifying_key().unwrap()).unwrap_err(), Error::BadSignature);
    }
}
