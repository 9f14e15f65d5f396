//! What the fuzz targets run, one function per target, shared with the corpus replay test
//! (`crates/core/tests/fuzz_corpus.rs` includes this file), so that every file under
//! `fuzz/corpus/` and `fuzz/regressions/` also runs in `cargo test` on a stable toolchain.
//!
//! Every function takes arbitrary bytes, must not panic, and checks invariants on what it
//! gets back: a panic here is a finding. Each returns whether the input was accepted all the
//! way (a verified JWT, a checked proof, an authenticated client, a parsed token request…),
//! which the replay test uses to prove that the seed corpora hold real, valid inputs.
//!
//! The fixed world: two signing keys (ES256 and Ed25519, below), one registered client
//! [`CLIENT_ID`] owning both, the issuer [`ISSUER`], and the time [`NOW`].

// Test-harness code: a failed invariant must panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use segl_core::client_auth::{ClientAuthParams, Endpoint, verify_assertion};
use segl_core::form::{Form, MAX_PARAMS};
use segl_core::grant::TokenRequest;
use segl_core::organization;
use segl_core::{Client, OAuthError, Policy, Profile, Registry, Tenancy, UnixTime};
use segl_jose::dpop::{self, DpopError, NoncePolicy, ProofRequirements};
use segl_jose::{
    Alg, Error as JoseError, JsonObject, SigningKey, UnverifiedJws, VerifyingKey, b64_decode,
    b64_encode, parse_object, sign_jwt,
};
use segl_proto::ErrorCode;
use serde_json::{Value, json};
use std::sync::OnceLock;

/// Whether an input got all the way through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Parsed, verified, checked: the happy path ran to its end.
    Accepted,
    /// Refused somewhere (with an error that passed the invariants).
    Rejected,
}

/// The fixed time of every check (unix seconds).
pub const NOW: i64 = 1_800_000_000;
/// The issuer.
pub const ISSUER: &str = "https://segl.test";
/// The token endpoint.
pub const TOKEN_ENDPOINT: &str = "https://segl.test/connect/token";
/// The one registered client.
pub const CLIENT_ID: &str = "fuzz-client";
/// Its organization; [`CHILD_ORG`] is its one registered child organization.
pub const CLIENT_ORG: &str = "999977774";
/// The child organization registered for the single-tenant client.
pub const CHILD_ORG: &str = "999977776";
/// The supplier of the multi-tenant client; [`DELEGATING_ORG`] delegated to it.
pub const SUPPLIER_ORG: &str = "999977772";
/// The one customer that delegated to [`SUPPLIER_ORG`].
pub const DELEGATING_ORG: &str = "999977775";
/// The resource URL and access token of the resource-server DPoP check.
pub const RESOURCE_URL: &str = "https://api.segl.test/records?id=1";
/// The access token presented with resource-server proofs.
pub const ACCESS_TOKEN: &str = "fuzz-access-token";
/// The only nonce the resource-server check accepts.
pub const NONCE: &str = "fuzz-nonce";

/// A fixed P-256 key (test material only).
const ES256_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgOkub3bBlxYN8Er1x
ZfUYt64uvPZuZ+Iyr6atV/PC5syhRANCAAS0ADG7J5/oN8ETIhFdKzIXl32iwVOo
j26RrYtC56nXLC11FEJaMkxRjgXzL9g067jcPviRATM4kfa0FfxkQ0pw
-----END PRIVATE KEY-----";
/// A fixed Ed25519 key (test material only).
const ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIO8EFbs8FvIGpPNSa7qj545r08ib11Q+crgGbSky1oVN
-----END PRIVATE KEY-----";

/// The fixed keys and the registries built from them.
pub struct World {
    /// The ES256 signing key.
    pub es256: SigningKey,
    /// The Ed25519 signing key (deterministic signatures).
    pub ed25519: SigningKey,
    /// Their verifying keys.
    pub verifying: Vec<VerifyingKey>,
    /// A registry with the single-tenant client.
    pub single: Registry,
    /// A registry with the same client as a multi-tenant client.
    pub multi: Registry,
}

