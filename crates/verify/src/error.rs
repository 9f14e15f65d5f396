//! [`VerifyError`]: why a request was refused, and its one mapping to an HTTP answer
//! (RFC 6750 §3, RFC 9449 §7.1 and §9): status, `WWW-Authenticate` challenges, `DPoP-Nonce`.
//!
//! The challenge scheme follows what the request used; when the request used none (no token,
//! or a malformed `Authorization`), every scheme the endpoint accepts is challenged. The DPoP
//! challenge always carries `algs` (RFC 9449 §7.1).

use segl_proto::ErrorCode;
use segl_proto::error::sanitize_description;
use std::fmt;
use std::sync::Arc;

/// What was wrong with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No token at all (RFC 6750 §3.1): 401 with a challenge and no error code.
    NoToken,
    /// A malformed request, e.g. two `Authorization` headers (400 `invalid_request`).
    InvalidRequest(String),
    /// The token is not acceptable (401 `invalid_token`).
    InvalidToken(String),
    /// The DPoP proof is not acceptable (401 `invalid_dpop_proof`).
    InvalidDpopProof(String),
    /// The proof needs this server's current nonce (401 `use_dpop_nonce` + `DPoP-Nonce`).
    UseDpopNonce {
        /// The nonce the client must put in its next proof.
        nonce: String,
        /// Why.
        description: String,
    },
    /// The token lacks a required scope (403 `insufficient_scope`).
    InsufficientScope {
        /// The scopes the endpoint requires, space-separated.
        scope: String,
    },
    /// The verifier cannot decide now: the proof replay cache is full (503).
    Unavailable(String),
}

/// Which challenges an answer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenges {
    pub(crate) bearer: bool,
    /// `Some(algs)` for a DPoP challenge.
    pub(crate) dpop: Option<Arc<str>>,
}

/// A refused request: the reason and the challenges to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    kind: ErrorKind,
    challenges: Challenges,
}

impl std::error::Error for VerifyError {}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.error_code(), self.description()) {
            (Some(code), Some(d)) => write!(f, "{code}: {d}"),
            (Some(code), None) => write!(f, "{code}"),
            (None, _) => f.write_str("no access token"),
        }
    }
}

impl VerifyError {
    pub(crate) fn new(kind: ErrorKind, challenges: Challenges) -> VerifyError {
        VerifyError { kind, challenges }
    }

    /// The reason.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The OAuth error code, if the answer carries one (none for [`ErrorKind::NoToken`]).
    pub fn error_code(&self) -> Option<ErrorCode> {
        Some(match &self.kind {
            ErrorKind::NoToken => return None,
            ErrorKind::InvalidRequest(_) => ErrorCode::InvalidRequest,
            ErrorKind::InvalidToken(_) => ErrorCode::InvalidToken,
            ErrorKind::InvalidDpopProof(_) => ErrorCode::InvalidDpopProof,
            ErrorKind::UseDpopNonce { .. } => ErrorCode::UseDpopNonce,
            ErrorKind::InsufficientScope { .. } => ErrorCode::InsufficientScope,
            ErrorKind::Unavailable(_) => ErrorCode::TemporarilyUnavailable,
        })
    }

    /// The text for `error_description`.
    pub fn description(&self) -> Option<&str> {
        match &self.kind {
            ErrorKind::NoToken => None,
            ErrorKind::InvalidRequest(d)
            | ErrorKind::InvalidToken(d)
            | ErrorKind::InvalidDpopProof(d)
            | ErrorKind::Unavailable(d)
            | ErrorKind::UseDpopNonce { description: d, .. } => Some(d),
            ErrorKind::InsufficientScope { .. } => Some("the token lacks a required scope"),
        }
    }

    /// The HTTP status: 400, 401, 403 or 503.
    pub fn status(&self) -> u16 {
        match &self.kind {
            ErrorKind::InvalidRequest(_) => 400,
            ErrorKind::InsufficientScope { .. } => 403,
            ErrorKind::Unavailable(_) => 503,
            _ => 401,
        }
    }

