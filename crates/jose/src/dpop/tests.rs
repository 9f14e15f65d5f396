//! RFC 9449 example vectors, and each §4.3 check next to its near-miss twin.

use super::*;
use crate::sign_jwt;

/// RFC 9449 Figure 2 (token request).
const RFC_TOKEN_PROOF: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg";
/// RFC 9449 Figure 13 (protected resource request, with `ath`).
const RFC_RESOURCE_PROOF: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA";
const RFC_ACCESS_TOKEN: &str = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
const RFC_JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";

fn req<'a>(method: &'a str, url: &'a str, now: i64) -> ProofRequirements<'a> {
    ProofRequirements {
        method,
        url,
        now,
        max_age: 60,
        algs: &Alg::ALL,
        access_token: None,
        nonce: NoncePolicy::Off,
    }
}

#[test]
fn rfc9449_figure_2_verifies_with_its_thumbprint() {
    let p = check_proof(
        RFC_TOKEN_PROOF,
        &req("POST", "https://server.example.com/token", 1_562_262_616),
    )
    .unwrap();
    assert_eq!(p.jkt(), RFC_JKT);
    // Figure 2's htu matches after normalisation: case, default port, query.
    assert!(
        check_proof(
            RFC_TOKEN_PROOF,
            &req(
                "POST",
                "HTTPS://Server.Example.COM:443/token?x=1#f",
                1_562_262_616
            )
        )
        .is_ok()
    );
    assert!(
        check_proof(
            RFC_TOKEN_PROOF,
            &req("GET", "https://server.example.com/token", 1_562_262_616)
        )
        .is_err()
    );
    assert!(
        check_proof(
            RFC_TOKEN_PROOF,
            &req("POST", "https://server.example.com/token/", 1_562_262_616)
        )
        .is_err()
    );
    assert!(
        check_proof(
            RFC_TOKEN_PROOF,
            &req(
                "POST",
                "https://server.example.com:8443/token",
                1_562_262_616
            )
        )
        .is_err()
    );
    assert!(
        check_proof(
            RFC_TOKEN_PROOF,
            &req("POST", "http://server.example.com/token", 1_562_262_616)
        )
        .is_err()
    );
    // iat window, both directions.
    assert!(
        check_proof(
            RFC_TOKEN_PROOF,
            &req(
                "POST",
                "https://server.example.com/token",
                1_562_262_616 + 61
            )
        )
        .is_err()
    );
    assert!(
        check_proof(
            RFC_TOKEN_PROOF,
            &req(
                "POST",
                "https://server.example.com/token",
                1_562_262_616 - 61
            )
        )
        .is_err()
    );
    assert!(
        check_proof(
            RFC_TOKEN_PROOF,
            &req(
                "POST",
                "https://server.example.com/token",
                1_562_262_616 + 60
            )
        )
        .is_ok()
    );
}

#[test]
fn rfc9449_figure_13_checks_ath() {
    let mut r = req(
        "GET",
        "https://resource.example.org/protectedresource",
        1_562_262_618,
    );
    r.access_token = Some(RFC_ACCESS_TOKEN);
    assert_eq!(check_proof(RFC_RESOURCE_PROOF, &r).unwrap().jkt(), RFC_JKT);
    r.access_token = Some("another-token");
    assert!(check_proof(RFC_RESOURCE_PROOF, &r).is_err());
}

fn proof_with(header: serde_json::Value, claims: serde_json::Value, key: &SigningKey) -> String {
    let input = format!(
        "{}.{}",
        b64::encode(header.to_string()),
        b64::encode(claims.to_string())
    );
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64::encode(sig))
}

const URL: &str = "https://segl.test/connect/token";
const NOW: i64 = 1_800_000_000;

fn base(key: &SigningKey) -> (serde_json::Value, serde_json::Value) {
    (
        json!({"typ": "dpop+jwt", "alg": key.alg().name(), "jwk": key.public_jwk().to_public_without_meta()}),
        json!({"jti": "j", "htm": "POST", "htu": URL, "iat": NOW}),
    )
}

