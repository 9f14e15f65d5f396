//! Client-assertion checks with crafted inputs, named after what they reject.

use super::*;
use crate::Tenancy;
use segl_jose::{Alg, SigningKey, b64_encode, sign_jwt};
use segl_proto::ErrorCode;
use serde_json::json;

const NOW: i64 = 1_800_000_000;

fn setup(profile: Profile) -> (SigningKey, Registry, Policy) {
    let key = SigningKey::generate(Alg::ES256).unwrap();
    let client = Client::new(
        "c1".into(),
        "Client One".into(),
        "999977774".into(),
        vec![],
        ["client_credentials".to_owned()].into(),
        ["api:x/read".to_owned()].into(),
        Tenancy::Single,
        false,
        &[key.public_jwk().clone()],
        profile.accepted_algs(),
    )
    .unwrap();
    let registry = Registry::new(vec![], vec![client]).unwrap();
    let policy = Policy {
        issuer: "https://segl.test".into(),
        token_endpoint: "https://segl.test/connect/token".into(),
        profile,
        access_token_lifetime: 600,
    };
    (key, registry, policy)
}

fn claims() -> serde_json::Value {
    json!({"iss": "c1", "sub": "c1", "aud": "https://segl.test", "iat": NOW, "nbf": NOW, "exp": NOW + 30, "jti": "j1"})
}

fn params(assertion: String) -> ClientAuthParams {
    ClientAuthParams {
        client_assertion: Some(assertion),
        client_assertion_type: Some(segl_proto::CLIENT_ASSERTION_TYPE_JWT_BEARER.into()),
        ..Default::default()
    }
}

fn check(
    key: &SigningKey,
    reg: &Registry,
    pol: &Policy,
    c: serde_json::Value,
) -> Result<VerifiedAssertion, OAuthError> {
    let jwt = sign_jwt(key, "client-authentication+jwt", &c).unwrap();
    verify_assertion(&params(jwt), reg, pol, Endpoint::Token, UnixTime(NOW))
}