    /// The response headers: one `WWW-Authenticate` per challenged scheme (none with a 503),
    /// `DPoP-Nonce` with a `use_dpop_nonce`, `Retry-After` with a 503, and
    /// `Cache-Control: no-store`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(3);
        let params = self.challenge_params();
        // A 503 is not a verdict on the credentials: no challenge, just when to retry.
        let challenge_ok = !matches!(self.kind, ErrorKind::Unavailable(_));
        if let Some(algs) = self.challenges.dpop.as_ref().filter(|_| challenge_ok) {
            let algs = format!("algs=\"{algs}\"");
            out.push(("www-authenticate", challenge("DPoP", &params, Some(&algs))));
        }
        if self.challenges.bearer && challenge_ok {
            out.push(("www-authenticate", challenge("Bearer", &params, None)));
        }
        match &self.kind {
            ErrorKind::UseDpopNonce { nonce, .. } => out.push(("dpop-nonce", nonce.clone())),
            ErrorKind::Unavailable(_) => out.push(("retry-after", "5".to_owned())),
            _ => {}
        }
        out.push(("cache-control", "no-store".to_owned()));
        out
    }

    /// `error`, `error_description` and `scope` auth-params, already quoted.
    fn challenge_params(&self) -> Vec<String> {
        let Some(code) = self.error_code() else {
            return Vec::new();
        };
        let mut params = vec![format!("error=\"{code}\"")];
        if let Some(d) = self.description() {
            params.push(format!("error_description=\"{}\"", header_safe(d)));
        }
        if let ErrorKind::InsufficientScope { scope } = &self.kind {
            params.push(format!("scope=\"{}\"", sanitize_description(scope)));
        }
        params
    }
}

/// RFC 6749 §5.2 characters only, and short: a description may quote attacker input (a `kid`).
pub(crate) fn header_safe(text: &str) -> String {
    const MAX: usize = 200;
    let mut out = sanitize_description(text);
    if out.len() > MAX {
        out.truncate(MAX);
        out.push_str("...");
    }
    out
}

fn challenge(scheme: &str, params: &[String], extra: Option<&str>) -> String {
    let all: Vec<&str> = params.iter().map(String::as_str).chain(extra).collect();
    if all.is_empty() {
        scheme.to_owned()
    } else {
        format!("{scheme} {}", all.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both() -> Challenges {
        Challenges {
            bearer: true,
            dpop: Some("ES256 PS256".into()),
        }
    }

    #[test]
    fn no_token_challenges_every_accepted_scheme_without_error() {
        let e = VerifyError::new(ErrorKind::NoToken, both());
        assert_eq!(e.status(), 401);
        assert_eq!(
            e.headers(),
            vec![
                ("www-authenticate", "DPoP algs=\"ES256 PS256\"".to_owned()),
                ("www-authenticate", "Bearer".to_owned()),
                ("cache-control", "no-store".to_owned()),
            ]
        );
    }

    fn dpop_only() -> Challenges {
        Challenges {
            bearer: false,
            dpop: Some("ES256".into()),
        }
    }

    #[test]
    fn errors_carry_code_description_scope_and_nonce() {
        let bearer = Challenges {
            bearer: true,
            dpop: None,
        };
        let e = VerifyError::new(
            ErrorKind::InsufficientScope {
                scope: "nhn:a/x".into(),
            },
            bearer,
        );
        assert_eq!(e.status(), 403);
        assert_eq!(
            e.headers()[0].1,
            "Bearer error=\"insufficient_scope\", error_description=\"the token lacks a required scope\", scope=\"nhn:a/x\""
        );
        let dpop = Challenges {
            bearer: false,
            dpop: Some("ES256".into()),
        };
        let e = VerifyError::new(
            ErrorKind::UseDpopNonce {
                nonce: "n-1".into(),
                description: "say \"nonce\"".into(),
            },
            dpop,
        );
        assert_eq!(
            e.headers(),
            vec![
                (
                    "www-authenticate",
                    "DPoP error=\"use_dpop_nonce\", error_description=\"say 'nonce'\", algs=\"ES256\""
                        .to_owned()
                ),
                ("dpop-nonce", "n-1".to_owned()),
                ("cache-control", "no-store".to_owned()),
            ]
        );
        assert_eq!(e.to_string(), "use_dpop_nonce: say \"nonce\"");
        let long = VerifyError::new(ErrorKind::InvalidToken("k".repeat(5000)), dpop_only());
        assert!(long.headers()[0].1.len() < 300);
    }
}