#[test]
fn created_proofs_pass_and_each_check_rejects_its_input() {
    let key = SigningKey::generate(Alg::ES256).unwrap();
    let good = create_proof(&key, "POST", URL, NOW, None, None).unwrap();
    let checked = check_proof(&good, &req("POST", URL, NOW)).unwrap();
    assert_eq!(checked.jkt(), key.public_jwk().thumbprint().unwrap());
    assert!(checked.accept(false).is_err());

    let (h, c) = base(&key);
    let bad = |h: serde_json::Value, c: serde_json::Value| {
        check_proof(&proof_with(h, c, &key), &req("POST", URL, NOW)).unwrap_err()
    };
    let with = |v: &serde_json::Value, k: &str, x: serde_json::Value| {
        let mut v = v.clone();
        if x.is_null() {
            v.as_object_mut().unwrap().remove(k);
        } else {
            v[k] = x;
        }
        v
    };
    assert!(
        bad(with(&h, "typ", json!("JWT")), c.clone())
            .to_string()
            .contains("typ")
    );
    assert!(
        bad(with(&h, "jwk", json!(null)), c.clone())
            .to_string()
            .contains("jwk")
    );
    let mut private = key.to_private_jwk().unwrap();
    private.kid = None;
    assert!(
        bad(with(&h, "jwk", json!(private)), c.clone())
            .to_string()
            .contains("private")
    );
    for claim in ["jti", "htm", "htu", "iat"] {
        assert!(
            matches!(
                bad(h.clone(), with(&c, claim, json!(null))),
                DpopError::Invalid(_)
            ),
            "{claim}"
        );
    }
    assert!(
        bad(h.clone(), with(&c, "iat", json!(NOW.to_string())))
            .to_string()
            .contains("iat")
    );
    // The escaped typ that .NET writes is the same typ.
    let escaped = format!(
        "{}.{}",
        b64::encode(h.to_string().replace("dpop+jwt", "dpop\\u002Bjwt")),
        b64::encode(c.to_string())
    );
    let sig = key.sign(escaped.as_bytes()).unwrap();
    assert!(
        check_proof(
            &format!("{escaped}.{}", b64::encode(sig)),
            &req("POST", URL, NOW)
        )
        .is_ok()
    );
    // Signed by another key than the one in the header.
    let other = SigningKey::generate(Alg::ES256).unwrap();
    assert!(
        check_proof(
            &proof_with(h.clone(), c.clone(), &other),
            &req("POST", URL, NOW)
        )
        .unwrap_err()
        .to_string()
        .contains("signature")
    );
    // An algorithm outside the allow-list.
    let mut r = req("POST", URL, NOW);
    r.algs = &[Alg::PS256];
    assert!(check_proof(&good, &r).is_err());
    // HMAC and none never parse.
    let none = format!(
        "{}.{}.",
        b64::encode(json!({"typ":"dpop+jwt","alg":"none"}).to_string()),
        b64::encode(c.to_string())
    );
    assert!(check_proof(&none, &req("POST", URL, NOW)).is_err());
    // A JWT that is not a proof (an access token) fails on typ.
    let at = sign_jwt(&key, "at+jwt", &c).unwrap();
    assert!(check_proof(&at, &req("POST", URL, NOW)).is_err());
}

#[test]
fn nonce_policies() {
    let key = SigningKey::generate(Alg::ES256).unwrap();
    let ok = |n: &str| n == "current";
    let without = create_proof(&key, "POST", URL, NOW, None, None).unwrap();
    let current = create_proof(&key, "POST", URL, NOW, Some("current"), None).unwrap();
    let stale = create_proof(&key, "POST", URL, NOW, Some("stale"), None).unwrap();
    let mut r = req("POST", URL, NOW);
    r.nonce = NoncePolicy::Required(&ok);
    assert!(matches!(
        check_proof(&without, &r),
        Err(DpopError::UseNonce(_))
    ));
    assert!(matches!(
        check_proof(&stale, &r),
        Err(DpopError::UseNonce(_))
    ));
    assert!(check_proof(&current, &r).is_ok());
    r.nonce = NoncePolicy::Optional(&ok);
    assert!(check_proof(&without, &r).is_ok());
    assert!(matches!(
        check_proof(&stale, &r),
        Err(DpopError::UseNonce(_))
    ));
    r.nonce = NoncePolicy::Off;
    assert!(check_proof(&stale, &r).is_ok());
}

#[test]
fn proofs_from_every_algorithm_verify() {
    for alg in Alg::ALL {
        let key = SigningKey::generate(alg).unwrap();
        let p = create_proof(
            &key,
            "GET",
            "http://127.0.0.1:9000/api?q=1",
            NOW,
            None,
            Some("tok"),
        )
        .unwrap();
        let mut r = req("GET", "http://127.0.0.1:9000/api", NOW);
        r.access_token = Some("tok");
        assert!(check_proof(&p, &r).is_ok(), "{alg}");
    }
}

#[test]
fn extreme_iat_values_are_refused_without_overflow() {
    let key = SigningKey::generate(Alg::ES256).unwrap();
    for iat in [i64::MIN, i64::MAX] {
        let (h, mut c) = base(&key);
        c["iat"] = json!(iat);
        let proof = proof_with(h, c, &key);
        assert!(
            check_proof(&proof, &req("POST", URL, NOW)).is_err(),
            "{iat}"
        );
    }
}
