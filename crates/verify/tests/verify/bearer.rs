//! Bearer presentation, the token checks (HELSEID.md §10 (1)–(6)) and the Authorization header,
//! each refusal next to the near-miss that passes.

use crate::harness::*;
use segl_jose::{Alg, SigningKey, b64_encode, sign_jwt};
use segl_proto::ErrorCode;
use segl_verify::{ErrorKind, TokenBinding};
use serde_json::json;

#[tokio::test]
async fn a_segl_token_passes_with_its_claims_typed() {
    let f = Fixture::new();
    let t = f.bearer(&f.bearer_token()).await.unwrap();
    assert_eq!(t.client_id(), Some("epj-granfjelldal"));
    assert_eq!(t.client_name(), Some("Acme EPJ at Granfjelldal"));
    assert_eq!(t.orgnr_parent(), Some("999977774"));
    assert_eq!(t.orgnr_child(), Some("999977776"));
    assert_eq!(t.orgnr_supplier(), Some("313745392"));
    assert_eq!(t.client_tenancy(), Some("multi-tenant"));
    assert_eq!(t.subject(), Some("epj-granfjelldal"));
    assert_eq!(t.jti(), Some("0123456789ABCDEF0123456789ABCDEF"));
    assert_eq!(t.audience(), [AUDIENCE]);
    assert_eq!(t.scopes(), [SCOPE]);
    assert_eq!(t.expires_at(), NOW + 300);
    assert!(!t.is_dpop_bound());
    assert_eq!(t.jkt(), None);
    assert_eq!(t.pid(), None);
    assert!(t.actors().is_empty());
    assert_eq!(t.claims()["client_amr"], "private_key_jwt");
}

#[tokio::test]
async fn person_and_token_exchange_claims_are_typed() {
    let f = Fixture::new();
    let mut c = f.claims();
    c["helseid://claims/identity/pid"] = json!("06828399789");
    c["helseid://claims/identity/pid_pseudonym"] = json!("PGzVzvP2Jvl=");
    c["helseid://claims/hpr/hpr_number"] = json!("431001110");
    c["helseid://claims/identity/security_level"] = json!("4");
    c["helseid://claims/identity/assurance_level"] = json!("high");
    c["helseid://claims/identity/network"] = json!("helsenett");
    c["helseid://claims/client/original_client_id"] = json!("epj");
    c["act"] = json!({
        "client_id": "sfm-api", "iss": ISSUER,
        "helseid://claims/client/claims/orgnr_parent": "994598759",
        "act": {"client_id": "epj", "iss": ISSUER, "helseid://claims/client/claims/orgnr_child": "999977776"}
    });
    let t = f.bearer(&f.token(&c)).await.unwrap();
    assert_eq!(t.pid(), Some("06828399789"));
    assert_eq!(t.pid_pseudonym(), Some("PGzVzvP2Jvl="));
    assert_eq!(t.hpr_number(), Some("431001110"));
    assert_eq!(t.security_level(), Some("4"));
    assert_eq!(t.assurance_level(), Some("high"));
    assert_eq!(t.network(), Some("helsenett"));
    assert_eq!(t.original_client_id(), Some("epj"));
    let chain: Vec<_> = t.actors().iter().map(|a| a.client_id()).collect();
    assert_eq!(chain, [Some("sfm-api"), Some("epj")]);
    assert_eq!(t.actors()[0].orgnr_parent(), Some("994598759"));
    assert_eq!(t.actors()[0].iss(), Some(ISSUER));
    assert_eq!(t.actors()[1].orgnr_child(), Some("999977776"));
    assert_eq!(t.actors()[1].orgnr_parent(), None);
    // A malformed act is a malformed token.
    c["act"] = json!("sfm-api");
    assert!(invalid_token(f.bearer(&f.token(&c)).await).contains("act"));
}

#[tokio::test]
async fn no_token_is_401_with_every_accepted_challenge_and_no_error() {
    let f = Fixture::new();
    let e = f.verify(&[], &[]).await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::NoToken);
    assert_eq!(e.status(), 401);
    assert_eq!(e.error_code(), None);
    let c = challenges(&e);
    assert_eq!(c.len(), 2);
    assert!(c[0].starts_with("DPoP algs=\"RS256 "), "{c:?}");
    assert_eq!(c[1], "Bearer");
    // Another scheme is no token for this API, too.
    let e = f.verify(&["Basic ZGV2OmRldg=="], &[]).await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::NoToken);
    // A Bearer-only API challenges Bearer only.
    let b = Fixture::with(|c| c.with_binding(TokenBinding::BearerOnly));
    assert_eq!(
        challenges(&b.verify(&[], &[]).await.unwrap_err()),
        ["Bearer"]
    );
}

