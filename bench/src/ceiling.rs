//! The crypto ceiling: the signature work a `client_credentials` request with `private_key_jwt`
//! (and DPoP) cannot avoid, timed with the library the server uses (`segl_jose`).
//!
//! Per token the server must verify the client assertion (parse the compact JWS and check its
//! signature with the client's already-parsed key), with DPoP also verify the proof (parse and
//! check its signature with the proof's key), and sign the access token. Everything else (HTTP,
//! form parsing, claim checks, the replay store, JSON) is overhead. The ceiling, in tokens per
//! second of one core, is `1 / (t_verify(assertion) + t_verify(proof) + t_sign(token))` with
//! each `t` the median of single timed operations.
//!
//! The token that is signed has the claims of a real token from the server under test (the
//! probe request's `access_token`, decoded without verification) and its `alg`, so its size is
//! that of the tokens the server issues. The signing key is a fresh key of that `alg` (RSA:
//! 2048 bits, as the server's). The proof check is also timed through
//! [`segl_jose::dpop::check_proof`] (its stateless checks, with the proof-key cache warm),
//! which is reported but not part of the ceiling.

use anyhow::{Context, Result, anyhow};
use segl_jose::dpop::{NoncePolicy, ProofRequirements};
use segl_jose::{Alg, JsonObject, SigningKey, UnverifiedJws, VerifyingKey};
use std::time::Instant;

/// Untimed iterations before each operation is measured.
const WARMUP: usize = 20;

/// The inputs: one request's assertion and proof.
pub struct Inputs {
    /// A signed client assertion.
    pub assertion: String,
    /// The key that verifies `assertion`.
    pub assertion_key: VerifyingKey,
    /// A DPoP proof (when the run uses DPoP), its key, and the URL it is for.
    pub proof: Option<ProofInput>,
}

/// The token to re-sign: an access token the server issued.
pub struct Token {
    /// Its claims.
    pub claims: JsonObject,
    /// Its `alg`.
    pub alg: Alg,
    /// Its `typ` header (e.g. `at+jwt`).
    pub typ: String,
}

impl Token {
    /// Decodes (without verifying) an access token the server issued.
    pub fn from_jwt(token: &str) -> Result<Token> {
        let jws = UnverifiedJws::parse(token)
            .context("the server's access token is not a JWT: the ceiling needs a JWT token")?;
        Ok(Token {
            claims: jws.unverified_claims().clone(),
            alg: jws.alg(),
            typ: jws.unverified_header_str("typ").unwrap_or("JWT").to_owned(),
        })
    }
}

/// A DPoP proof to verify.
pub struct ProofInput {
    /// The compact proof.
    pub proof: String,
    /// The proof's public key, parsed once.
    pub key: VerifyingKey,
    /// The token endpoint URL (`htu`).
    pub url: String,
    /// The proof's `iat` (the checks run with this as "now").
    pub iat: i64,
}

/// Median costs, microseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Costs {
    /// Parse + verify of the client assertion.
    pub assertion_verify_us: f64,
    /// Parse + verify of the DPoP proof (0 without DPoP).
    pub proof_verify_us: f64,
    /// `segl_jose::dpop::check_proof` (all stateless checks; 0 without DPoP). Not in the sum.
    pub proof_check_us: f64,
    /// `sign_jwt` of the access token's claims.
    pub token_sign_us: f64,
    /// The number of timed samples per operation.
    pub samples: usize,
}

impl Costs {
    /// The unavoidable work per token, microseconds.
    pub fn per_token_us(&self) -> f64 {
        self.assertion_verify_us + self.proof_verify_us + self.token_sign_us
    }

    /// Tokens per second of one core if only that work were done.
    pub fn tokens_per_core_second(&self) -> f64 {
        let us = self.per_token_us();
        if us > 0.0 { 1e6 / us } else { 0.0 }
    }

    /// The element-wise minimum of two measurements (before and after the load). Other work
    /// on the CPU can only make an operation look slower, so the lower median is the better
    /// estimate of its cost.
    pub fn min(&self, other: &Costs) -> Costs {
        Costs {
            assertion_verify_us: self.assertion_verify_us.min(other.assertion_verify_us),
            proof_verify_us: self.proof_verify_us.min(other.proof_verify_us),
            proof_check_us: self.proof_check_us.min(other.proof_check_us),
            token_sign_us: self.token_sign_us.min(other.token_sign_us),
            samples: self.samples,
        }
    }
}