/// The fixed world, built once.
pub fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let es256 = SigningKey::from_pkcs8_pem(Alg::ES256, ES256_PEM).unwrap();
        let ed25519 = SigningKey::from_pkcs8_pem(Alg::EdDSA, ED25519_PEM).unwrap();
        let verifying = vec![
            es256.verifying_key().unwrap(),
            ed25519.verifying_key().unwrap(),
        ];
        let jwks = [es256.public_jwk().clone(), ed25519.public_jwk().clone()];
        let client = |tenancy: Tenancy| {
            Client::new(
                CLIENT_ID.into(),
                "Fuzz Client".into(),
                CLIENT_ORG.into(),
                vec![CHILD_ORG.into()],
                ["client_credentials".to_owned()].into(),
                ["api:x/read".to_owned()].into(),
                tenancy,
                false,
                &jwks,
                &Alg::ALL,
            )
            .unwrap()
        };
        World {
            single: Registry::new(vec![], vec![client(Tenancy::Single)]).unwrap(),
            multi: Registry::new(
                vec![],
                vec![client(Tenancy::Multi {
                    supplier: SUPPLIER_ORG.into(),
                })],
            )
            .unwrap(),
            es256,
            ed25519,
            verifying,
        }
    })
}

fn policy(profile: Profile) -> Policy {
    Policy {
        issuer: ISSUER.into(),
        token_endpoint: TOKEN_ENDPOINT.into(),
        profile,
        access_token_lifetime: 600,
    }
}

/// An `error_description` must be printable ASCII without `"` and `\` (RFC 6749 §5.2).
fn assert_wire_safe(e: &OAuthError) {
    assert!(
        e.description
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'),
        "error_description not wire-safe: {:?}",
        e.description
    );
}

/// Signs `claims` with `key` under a header `{alg, typ, kid}`, or `{typ, alg, jwk}` when
/// `embed_jwk` (a DPoP proof's header).
pub fn sign_with_header(
    key: &SigningKey,
    typ: &str,
    claims: &JsonObject,
    embed_jwk: bool,
) -> String {
    if !embed_jwk {
        return sign_jwt(key, typ, claims).unwrap();
    }
    let header = json!({"typ": typ, "alg": key.alg().name(), "jwk": key.public_jwk().to_public_without_meta()});
    let input = format!(
        "{}.{}",
        b64_encode(header.to_string()),
        b64_encode(serde_json::to_vec(claims).unwrap())
    );
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64_encode(sig))
}

// ---------------------------------------------------------------------------------------------
// jws: UnverifiedJws::parse, header and claims access, verification with the fixed keys.