#[tokio::test]
async fn authorization_header_shape() {
    let f = Fixture::new();
    let t = f.bearer_token();
    // Twins: the scheme is case-insensitive; extra spaces are tolerated.
    for ok in [
        format!("Bearer {t}"),
        format!("bearer {t}"),
        format!("BEARER  {t}"),
    ] {
        assert!(f.verify(&[&ok], &[]).await.is_ok(), "{ok}");
    }
    // Two Authorization headers: 400 invalid_request (even if both are good).
    let e = f
        .verify(&[&format!("Bearer {t}"), &format!("Bearer {t}")], &[])
        .await
        .unwrap_err();
    assert_eq!(e.status(), 400);
    assert_eq!(e.error_code(), Some(ErrorCode::InvalidRequest));
    // No credentials, or not a token68.
    for bad in ["Bearer", "Bearer ", &format!("Bearer {t} x"), "Bearer a,b"] {
        let e = f.verify(&[bad], &[]).await.unwrap_err();
        assert_eq!(e.error_code(), Some(ErrorCode::InvalidRequest), "{bad}");
        assert_eq!(
            challenges(&e),
            [
                "Bearer error=\"invalid_request\", error_description=\"the Authorization header has no well-formed token\""
            ]
        );
    }
}

#[tokio::test]
async fn signature_must_verify_with_the_key_the_kid_names() {
    let f = Fixture::new();
    let good = f.bearer_token();
    assert!(f.bearer(&good).await.is_ok());
    // The payload changed after signing.
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = f.claims();
    c["client_id"] = json!("someone-else");
    let forged = format!("{}.{}.{}", parts[0], b64_encode(c.to_string()), parts[2]);
    assert!(invalid_token(f.bearer(&forged).await).contains("signature"));
    // Signed by a key the issuer does not publish, under the issuer's kid.
    let other = SigningKey::generate(Alg::ES256).unwrap();
    let foreign = sign_jwt(&other, "at+jwt", &f.claims()).unwrap();
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": f.issuer_key.kid()});
    let f_parts: Vec<&str> = foreign.split('.').collect();
    let input = format!("{}.{}", b64_encode(header.to_string()), f_parts[1]);
    let sig = other.sign(input.as_bytes()).unwrap();
    assert!(
        invalid_token(f.bearer(&format!("{input}.{}", b64_encode(sig))).await)
            .contains("signature")
    );
    // Unknown kid on a fixed JWKS: nothing to refetch.
    assert!(invalid_token(f.bearer(&foreign).await).contains("kid"));
}