impl Inputs {
    /// Times each operation `samples` times (after a short warm-up) and returns the medians.
    /// Runs on the calling thread; pin it first.
    pub fn measure(&self, token: &Token, samples: usize) -> Result<Costs> {
        let samples = samples.max(1);
        let signing_key = SigningKey::generate(token.alg)?;
        let assertion_verify_us = median_us(samples, || {
            UnverifiedJws::parse(&self.assertion)?.verify(&self.assertion_key)?;
            Ok(())
        })
        .context("the client assertion does not verify")?;
        let token_sign_us = median_us(samples, || {
            segl_jose::sign_jwt(&signing_key, &token.typ, &token.claims)?;
            Ok(())
        })
        .context("cannot sign the token")?;
        let (proof_verify_us, proof_check_us) = match &self.proof {
            None => (0.0, 0.0),
            Some(p) => {
                let verify = median_us(samples, || {
                    UnverifiedJws::parse(&p.proof)?.verify(&p.key)?;
                    Ok(())
                })
                .context("the DPoP proof does not verify")?;
                let any_nonce = |_: &str| true;
                let algs = [Alg::ES256, Alg::RS256, Alg::PS256, Alg::EdDSA];
                let req = ProofRequirements {
                    method: "POST",
                    url: &p.url,
                    now: p.iat,
                    max_age: 300,
                    algs: &algs,
                    access_token: None,
                    nonce: NoncePolicy::Optional(&any_nonce),
                };
                let check = median_us(samples, || {
                    segl_jose::dpop::check_proof(&p.proof, &req)
                        .map_err(|e| anyhow!("check_proof: {e}"))?;
                    Ok(())
                })
                .context("the DPoP proof does not pass check_proof")?;
                (verify, check)
            }
        };
        Ok(Costs {
            assertion_verify_us,
            proof_verify_us,
            proof_check_us,
            token_sign_us,
            samples,
        })
    }
}

/// The median wall time of `samples` single calls of `op`, microseconds.
fn median_us(samples: usize, mut op: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..WARMUP {
        op()?;
    }
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        op()?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(median(&mut times))
}

/// The median of `v` (mean of the middle two for an even count; 0 if empty).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    let mid = n / 2;
    let hi = v.get(mid).copied().unwrap_or(0.0);
    if n % 2 == 1 {
        hi
    } else {
        (v.get(mid - 1).copied().unwrap_or(hi) + hi) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn measures_every_operation() {
        let client = SigningKey::generate(Alg::ES256).unwrap();
        let assertion =
            segl_jose::sign_jwt(&client, "client-authentication+jwt", &json!({"iss": "c"}))
                .unwrap();
        let server = SigningKey::generate(Alg::ES256).unwrap();
        let token = segl_jose::sign_jwt(&server, "at+jwt", &json!({"sub": "c", "exp": 1})).unwrap();
        let dpop = SigningKey::generate(Alg::ES256).unwrap();
        let url = "http://127.0.0.1:1/connect/token";
        let proof =
            segl_jose::dpop::create_proof(&dpop, "POST", url, 1000, Some("n"), None).unwrap();
        let inputs = Inputs {
            assertion,
            assertion_key: client.verifying_key().unwrap(),
            proof: Some(ProofInput {
                proof,
                key: dpop.verifying_key().unwrap(),
                url: url.into(),
                iat: 1000,
            }),
        };
        let token = Token::from_jwt(&token).unwrap();
        assert_eq!(token.alg, Alg::ES256);
        assert_eq!(token.typ, "at+jwt");
        let c = inputs.measure(&token, 5).unwrap();
        assert!(c.assertion_verify_us > 0.0 && c.proof_verify_us > 0.0);
        assert!(c.proof_check_us > 0.0 && c.token_sign_us > 0.0);
        assert!(c.tokens_per_core_second() > 0.0);
        // A proof signed by another key does not verify.
        let other = SigningKey::generate(Alg::ES256).unwrap();
        let bad = Inputs {
            assertion_key: other.verifying_key().unwrap(),
            ..inputs
        };
        assert!(bad.measure(&token, 1).is_err());
    }
}
