//! Minting tokens and proofs, and a verifier on a manual clock.

use segl_jose::dpop::create_proof;
use segl_jose::{Alg, Jwks, SigningKey, sign_jwt};
use segl_verify::{
    ErrorKind, ManualClock, RequestParts, VerifiedToken, Verifier, VerifierConfig, VerifyError,
};
use serde_json::{Value, json};
use std::sync::Arc;

pub const ISSUER: &str = "https://segl.test";
pub const AUDIENCE: &str = "nhn:reseptformidleren";
pub const SCOPE: &str = "nhn:reseptformidleren/rf";
pub const BASE: &str = "https://rf.test";
pub const PATH: &str = "/api/caller";
pub const URL: &str = "https://rf.test/api/caller";
pub const NOW: i64 = 1_800_000_000;

pub struct Fixture {
    pub issuer_key: SigningKey,
    pub client_key: SigningKey,
    pub clock: Arc<ManualClock>,
    pub verifier: Arc<Verifier>,
}

pub fn config(clock: &Arc<ManualClock>) -> VerifierConfig {
    VerifierConfig::new(AUDIENCE)
        .with_required_scopes([SCOPE])
        .with_public_base_url(BASE)
        .with_clock(clock.clone())
}

pub fn jwks(keys: &[&SigningKey]) -> Jwks {
    Jwks {
        keys: keys.iter().map(|k| k.public_jwk().clone()).collect(),
    }
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::with(|c| c)
    }

    /// A fixture whose config is adjusted by `adjust`.
    pub fn with(adjust: impl FnOnce(VerifierConfig) -> VerifierConfig) -> Fixture {
        Fixture::with_keys(Alg::ES256, Alg::ES256, adjust)
    }

    pub fn with_keys(
        issuer_alg: Alg,
        client_alg: Alg,
        adjust: impl FnOnce(VerifierConfig) -> VerifierConfig,
    ) -> Fixture {
        let issuer_key = SigningKey::generate(issuer_alg).unwrap();
        let client_key = SigningKey::generate(client_alg).unwrap();
        let clock = Arc::new(ManualClock::new(NOW));
        let verifier = Arc::new(
            Verifier::from_jwks(ISSUER, &jwks(&[&issuer_key]), adjust(config(&clock))).unwrap(),
        );
        Fixture {
            issuer_key,
            client_key,
            clock,
            verifier,
        }
    }

    /// The claims of a client_credentials token from Segl (HelseID profile).
    pub fn claims(&self) -> Value {
        json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "epj-granfjelldal",
            "client_id": "epj-granfjelldal",
            "scope": [SCOPE],
            "iat": NOW,
            "nbf": NOW,
            "exp": NOW + 300,
            "jti": "0123456789ABCDEF0123456789ABCDEF",
            "client_amr": "private_key_jwt",
            "helseid://claims/client/client_name": "Acme EPJ at Granfjelldal",
            "helseid://claims/client/claims/orgnr_parent": "999977774",
            "helseid://claims/client/claims/orgnr_child": "999977776",
            "helseid://claims/client/claims/orgnr_supplier": "313745392",
            "helseid://claims/client/client_tenancy": "multi-tenant",
        })
    }

    /// The same claims, bound to the client's DPoP key.
    pub fn bound_claims(&self) -> Value {
        let mut c = self.claims();
        c["cnf"] = json!({"jkt": self.client_key.public_jwk().thumbprint().unwrap()});
        c
    }

    pub fn token(&self, claims: &Value) -> String {
        sign_jwt(&self.issuer_key, "at+jwt", claims).unwrap()
    }

    pub fn bearer_token(&self) -> String {
        self.token(&self.claims())
    }

    pub fn bound_token(&self) -> String {
        self.token(&self.bound_claims())
    }

    /// A fresh proof for `GET {URL}` with `ath` of `token`.
    pub fn proof(&self, token: &str) -> String {
        self.proof_for("GET", URL, token, None)
    }

    pub fn proof_for(&self, method: &str, url: &str, token: &str, nonce: Option<&str>) -> String {
        create_proof(
            &self.client_key,
            method,
            url,
            self.clock_now(),
            nonce,
            Some(token),
        )
        .unwrap()
    }

    pub fn clock_now(&self) -> i64 {
        use segl_verify::Clock as _;
        self.clock.now()
    }

    pub async fn verify(
        &self,
        authorization: &[&str],
        dpop: &[&str],
    ) -> Result<VerifiedToken, VerifyError> {
        self.verify_at("GET", PATH, authorization, dpop).await
    }

    pub async fn verify_at(
        &self,
        method: &str,
        target: &str,
        authorization: &[&str],
        dpop: &[&str],
    ) -> Result<VerifiedToken, VerifyError> {
        self.verifier
            .verify(&RequestParts {
                method,
                target,
                authorization,
                dpop,
            })
            .await
    }

    pub async fn bearer(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        self.verify(&[&format!("Bearer {token}")], &[]).await
    }

    pub async fn dpop(&self, token: &str, proof: &str) -> Result<VerifiedToken, VerifyError> {
        self.verify(&[&format!("DPoP {token}")], &[proof]).await
    }
}

/// The `invalid_token` description, or a panic naming what came instead.
pub fn invalid_token(r: Result<VerifiedToken, VerifyError>) -> String {
    match r {
        Err(e) => match e.kind() {
            ErrorKind::InvalidToken(d) => {
                assert_eq!(e.status(), 401);
                d.clone()
            }
            other => panic!("expected invalid_token, got {other:?}"),
        },
        Ok(_) => panic!("expected invalid_token, the token passed"),
    }
}

/// The `invalid_dpop_proof` description.
pub fn invalid_proof(r: Result<VerifiedToken, VerifyError>) -> String {
    match r {
        Err(e) => match e.kind() {
            ErrorKind::InvalidDpopProof(d) => {
                assert_eq!(e.status(), 401);
                d.clone()
            }
            other => panic!("expected invalid_dpop_proof, got {other:?}"),
        },
        Ok(_) => panic!("expected invalid_dpop_proof, the request passed"),
    }
}

/// The `WWW-Authenticate` values of an error.
pub fn challenges(e: &VerifyError) -> Vec<String> {
    e.headers()
        .into_iter()
        .filter(|(n, _)| *n == "www-authenticate")
        .map(|(_, v)| v)
        .collect()
}
