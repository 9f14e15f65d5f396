//! The cost of `Verifier::verify` per token next to the bare signature checks it cannot avoid,
//! so "whole verify path / bare signature checks" can be read off (aim: at most 1.3×).
//!
//! - `bearer_verify` vs `bearer_bare_signature`: header, signature and claims, against one
//!   `VerifyingKey::verify` of the token's signature with the already-parsed issuer key.
//! - `dpop_verify` vs `dpop_bare_signatures`: additionally the proof (parse, its `jwk`, `htm`,
//!   `htu`, `iat`, `ath`), the key binding and the replay cache, against the token signature
//!   plus the proof signature with an already-parsed proof key.
//!
//! Proofs are made outside the timed part (`with_inputs`), each with a fresh `jti`; the replay
//! cache is large enough to hold them all and the clock stands still.
//!
//! Run: `cargo bench -p segl-verify -j2`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use divan::Bencher;
use segl_jose::dpop::create_proof;
use segl_jose::{Alg, Jwks, SigningKey, VerifyingKey, b64_decode, sign_jwt};
use segl_verify::{ManualClock, RequestParts, VerifiedToken, Verifier, VerifierConfig};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

const ISSUER: &str = "https://segl.test";
const AUDIENCE: &str = "nhn:reseptformidleren";
const SCOPE: &str = "nhn:reseptformidleren/rf";
const URL: &str = "https://rf.test/api/caller";
const NOW: i64 = 1_800_000_000;
const ALGS: [Alg; 2] = [Alg::RS256, Alg::ES256];

fn main() {
    divan::main();
}

struct Setup {
    verifier: Verifier,
    client_key: SigningKey,
    issuer_vk: VerifyingKey,
    client_vk: VerifyingKey,
    bearer: String,
    bound: String,
}

impl Setup {
    fn new(alg: Alg) -> Setup {
        let issuer_key = SigningKey::generate(alg).unwrap();
        let client_key = SigningKey::generate(alg).unwrap();
        let config = VerifierConfig::new(AUDIENCE)
            .with_required_scopes([SCOPE])
            .with_public_base_url("https://rf.test")
            .with_replay_capacity(50_000_000)
            .with_clock(Arc::new(ManualClock::new(NOW)));
        let jwks = Jwks {
            keys: vec![issuer_key.public_jwk().clone()],
        };
        let verifier = Verifier::from_jwks(ISSUER, &jwks, config).unwrap();
        // A realistic Segl client_credentials token (HelseID profile).
        let mut claims = json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "epj-granfjelldal", "client_id": "epj-granfjelldal",
            "scope": [SCOPE], "iat": NOW, "nbf": NOW, "exp": NOW + 3600,
            "jti": "0123456789ABCDEF0123456789ABCDEF", "client_amr": "private_key_jwt",
            "helseid://claims/client/client_name": "Acme EPJ at Granfjelldal",
            "helseid://claims/client/claims/orgnr_parent": "999977774",
            "helseid://claims/client/claims/orgnr_supplier": "313745392",
            "helseid://claims/client/client_tenancy": "multi-tenant",
        });
        let bearer = sign_jwt(&issuer_key, "at+jwt", &claims).unwrap();
        claims["cnf"] = json!({"jkt": client_key.public_jwk().thumbprint().unwrap()});
        let bound = sign_jwt(&issuer_key, "at+jwt", &claims).unwrap();
        Setup {
            verifier,
            issuer_vk: issuer_key.verifying_key().unwrap(),
            client_vk: client_key.verifying_key().unwrap(),
            client_key,
            bearer,
            bound,
        }
    }

    fn proof(&self) -> String {
        create_proof(&self.client_key, "GET", URL, NOW, None, Some(&self.bound)).unwrap()
    }
}

/// Signing input and signature bytes of a compact JWS.
fn split(jws: &str) -> (Vec<u8>, Vec<u8>) {
    let dot = jws.rfind('.').unwrap();
    (
        jws.as_bytes()[..dot].to_vec(),
        b64_decode(&jws[dot + 1..]).unwrap(),
    )
}

