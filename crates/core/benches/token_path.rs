//! The parts of a client_credentials request with private_key_jwt and DPoP, one at a time, as
//! the token endpoint runs them: parse the form, read the grant, verify the client assertion
//! (parse + signature + claims), check the DPoP proof, build the access token's claims, and sign
//! them. The store's part (the group commit of the `jti`s and the audit event) is
//! `cargo bench -p segl-store --bench commit`, and the whole request end to end is `bench/`;
//! the signature checks alone are the crypto ceiling `segl-load` prints.
//!
//! `cargo bench -p segl-core --bench token_path`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use divan::{Bencher, black_box};
use segl_core::client_auth::{ClientAuthParams, Endpoint, verify_assertion};
use segl_core::form::Form;
use segl_core::grant::{self, TokenRequest};
use segl_core::organization;
use segl_core::{Client, Policy, Profile, Registry, Tenancy, UnixTime};
use segl_jose::dpop::{self, NoncePolicy, ProofRequirements};
use segl_jose::{Alg, SigningKey, sign_jwt};
use serde_json::json;
use std::sync::OnceLock;

const ISSUER: &str = "https://segl.bench";
const TOKEN_ENDPOINT: &str = "https://segl.bench/connect/token";
const CLIENT_ID: &str = "bench-client";
const NOW: i64 = 1_800_000_000;

struct World {
    client_key: SigningKey,
    proof_key: SigningKey,
    es256: SigningKey,
    rs256: SigningKey,
    registry: Registry,
    policy: Policy,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let client_key = SigningKey::generate(Alg::ES256).unwrap();
        let client = Client::new(
            CLIENT_ID.into(),
            "Bench client".into(),
            "999977774".into(),
            vec![],
            ["client_credentials".to_owned()].into(),
            ["bench:api/read".to_owned()].into(),
            Tenancy::Single,
            true,
            &[client_key.public_jwk().clone()],
            &Alg::ALL,
        )
        .unwrap();
        let api = segl_core::Api {
            audience: "bench:api".into(),
            scopes: vec!["bench:api/read".into()],
        };
        World {
            client_key,
            proof_key: SigningKey::generate(Alg::ES256).unwrap(),
            es256: SigningKey::generate(Alg::ES256).unwrap(),
            rs256: SigningKey::generate(Alg::RS256).unwrap(),
            registry: Registry::new(vec![api], vec![client]).unwrap(),
            policy: Policy {
                issuer: ISSUER.into(),
                token_endpoint: TOKEN_ENDPOINT.into(),
                profile: Profile::HelseId,
                access_token_lifetime: 600,
            },
        }
    })
}

fn assertion() -> String {
    let w = world();
    let claims = json!({"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": ISSUER,
        "jti": "5b1c0d36-3a8e-4f6b-9d0e-2f5c1a7b8e90", "iat": NOW, "nbf": NOW, "exp": NOW + 60});
    sign_jwt(&w.client_key, "client-authentication+jwt", &claims).unwrap()
}

fn body(assertion: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", CLIENT_ID)
        .append_pair(
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        )
        .append_pair("client_assertion", assertion)
        .append_pair("scope", "bench:api/read")
        .finish()
}

fn params(assertion: &str) -> ClientAuthParams {
    ClientAuthParams {
        client_id: Some(CLIENT_ID.into()),
        client_assertion: Some(assertion.into()),
        client_assertion_type: Some(
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
        ),
        client_secret_present: false,
        authorization_header_present: false,
    }
}

fn proof_requirements() -> ProofRequirements<'static> {
    static ACCEPT: fn(&str) -> bool = |_| true;
    ProofRequirements {
        method: "POST",
        url: TOKEN_ENDPOINT,
        now: NOW,
        max_age: 60,
        algs: &[Alg::ES256, Alg::PS256, Alg::RS256, Alg::EdDSA],
        access_token: None,
        nonce: NoncePolicy::Required(&ACCEPT),
    }
}

fn main() {
    divan::main();
}

/// `application/x-www-form-urlencoded` → parameters (duplicates refused).
#[divan::bench]
fn form_parse(b: Bencher) {
    let body = body(&assertion());
    b.bench(|| Form::parse(black_box(body.as_bytes())).unwrap());
}

/// The grant and its parameters from the parsed form.
#[divan::bench]
fn token_request(b: Bencher) {
    let body = body(&assertion());
    b.with_inputs(|| Form::parse(body.as_bytes()).unwrap())
        .bench_local_values(|mut form| TokenRequest::from_form(&mut form).unwrap());
}

/// The client assertion: parse, ES256 signature, header and claim checks.
#[divan::bench]
fn assertion_verify(b: Bencher) {
    let w = world();
    let p = params(&assertion());
    let now = UnixTime(NOW);
    b.bench(|| verify_assertion(&p, &w.registry, &w.policy, Endpoint::Token, now).unwrap());
}

/// The DPoP proof: every stateless RFC 9449 §4.3 check, ES256 signature included.
#[divan::bench]
fn proof_check(b: Bencher) {
    let w = world();
    let proof =
        dpop::create_proof(&w.proof_key, "POST", TOKEN_ENDPOINT, NOW, Some("n"), None).unwrap();
    let req = proof_requirements();
    b.bench(|| dpop::check_proof(black_box(&proof), &req).unwrap());
}

/// The access token's claims, from the accepted client, its proof and its organization.
#[divan::bench]
fn claims_build(b: Bencher) {
    let w = world();
    let p = params(&assertion());
    let proof =
        dpop::create_proof(&w.proof_key, "POST", TOKEN_ENDPOINT, NOW, Some("n"), None).unwrap();
    let req = proof_requirements();
    let mut form = Form::parse(body(&assertion()).as_bytes()).unwrap();
    let TokenRequest::ClientCredentials(request) = TokenRequest::from_form(&mut form).unwrap()
    else {
        panic!("client_credentials");
    };
    b.with_inputs(|| {
        let verified =
            verify_assertion(&p, &w.registry, &w.policy, Endpoint::Token, UnixTime(NOW)).unwrap();
        let checked = dpop::check_proof(&proof, &req).unwrap();
        (
            verified.accept(true).unwrap(),
            checked.accept(true).unwrap(),
        )
    })
    .bench_local_refs(|(client, dpop)| {
        let org = organization::select(client.client(), None, &|_, _| false).unwrap();
        grant::client_credentials(
            client,
            &request,
            &w.registry,
            &w.policy,
            UnixTime(NOW),
            "0123456789ABCDEF0123456789ABCDEF".into(),
            Some(dpop),
            &org,
        )
        .unwrap()
    });
}

/// Signing the access token, by the token-signing algorithm.
#[divan::bench(args = ["ES256", "RS256"])]
fn sign(b: Bencher, alg: &str) {
    let w = world();
    let key = if alg == "ES256" { &w.es256 } else { &w.rs256 };
    let claims = json!({"iss": ISSUER, "aud": "bench:api", "client_id": CLIENT_ID,
        "sub": CLIENT_ID, "iat": NOW, "nbf": NOW, "exp": NOW + 600,
        "jti": "0123456789ABCDEF0123456789ABCDEF", "scope": ["bench:api/read"],
        "client_amr": "private_key_jwt", "helseid://claims/client/claims/orgnr_parent": "999977774",
        "cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}});
    b.bench(|| sign_jwt(key, "at+jwt", black_box(&claims)).unwrap());
}