#[tokio::test]
async fn only_allow_listed_algorithms() {
    let es_only = |c: segl_verify::VerifierConfig| c.with_algs(&[Alg::ES256]);
    let rs = Fixture::with_keys(Alg::RS256, Alg::ES256, es_only);
    assert!(invalid_token(rs.bearer(&rs.bearer_token()).await).contains("alg RS256"));
    let es = Fixture::with_keys(Alg::ES256, Alg::ES256, es_only);
    assert!(es.bearer(&es.bearer_token()).await.is_ok());
    // none and HMAC never parse.
    let f = Fixture::new();
    for alg in ["none", "HS256"] {
        let h =
            b64_encode(json!({"alg": alg, "typ": "at+jwt", "kid": f.issuer_key.kid()}).to_string());
        let token = format!("{h}.{}.c2ln", b64_encode(f.claims().to_string()));
        assert!(
            invalid_token(f.bearer(&token).await).contains("not allowed"),
            "{alg}"
        );
    }
    // A token without kid is verified only when one key could have signed it.
    let h = b64_encode(json!({"alg": "ES256", "typ": "at+jwt"}).to_string());
    let input = format!("{h}.{}", b64_encode(f.claims().to_string()));
    let sig = f.issuer_key.sign(input.as_bytes()).unwrap();
    assert!(
        f.bearer(&format!("{input}.{}", b64_encode(sig)))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn typ_must_be_an_access_token_type() {
    let f = Fixture::new();
    for ok in ["at+jwt", "application/at+jwt", "AT+JWT", "JWT"] {
        let t = sign_jwt(&f.issuer_key, ok, &f.claims()).unwrap();
        assert!(f.bearer(&t).await.is_ok(), "{ok}");
    }
    for bad in ["dpop+jwt", "client-authentication+jwt", "id_token+jwt", ""] {
        let t = sign_jwt(&f.issuer_key, bad, &f.claims()).unwrap();
        assert!(invalid_token(f.bearer(&t).await).contains("typ"), "{bad}");
    }
}

#[tokio::test]
async fn issuer_is_compared_exactly() {
    let f = Fixture::new();
    for bad in [
        "https://segl.test/",
        "https://SEGL.test",
        "http://segl.test",
    ] {
        let mut c = f.claims();
        c["iss"] = json!(bad);
        assert!(
            invalid_token(f.bearer(&f.token(&c)).await).contains("iss"),
            "{bad}"
        );
    }
    let mut c = f.claims();
    c.as_object_mut().unwrap().remove("iss");
    assert!(invalid_token(f.bearer(&f.token(&c)).await).contains("iss"));
}

#[tokio::test]
async fn audience_string_or_array_single_when_configured() {
    let f = Fixture::new();
    let with_aud = |aud: serde_json::Value| {
        let mut c = f.claims();
        c["aud"] = aud;
        f.token(&c)
    };
    assert!(f.bearer(&with_aud(json!([AUDIENCE]))).await.is_ok());
    let two = with_aud(json!([AUDIENCE, "nhn:kjernejournal"]));
    assert!(invalid_token(f.bearer(&two).await).contains("single audience"));
    let lenient = Fixture::with(|c| c.with_single_audience(false));
    let mut c = lenient.claims();
    c["aud"] = json!(["nhn:kjernejournal", AUDIENCE]);
    let t = lenient.bearer(&lenient.token(&c)).await.unwrap();
    assert_eq!(t.audience(), ["nhn:kjernejournal", AUDIENCE]);
    for bad in [
        json!("nhn:kjernejournal"),
        json!([]),
        json!(["nhn:reseptformidleren/rf"]),
        json!(null),
        json!(7),
        json!([AUDIENCE, 7]),
    ] {
        assert!(
            invalid_token(f.bearer(&with_aud(bad.clone())).await).contains("aud"),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn lifetime_with_bounded_skew() {
    let f = Fixture::new();
    let with = |name: &str, v: serde_json::Value| {
        let mut c = f.claims();
        if v.is_null() {
            c.as_object_mut().unwrap().remove(name);
        } else {
            c[name] = v;
        }
        f.token(&c)
    };
    // exp: required, numeric, and 10 s of skew — no more.
    assert!(invalid_token(f.bearer(&with("exp", json!(null))).await).contains("exp"));
    assert!(
        invalid_token(f.bearer(&with("exp", json!((NOW + 300).to_string()))).await).contains("exp")
    );
    assert!(f.bearer(&with("exp", json!(NOW - 9))).await.is_ok());
    assert!(invalid_token(f.bearer(&with("exp", json!(NOW - 10))).await).contains("expired"));
    // nbf: optional, numeric, 10 s early is fine, 11 s is not.
    assert!(f.bearer(&with("nbf", json!(null))).await.is_ok());
    assert!(f.bearer(&with("nbf", json!(NOW + 10))).await.is_ok());
    assert!(invalid_token(f.bearer(&with("nbf", json!(NOW + 11))).await).contains("nbf"));
    assert!(invalid_token(f.bearer(&with("nbf", json!("soon"))).await).contains("nbf"));
    // The same token later: the verifier's clock decides.
    let t = f.bearer_token();
    f.clock.advance(309);
    assert!(f.bearer(&t).await.is_ok());
    f.clock.advance(1);
    assert!(invalid_token(f.bearer(&t).await).contains("expired"));
}

#[tokio::test]
async fn required_scopes_or_403() {
    let f = Fixture::new();
    let with_scope = |s: serde_json::Value| {
        let mut c = f.claims();
        c["scope"] = s;
        f.token(&c)
    };
    // HelseID's array and RFC 9068's string.
    assert!(
        f.bearer(&with_scope(json!(["openid", SCOPE])))
            .await
            .is_ok()
    );
    let t = f
        .bearer(&with_scope(json!(format!("openid {SCOPE}"))))
        .await
        .unwrap();
    assert_eq!(t.scopes(), ["openid", SCOPE]);
    for missing in [
        json!(["nhn:reseptformidleren/other"]),
        json!([]),
        json!("openid"),
    ] {
        let e = f.bearer(&with_scope(missing)).await.unwrap_err();
        assert_eq!(e.status(), 403);
        assert_eq!(
            e.kind(),
            &ErrorKind::InsufficientScope {
                scope: SCOPE.into()
            }
        );
        assert_eq!(
            challenges(&e),
            [format!(
                "Bearer error=\"insufficient_scope\", error_description=\"the token lacks a required scope\", scope=\"{SCOPE}\""
            )]
        );
    }
    let mut c = f.claims();
    c.as_object_mut().unwrap().remove("scope");
    assert_eq!(f.bearer(&f.token(&c)).await.unwrap_err().status(), 403);
    assert!(invalid_token(f.bearer(&with_scope(json!(7))).await).contains("scope"));
    assert!(invalid_token(f.bearer(&with_scope(json!([SCOPE, 7]))).await).contains("scope"));
    // No required scope: any scope passes.
    let open = Fixture::with(|c| c.with_required_scopes(Vec::<String>::new()));
    let mut c = open.claims();
    c["scope"] = json!([]);
    assert!(open.bearer(&open.token(&c)).await.is_ok());
}

#[tokio::test]
async fn bound_tokens_are_not_bearer_tokens() {
    let f = Fixture::new();
    assert!(f.bearer(&f.bearer_token()).await.is_ok());
    let e = f.bearer(&f.bound_token()).await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::InvalidToken(d) if d.contains("sender-constrained")));
    assert_eq!(challenges(&e).len(), 1);
    assert!(challenges(&e)[0].starts_with("Bearer error=\"invalid_token\""));
    // Bound some other way (mTLS): also not a bearer token.
    let mut c = f.claims();
    c["cnf"] = json!({"x5t#S256": "abc"});
    assert!(invalid_token(f.bearer(&f.token(&c)).await).contains("sender-constrained"));
    c["cnf"] = json!("abc");
    assert!(invalid_token(f.bearer(&f.token(&c)).await).contains("cnf"));
}

#[tokio::test]
async fn binding_policy_per_endpoint() {
    // DPoP-only: a Bearer presentation is refused with a DPoP challenge.
    let d = Fixture::with(|c| c.with_binding(TokenBinding::DpopOnly));
    let e = d.bearer(&d.bearer_token()).await.unwrap_err();
    assert_eq!(e.error_code(), Some(ErrorCode::InvalidToken));
    let c = challenges(&e);
    assert_eq!(c.len(), 1);
    assert!(
        c[0].starts_with("DPoP error=\"invalid_token\"") && c[0].contains("algs=\""),
        "{c:?}"
    );
    let t = d.bound_token();
    assert!(d.dpop(&t, &d.proof(&t)).await.is_ok());
    // Bearer-only: DPoP is refused with a Bearer challenge; Bearer passes.
    let b = Fixture::with(|c| c.with_binding(TokenBinding::BearerOnly));
    let t = b.bound_token();
    let e = b.dpop(&t, &b.proof(&t)).await.unwrap_err();
    assert_eq!(
        challenges(&e),
        [
            "Bearer error=\"invalid_token\", error_description=\"this API accepts Bearer tokens only\""
        ]
    );
    assert!(b.bearer(&b.bearer_token()).await.is_ok());
}

#[test]
fn offline_check_for_the_cli_still_works() {
    let key = SigningKey::generate(Alg::ES256).unwrap();
    let claims = json!({"iss": ISSUER, "exp": NOW + 60, "aud": "anything"});
    let t = sign_jwt(&key, "at+jwt", &claims).unwrap();
    let expect = segl_verify::Expectations {
        issuer: ISSUER,
        now: NOW,
        skew: 10,
    };
    let got = segl_verify::verify_access_token(&t, &jwks(&[&key]), &expect).unwrap();
    assert_eq!(got["aud"], "anything");
    let late = segl_verify::Expectations {
        now: NOW + 70,
        ..expect.clone()
    };
    assert!(
        segl_verify::verify_access_token(&t, &jwks(&[&key]), &late)
            .unwrap_err()
            .to_string()
            .contains("expired")
    );
    let other = segl_verify::Expectations {
        issuer: "https://other",
        ..expect
    };
    assert!(segl_verify::verify_access_token(&t, &jwks(&[&key]), &other).is_err());
}