fn with(patch: serde_json::Value) -> serde_json::Value {
    let mut c = claims();
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

#[test]
fn valid_assertion_passes_and_replay_is_refused() {
    let (key, reg, pol) = setup(Profile::HelseId);
    let v = check(&key, &reg, &pol, claims()).unwrap();
    assert_eq!(v.client_id(), "c1");
    assert_eq!(v.remember_until(), UnixTime(NOW + 30 + CLOCK_SKEW));
    let again = check(&key, &reg, &pol, claims()).unwrap();
    assert_eq!(v.replay_key(), again.replay_key());
    assert!(v.accept(true).is_ok());
    assert_eq!(
        again.accept(false).unwrap_err().code,
        ErrorCode::InvalidClient
    );
}

#[test]
fn audience_variants_by_profile() {
    let (key, reg, pol) = setup(Profile::HelseId);
    for ok in [
        json!("https://segl.test"),
        json!("https://segl.test/"),
        json!("https://segl.test/connect/token"),
        json!(["https://segl.test"]),
    ] {
        assert!(
            check(&key, &reg, &pol, with(json!({"aud": ok.clone()}))).is_ok(),
            "{ok}"
        );
    }
    for bad in [
        json!("https://other"),
        json!(["https://segl.test", "https://other"]),
        json!(null),
        json!(5),
    ] {
        assert!(
            check(&key, &reg, &pol, with(json!({"aud": bad.clone()}))).is_err(),
            "{bad}"
        );
    }
    let (key, reg, pol) = setup(Profile::Fapi2);
    assert!(check(&key, &reg, &pol, claims()).is_ok());
    assert!(
        check(
            &key,
            &reg,
            &pol,
            with(json!({"aud": "https://segl.test/connect/token"}))
        )
        .is_err()
    );
    assert!(check(&key, &reg, &pol, with(json!({"aud": "https://segl.test/"}))).is_err());
}

#[test]
fn time_windows() {
    let (key, reg, pol) = setup(Profile::HelseId);
    // exp past (beyond skew), iat/nbf too far ahead, lifetime over 60 s.
    for bad in [
        json!({"exp": NOW - 11}),
        json!({"iat": NOW + 11, "exp": NOW + 40}),
        json!({"nbf": NOW + 11}),
        json!({"iat": NOW, "exp": NOW + 61}),
        json!({"exp": null}),
        json!({"exp": "soon"}),
    ] {
        assert_eq!(
            check(&key, &reg, &pol, with(bad.clone())).unwrap_err().code,
            ErrorCode::InvalidClient,
            "{bad}"
        );
    }
    // Near misses that pass: within skew, exactly 60 s, numeric strings (D7).
    for ok in [
        json!({"exp": NOW - 9, "iat": NOW - 30}),
        json!({"iat": NOW + 9, "exp": NOW + 40}),
        json!({"iat": NOW, "exp": NOW + 60}),
        json!({"iat": NOW.to_string(), "nbf": NOW.to_string()}),
    ] {
        assert!(check(&key, &reg, &pol, with(ok.clone())).is_ok(), "{ok}");
    }
    let (key, reg, pol) = setup(Profile::Fapi2);
    assert!(check(&key, &reg, &pol, with(json!({"iat": NOW.to_string()}))).is_err());
}

#[test]
fn identity_claims_must_name_the_client() {
    let (key, reg, pol) = setup(Profile::HelseId);
    assert!(check(&key, &reg, &pol, with(json!({"sub": "c2"}))).is_err());
    assert!(check(&key, &reg, &pol, with(json!({"sub": null}))).is_err());
    assert!(
        check(
            &key,
            &reg,
            &pol,
            with(json!({"iss": "nobody", "sub": "nobody"}))
        )
        .is_err()
    );
    assert!(check(&key, &reg, &pol, with(json!({"jti": null}))).is_err());
    assert!(
        check(
            &key,
            &reg,
            &pol,
            with(json!({"jti": "x".repeat(MAX_JTI_LEN + 1)}))
        )
        .is_err()
    );
    let jwt = sign_jwt(&key, "JWT", &claims()).unwrap();
    let mut p = params(jwt);
    p.client_id = Some("c2".into());
    assert!(verify_assertion(&p, &reg, &pol, Endpoint::Token, UnixTime(NOW)).is_err());
}

#[test]
fn foreign_key_wrong_typ_embedded_jwk_and_secrets_are_refused() {
    let (key, reg, pol) = setup(Profile::HelseId);
    let other = SigningKey::generate(Alg::ES256).unwrap();
    assert!(check(&other, &reg, &pol, claims()).is_err());
    for typ in ["dpop+jwt", "at+jwt"] {
        let jwt = sign_jwt(&key, typ, &claims()).unwrap();
        assert!(
            verify_assertion(&params(jwt), &reg, &pol, Endpoint::Token, UnixTime(NOW)).is_err(),
            "{typ}"
        );
    }
    // A header that carries the signing key itself.
    let header = json!({"alg": "ES256", "jwk": key.public_jwk()});
    let input = format!(
        "{}.{}",
        b64_encode(header.to_string()),
        b64_encode(claims().to_string())
    );
    let sig = key.sign(input.as_bytes()).unwrap();
    let jwt = format!("{input}.{}", b64_encode(sig));
    let e = verify_assertion(&params(jwt), &reg, &pol, Endpoint::Token, UnixTime(NOW)).unwrap_err();
    assert!(e.description.contains("jwk"), "{e}");

    let jwt = sign_jwt(&key, "JWT", &claims()).unwrap();
    let mut p = params(jwt);
    p.client_secret_present = true;
    assert!(verify_assertion(&p, &reg, &pol, Endpoint::Token, UnixTime(NOW)).is_err());
    p.client_secret_present = false;
    p.client_assertion_type =
        Some("urn:ietf:params:oauth:client-assertion-type:saml2-bearer".into());
    assert!(verify_assertion(&p, &reg, &pol, Endpoint::Token, UnixTime(NOW)).is_err());
}