/// The JWS/JWT parser. The input is a compact JWS; when it is instead a JSON object, that
/// object is signed as claims with each fixed key and must come back unchanged.
pub fn jws(data: &[u8]) -> Outcome {
    let mut outcome = Outcome::Rejected;
    if let Ok(claims) = parse_object(data) {
        let w = world();
        for key in [&w.ed25519, &w.es256] {
            let jwt = sign_jwt(key, "JWT", &claims).unwrap();
            let parsed = UnverifiedJws::parse(&jwt);
            if jwt.len() > segl_jose::MAX_JWS_LEN {
                assert_eq!(parsed.unwrap_err(), JoseError::TooLarge);
                continue;
            }
            let parsed = parsed.unwrap_or_else(|e| panic!("own JWT does not parse: {e}"));
            assert_eq!(parsed.unverified_claims(), &claims);
            let verified = parsed.verify(&key.verifying_key().unwrap()).unwrap();
            assert_eq!(verified.claims(), &claims);
            assert_eq!(verified.header()["kid"], key.kid());
            outcome = Outcome::Accepted;
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return outcome;
    };
    if compact_jws(text) == Outcome::Accepted {
        outcome = Outcome::Accepted;
    }
    outcome
}

fn compact_jws(text: &str) -> Outcome {
    let jws = match UnverifiedJws::parse(text) {
        Ok(jws) => jws,
        Err(e) => {
            let _ = e.to_string();
            return Outcome::Rejected;
        }
    };
    assert!(text.len() <= segl_jose::MAX_JWS_LEN);
    assert_eq!(text.split('.').count(), 3);
    let alg = jws.alg();
    assert_eq!(alg.name().parse::<Alg>().unwrap(), alg);
    assert_eq!(jws.unverified_header_str("alg"), Some(alg.name()));
    assert!(!jws.unverified_header().contains_key("crit"));
    for name in ["typ", "kid", "cty"] {
        assert_eq!(
            jws.unverified_header_str(name),
            jws.unverified_header().get(name).and_then(Value::as_str)
        );
    }
    let header = jws.unverified_header().clone();
    let claims = jws.unverified_claims().clone();
    let w = world();
    // `verify` with each key must agree with `verify_any` over both.
    let mut single_ok = false;
    for key in &w.verifying {
        let again = UnverifiedJws::parse(text).unwrap();
        match again.verify(key) {
            Ok(v) => {
                single_ok = true;
                assert_eq!(v.alg(), alg);
                assert_eq!(v.header(), &header);
                assert_eq!(v.claims(), &claims);
            }
            Err(e) => assert!(matches!(
                e,
                JoseError::NoMatchingKey | JoseError::BadSignature
            )),
        }
    }
    match jws.verify_any(&w.verifying) {
        Ok(v) => {
            assert!(single_ok, "verify_any accepted what no single verify did");
            assert_eq!(v.into_claims(), claims);
            Outcome::Accepted
        }
        Err(e) => {
            assert!(
                !single_ok,
                "verify_any refused what a single verify accepted"
            );
            assert!(matches!(
                e,
                JoseError::NoMatchingKey | JoseError::BadSignature
            ));
            Outcome::Rejected
        }
    }
}

// ---------------------------------------------------------------------------------------------
// dpop: check_proof against fixed requirements (token endpoint; resource server with ath and
// a required nonce).

fn nonce_ok(n: &str) -> bool {
    n == NONCE
}

fn token_requirements() -> ProofRequirements<'static> {
    ProofRequirements {
        method: "POST",
        url: TOKEN_ENDPOINT,
        now: NOW,
        max_age: 60,
        algs: &Alg::ALL,
        access_token: None,
        nonce: NoncePolicy::Off,
    }
}

fn resource_requirements() -> ProofRequirements<'static> {
    static NONCE_OK: fn(&str) -> bool = nonce_ok;
    ProofRequirements {
        method: "GET",
        url: RESOURCE_URL,
        now: NOW,
        max_age: 60,
        algs: &[Alg::ES256, Alg::EdDSA],
        access_token: Some(ACCESS_TOKEN),
        nonce: NoncePolicy::Required(&NONCE_OK),
    }
}