/// Polls the verify future once: with a cached key it never waits.
fn ready(
    f: impl Future<Output = Result<VerifiedToken, segl_verify::VerifyError>>,
) -> VerifiedToken {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r.unwrap(),
        Poll::Pending => panic!("the verify path waited"),
    }
}

#[divan::bench(args = ALGS)]
fn bearer_verify(bencher: Bencher, alg: Alg) {
    let s = Setup::new(alg);
    let auth = format!("Bearer {}", s.bearer);
    let authorization = [auth.as_str()];
    bencher.bench_local(|| {
        ready(s.verifier.verify(&RequestParts {
            method: "GET",
            target: "/api/caller",
            authorization: &authorization,
            dpop: &[],
        }))
    });
}

#[divan::bench(args = ALGS)]
fn bearer_bare_signature(bencher: Bencher, alg: Alg) {
    let s = Setup::new(alg);
    let (input, sig) = split(&s.bearer);
    bencher.bench_local(|| s.issuer_vk.verify(&input, &sig).unwrap());
}

#[divan::bench(args = ALGS)]
fn dpop_verify(bencher: Bencher, alg: Alg) {
    let s = Setup::new(alg);
    let auth = format!("DPoP {}", s.bound);
    let authorization = [auth.as_str()];
    bencher.with_inputs(|| s.proof()).bench_local_refs(|proof| {
        ready(s.verifier.verify(&RequestParts {
            method: "GET",
            target: "/api/caller",
            authorization: &authorization,
            dpop: &[proof.as_str()],
        }))
    });
}

#[divan::bench(args = ALGS)]
fn dpop_bare_signatures(bencher: Bencher, alg: Alg) {
    let s = Setup::new(alg);
    let (token_input, token_sig) = split(&s.bound);
    bencher
        .with_inputs(|| split(&s.proof()))
        .bench_local_refs(|(proof_input, proof_sig)| {
            s.issuer_vk.verify(&token_input, &token_sig).unwrap();
            s.client_vk.verify(proof_input, proof_sig).unwrap();
        });
}

/// Breakdown: segl-jose's stateless proof check alone (parse, `jwk` → key, thumbprint,
/// signature, `htm`/`htu`/`iat`/`ath`), to see how much of `dpop_verify` it is.
#[divan::bench(args = ALGS)]
fn dpop_check_proof_only(bencher: Bencher, alg: Alg) {
    use segl_jose::dpop::{NoncePolicy, ProofRequirements, check_proof};
    let s = Setup::new(alg);
    let requirements = ProofRequirements {
        method: "GET",
        url: URL,
        now: NOW,
        max_age: 60,
        algs: &Alg::ALL,
        access_token: Some(&s.bound),
        nonce: NoncePolicy::Off,
    };
    bencher
        .with_inputs(|| s.proof())
        .bench_local_refs(|proof| check_proof(proof, &requirements).unwrap());
}

/// Breakdown: turning the proof's `jwk` into a key and verifying once with it, which a fresh
/// key per proof costs over a key parsed in advance (`dpop_bare_signatures`).
#[divan::bench(args = ALGS)]
fn dpop_fresh_key_signature(bencher: Bencher, alg: Alg) {
    let s = Setup::new(alg);
    let jwk = s.client_key.public_jwk().to_public_without_meta();
    bencher
        .with_inputs(|| split(&s.proof()))
        .bench_local_refs(|(input, sig)| {
            let key = VerifyingKey::from_jwk(&jwk, alg).unwrap();
            key.verify(input, sig).unwrap();
        });
}

/// Breakdown: segl-jose's compact-JWS parse of the access token (base64url, strict JSON), the
/// largest part of the Bearer path besides the signature.
#[divan::bench(args = ALGS)]
fn token_parse_only(bencher: Bencher, alg: Alg) {
    let s = Setup::new(alg);
    bencher.bench_local(|| segl_jose::UnverifiedJws::parse(&s.bearer).unwrap());
}