/// The DPoP proof check. The input is the `DPoP` header value; when it is instead a JSON
/// object, that object is signed as the claims of a proof with the Ed25519 key (its public
/// JWK in the header) and checked too.
pub fn dpop(data: &[u8]) -> Outcome {
    let mut outcome = Outcome::Rejected;
    if let Ok(claims) = parse_object(data) {
        let proof = sign_with_header(&world().ed25519, dpop::DPOP_TYP, &claims, true);
        if proof_checks(&proof) == Outcome::Accepted {
            outcome = Outcome::Accepted;
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return outcome;
    };
    if let Some(n) = dpop::normalize_htu(text) {
        assert_eq!(
            dpop::normalize_htu(&n).as_deref(),
            Some(n.as_str()),
            "htu normalisation is not idempotent"
        );
    }
    if proof_checks(text) == Outcome::Accepted {
        outcome = Outcome::Accepted;
    }
    outcome
}

fn proof_checks(proof: &str) -> Outcome {
    let mut outcome = Outcome::Rejected;
    for req in [token_requirements(), resource_requirements()] {
        match dpop::check_proof(proof, &req) {
            Ok(checked) => {
                let jkt = checked.jkt().to_owned();
                assert_eq!(b64_decode(&jkt).unwrap().len(), 32);
                let key = checked.replay_key();
                let again = dpop::check_proof(proof, &req).unwrap();
                assert_eq!(again.jkt(), jkt);
                assert_eq!(again.replay_key(), key);
                let until = checked.remember_until(req.max_age);
                assert!(until >= NOW && until <= NOW + 2 * req.max_age);
                assert!(again.accept(false).is_err());
                assert_eq!(checked.accept(true).unwrap().jkt(), jkt);
                outcome = Outcome::Accepted;
            }
            Err(DpopError::Invalid(text) | DpopError::UseNonce(text)) => {
                assert!(!text.is_empty());
            }
        }
    }
    outcome
}

// ---------------------------------------------------------------------------------------------
// client_assertion: verify_assertion with the one-client registry at the fixed time.

fn params(assertion: &str) -> ClientAuthParams {
    ClientAuthParams {
        client_id: None,
        client_assertion: Some(assertion.to_owned()),
        client_assertion_type: Some(segl_proto::CLIENT_ASSERTION_TYPE_JWT_BEARER.into()),
        client_secret_present: false,
        authorization_header_present: false,
    }
}

/// The client-assertion checks. The input is the `client_assertion` value; when it is instead
/// a JSON object, that object is signed as the assertion's claims with the Ed25519 key and
/// checked too (so the claim checks see arbitrary claims behind a valid signature).
pub fn client_assertion(data: &[u8]) -> Outcome {
    let mut outcome = Outcome::Rejected;
    if let Ok(claims) = parse_object(data) {
        let jwt = sign_with_header(
            &world().ed25519,
            "client-authentication+jwt",
            &claims,
            false,
        );
        if assertion_checks(&params(&jwt)) == Outcome::Accepted {
            outcome = Outcome::Accepted;
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return outcome;
    };
    if assertion_checks(&params(text)) == Outcome::Accepted {
        outcome = Outcome::Accepted;
    }
    outcome
}

fn assertion_checks(params: &ClientAuthParams) -> Outcome {
    let w = world();
    let mut outcome = Outcome::Rejected;
    for profile in [Profile::HelseId, Profile::Fapi2] {
        for endpoint in [Endpoint::Token, Endpoint::Other] {
            for registry in [&w.single, &w.multi] {
                let pol = policy(profile);
                match verify_assertion(params, registry, &pol, endpoint, UnixTime(NOW)) {
                    Ok(v) => {
                        assert_eq!(v.client_id(), CLIENT_ID);
                        let until = v.remember_until().secs();
                        // exp is after now - skew and at most iat + 60 with iat <= now + skew.
                        assert!(until > NOW && until <= NOW + 10 + 60 + 10, "{until}");
                        let again =
                            verify_assertion(params, registry, &pol, endpoint, UnixTime(NOW))
                                .unwrap();
                        assert_eq!(again.replay_key(), v.replay_key());
                        let refused = again.accept(false).unwrap_err();
                        assert_eq!(refused.code, ErrorCode::InvalidClient);
                        let client = v.accept(true).unwrap();
                        assert_eq!(client.client().client_id, CLIENT_ID);
                        let _ = select_organization(client.client(), client.assertion_claims());
                        outcome = Outcome::Accepted;
                    }
                    Err(e) => {
                        assert_eq!(e.code, ErrorCode::InvalidClient);
                        assert_wire_safe(&e);
                    }
                }
            }
        }
    }
    outcome
}

// ---------------------------------------------------------------------------------------------
// token_form: Form::parse, client-authentication parameters, grant dispatch, and (when the
// form carries one) the client assertion.

/// The token-request form parser and the grant dispatch that follows it at the token endpoint.
pub fn token_form(data: &[u8]) -> Outcome {
    let mut form = match Form::parse(data) {
        Ok(form) => form,
        Err(e) => {
            assert_eq!(e.code, ErrorCode::InvalidRequest);
            assert_wire_safe(&e);
            return Outcome::Rejected;
        }
    };
    let pairs = data.split(|b| *b == b'&').filter(|p| !p.is_empty()).count();
    assert!(pairs <= MAX_PARAMS);
    assert_eq!(
        Form::parse(data).unwrap(),
        form,
        "parsing is not deterministic"
    );
    let grant_type = form.get("grant_type").map(str::to_owned);
    if let Some(g) = &grant_type {
        assert!(!g.is_empty(), "an empty value must count as absent");
    }
    // As the token endpoint does: client authentication first, then the grant.
    let auth = ClientAuthParams {
        client_id: form.take("client_id"),
        client_assertion: form.take("client_assertion"),
        client_assertion_type: form.take("client_assertion_type"),
        client_secret_present: form.take("client_secret").is_some(),
        authorization_header_present: false,
    };
    let request = match TokenRequest::from_form(&mut form) {
        Ok(r) => r,
        Err(e) => {
            assert!(matches!(
                e.code,
                ErrorCode::InvalidRequest | ErrorCode::UnsupportedGrantType
            ));
            assert_wire_safe(&e);
            return Outcome::Rejected;
        }
    };
    assert!(
        form.get("grant_type").is_none(),
        "grant_type was not consumed"
    );
    let expected = match &request {
        TokenRequest::ClientCredentials(_) => segl_proto::grant::CLIENT_CREDENTIALS,
        TokenRequest::AuthorizationCode(c) => {
            assert!(!c.code.is_empty());
            segl_proto::grant::AUTHORIZATION_CODE
        }
        TokenRequest::RefreshToken(r) => {
            assert!(!r.refresh_token.is_empty());
            segl_proto::grant::REFRESH_TOKEN
        }
        TokenRequest::TokenExchange(x) => {
            assert!(!x.subject_token.is_empty());
            segl_proto::grant::TOKEN_EXCHANGE
        }
    };
    assert_eq!(grant_type.as_deref(), Some(expected));
    if auth.client_assertion.is_none() {
        return Outcome::Accepted;
    }
    let w = world();
    match verify_assertion(
        &auth,
        &w.single,
        &policy(Profile::HelseId),
        Endpoint::Token,
        UnixTime(NOW),
    ) {
        Ok(v) => {
            assert!(
                auth.client_id
                    .as_deref()
                    .is_none_or(|id| id == v.client_id())
            );
            Outcome::Accepted
        }
        Err(e) => {
            assert_eq!(e.code, ErrorCode::InvalidClient);
            assert_wire_safe(&e);
            Outcome::Rejected
        }
    }
}

// ---------------------------------------------------------------------------------------------
// org_details: assertion_details / authorization_details, for a single- and a multi-tenant
// client.

fn delegated(from: &str, to: &str) -> bool {
    from == DELEGATING_ORG && to == SUPPLIER_ORG
}

fn is_orgnr(s: &str) -> bool {
    s.len() == 9 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Runs the organization selection for `client` on `claims`; checks what it returns.
fn select_organization(client: &Client, claims: &JsonObject) -> Outcome {
    let details = match organization::from_assertion(claims) {
        Ok(d) => d,
        Err(e) => {
            assert!(claims.contains_key("assertion_details"));
            assert!(claims.contains_key("authorization_details"));
            assert_eq!(e.code, ErrorCode::InvalidRequest);
            return Outcome::Rejected;
        }
    };
    match organization::select(client, details, &delegated) {
        Ok(sel) => {
            assert!(is_orgnr(&sel.parent), "parent {:?}", sel.parent);
            if let Some(child) = &sel.child {
                assert!(is_orgnr(child), "child {child:?}");
            }
            if let Some(j) = &sel.journal_id {
                assert_eq!(j.len(), 36);
            }
            match &client.tenancy {
                Tenancy::Single => {
                    assert_eq!(sel.parent, client.organization);
                    assert!(sel.supplier.is_none());
                    if let Some(child) = &sel.child {
                        assert!(client.child_organizations.contains(child));
                    }
                }
                Tenancy::Multi { supplier } => {
                    assert_eq!(sel.supplier.as_deref(), Some(supplier.as_str()));
                    assert!(
                        sel.parent == client.organization
                            || sel.parent == *supplier
                            || delegated(&sel.parent, supplier),
                        "parent {} neither own, supplier nor delegating",
                        sel.parent
                    );
                }
            }
            Outcome::Accepted
        }
        Err(e) => {
            assert_eq!(e.code, ErrorCode::InvalidRequest);
            assert_wire_safe(&e);
            Outcome::Rejected
        }
    }
}

/// The `assertion_details` / `authorization_details` parser. The input is a claims set (JSON);
/// when it has neither member it is also tried as the value of `assertion_details`.
pub fn org_details(data: &[u8]) -> Outcome {
    let Ok(claims) = parse_object(data) else {
        return Outcome::Rejected;
    };
    let w = world();
    let clients: Vec<_> = [&w.single, &w.multi]
        .into_iter()
        .map(|r| r.client(CLIENT_ID).unwrap().clone())
        .collect();
    let mut outcome = Outcome::Rejected;
    let mut sets = vec![claims.clone()];
    if !claims.contains_key("assertion_details") && !claims.contains_key("authorization_details") {
        let mut wrapped = JsonObject::new();
        wrapped.insert("assertion_details".into(), Value::Object(claims));
        sets.push(wrapped);
    }
    for set in &sets {
        for client in &clients {
            if select_organization(client, set) == Outcome::Accepted {
                outcome = Outcome::Accepted;
            }
        }
    }
    outcome
}

// ---------------------------------------------------------------------------------------------
// strict_json: parse_object against serde_json.

fn has_key(v: &Value, name: &str) -> bool {
    match v {
        Value::Object(m) => m.contains_key(name) || m.values().any(|v| has_key(v, name)),
        Value::Array(a) => a.iter().any(|v| has_key(v, name)),
        _ => false,
    }
}

/// The strict JSON parser, differentially against serde_json: whatever it accepts serde_json
/// reads the same; what it refuses that serde_json takes as an object is a duplicate member
/// (named correctly) or too deep a nesting.
pub fn strict_json(data: &[u8]) -> Outcome {
    let strict = parse_object(data);
    let loose = serde_json::from_slice::<Value>(data);
    match (strict, loose) {
        (Ok(obj), Ok(v)) => {
            assert_eq!(Value::Object(obj), v, "strict and serde_json disagree");
            Outcome::Accepted
        }
        (Ok(obj), Err(e)) => panic!("strict accepted what serde_json refuses ({e}): {obj:?}"),
        (Err(JoseError::DuplicateMember(name)), Ok(v)) => {
            assert!(
                has_key(&v, &name),
                "duplicate member {name:?} is not a member name"
            );
            Outcome::Rejected
        }
        (Err(JoseError::Malformed("JSON nested too deep")), Ok(_)) => Outcome::Rejected,
        (Err(e), Ok(Value::Object(_))) => panic!("strict refused an object serde_json reads: {e}"),
        (Err(_), _) => Outcome::Rejected,
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds.

/// Valid inputs for each target: `(target, file name, bytes)`. Written to `fuzz/corpus/` by
/// `cargo run --example seeds`; the replay test checks that the checked-in ones still pass.
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let w = world();
    let obj = |v: Value| v.as_object().unwrap().clone();
    let mut out = Vec::new();

    let claims = obj(
        json!({"iss": ISSUER, "sub": "someone", "aud": "api:x", "iat": NOW, "exp": NOW + 300, "scope": ["api:x/read"], "nested": {"a": [1, 2.5, null, true]}}),
    );
    out.push((
        "jws",
        "es256.jwt",
        sign_jwt(&w.es256, "at+jwt", &claims).unwrap().into_bytes(),
    ));
    out.push((
        "jws",
        "eddsa.jwt",
        sign_jwt(&w.ed25519, "JWT", &claims).unwrap().into_bytes(),
    ));
    out.push(("jws", "claims.json", serde_json::to_vec(&claims).unwrap()));

    let proof = dpop::create_proof(&w.es256, "POST", TOKEN_ENDPOINT, NOW, None, None).unwrap();
    out.push(("dpop", "token.jwt", proof.into_bytes()));
    let proof = dpop::create_proof(
        &w.ed25519,
        "GET",
        RESOURCE_URL,
        NOW - 30,
        Some(NONCE),
        Some(ACCESS_TOKEN),
    )
    .unwrap();
    out.push(("dpop", "resource.jwt", proof.into_bytes()));
    let proof_claims = json!({"jti": "j-1", "htm": "POST", "htu": TOKEN_ENDPOINT, "iat": NOW});
    out.push((
        "dpop",
        "claims.json",
        serde_json::to_vec(&proof_claims).unwrap(),
    ));

    let assertion_claims = json!({"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": ISSUER, "iat": NOW, "nbf": NOW, "exp": NOW + 30, "jti": "a-1"});
    let assertion = sign_jwt(&w.es256, "client-authentication+jwt", &assertion_claims).unwrap();
    out.push((
        "client_assertion",
        "es256.jwt",
        assertion.clone().into_bytes(),
    ));
    let with_details = json!({"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": TOKEN_ENDPOINT, "iat": NOW.to_string(), "exp": NOW + 60, "jti": "a-2",
        "assertion_details": [{"type": "helseid_authorization", "practitioner_role": {"organization": {"identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.101", "type": "ENH", "value": CHILD_ORG}}}}]});
    out.push((
        "client_assertion",
        "eddsa-details.jwt",
        sign_jwt(&w.ed25519, "JWT", &with_details)
            .unwrap()
            .into_bytes(),
    ));
    out.push((
        "client_assertion",
        "claims.json",
        serde_json::to_vec(&assertion_claims).unwrap(),
    ));

    let mut body = format!(
        "grant_type=client_credentials&scope=api%3Ax%2Fread+api%3Ax%2Fwrite&resource=api%3Ax&client_assertion_type={}&client_assertion={assertion}",
        segl_proto::CLIENT_ASSERTION_TYPE_JWT_BEARER.replace(':', "%3A")
    );
    out.push((
        "token_form",
        "client_credentials.txt",
        body.clone().into_bytes(),
    ));
    body = "grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2Fapp.test%2Fcb&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into();
    out.push(("token_form", "authorization_code.txt", body.into_bytes()));
    body = "grant_type=refresh_token&refresh_token=r1&scope=openid".into();
    out.push(("token_form", "refresh_token.txt", body.into_bytes()));
    body = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=t&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&audience=a&audience=b".into();
    out.push(("token_form", "token_exchange.txt", body.into_bytes()));

    let single = json!({"assertion_details": [{"type": "helseid_authorization", "practitioner_role": {"organization": {"identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.101", "type": "ENH", "value": CHILD_ORG}}}},
        {"type": "nhn:sfm:journal-id", "value": {"journal_id": "6f9619ff-8b86-d011-b42d-00cf4fc964ff"}}]});
    out.push((
        "org_details",
        "single.json",
        serde_json::to_vec(&single).unwrap(),
    ));
    let multi = json!({"authorization_details": {"type": "helseid_authorization", "practitioner_role": {"organization": {"identifier": {"system": "urn:oid:1.0.6523", "type": "ENH", "value": format!("NO:ORGNR:{DELEGATING_ORG}:{CHILD_ORG}")}}}}});
    out.push((
        "org_details",
        "multi.json",
        serde_json::to_vec(&multi).unwrap(),
    ));

    out.push(("strict_json", "header.json", br#"{"typ":"dpop\u002Bjwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs","y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"}}"#.to_vec()));
    out.push(("strict_json", "numbers.json", br#"{"a":-0,"b":1e300,"c":18446744073709551615,"d":-9223372036854775808,"e":[0.5,"\ud83d\ude00"],"f":{"g":null}}"#.to_vec()));
    out
}
