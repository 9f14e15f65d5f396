//! Compact JWS: parse into [`UnverifiedJws`], verify into [`VerifiedJws`], and sign.
//!
//! An [`UnverifiedJws`] gives its header and claims only under `unverified_` names, so code that
//! reads claims before checking the signature says so. A [`VerifiedJws`] can only be made by
//! [`UnverifiedJws::verify`], which checks the signature with a key the caller trusts.

use crate::{Alg, Error, JsonObject, SigningKey, VerifyingKey, b64, parse_object};
use serde::Serialize;

/// The largest compact JWS accepted (RFC 8725 does not set one; ours keeps parsing bounded).
pub const MAX_JWS_LEN: usize = 16 * 1024;

/// A syntactically valid compact JWS whose signature has not been checked.
#[derive(Debug)]
pub struct UnverifiedJws {
    header: JsonObject,
    alg: Alg,
    claims: JsonObject,
    signing_input: String,
    signature: Vec<u8>,
}

/// A JWS whose signature verified with a trusted key.
#[derive(Debug)]
pub struct VerifiedJws {
    header: JsonObject,
    alg: Alg,
    claims: JsonObject,
}

impl UnverifiedJws {
    /// Parses a compact JWS: three base64url parts, a JSON-object header with an allowed
    /// asymmetric `alg` and no `crit`, and a JSON-object payload. Duplicate members anywhere are
    /// rejected.
    pub fn parse(compact: &str) -> Result<UnverifiedJws, Error> {
        if compact.len() > MAX_JWS_LEN {
            return Err(Error::TooLarge);
        }
        let mut parts = compact.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::Malformed("a JWT has three dot-separated parts"));
        };
        let header = parse_object(&b64::decode(h)?)?;
        let alg = match header.get("alg") {
            Some(serde_json::Value::String(name)) => name.parse::<Alg>()?,
            Some(_) => return Err(Error::Malformed("alg is not a string")),
            None => return Err(Error::Malformed("header has no alg")),
        };
        // RFC 7515 §4.1.11: we understand no extensions, so any `crit` is fatal.
        if header.contains_key("crit") {
            return Err(Error::Malformed(
                "crit header names an unsupported extension",
            ));
        }
        let claims = parse_object(&b64::decode(p)?)?;
        let signature = b64::decode(s)?;
        let signing_input = compact
            .get(..h.len() + 1 + p.len())
            .ok_or(Error::Malformed("JWT"))?
            .to_owned();
        Ok(UnverifiedJws {
            header,
            alg,
            claims,
            signing_input,
            signature,
        })
    }

    /// The header `alg` (already known to be an allowed asymmetric algorithm).
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The header, unverified.
    pub fn unverified_header(&self) -> &JsonObject {
        &self.header
    }

    /// A string header member, unverified.
    pub fn unverified_header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(|v| v.as_str())
    }

    /// The claims, unverified: use only to find which keys to try.
    pub fn unverified_claims(&self) -> &JsonObject {
        &self.claims
    }

    /// Verifies the signature with `key`. The key's algorithm must equal the header's.
    pub fn verify(self, key: &VerifyingKey) -> Result<VerifiedJws, Error> {
        if key.alg() != self.alg {
            return Err(Error::NoMatchingKey);
        }
        key.verify(self.signing_input.as_bytes(), &self.signature)?;
        Ok(VerifiedJws {
            header: self.header,
            alg: self.alg,
            claims: self.claims,
        })
    }

    /// Verifies with the first of `keys` whose signature check passes.
    pub fn verify_any<'k>(
        self,
        keys: impl IntoIterator<Item = &'k VerifyingKey>,
    ) -> Result<VerifiedJws, Error> {
        let mut tried = false;
        for key in keys {
            if key.alg() != self.alg {
                continue;
            }
            tried = true;
            if key
                .verify(self.signing_input.as_bytes(), &self.signature)
                .is_ok()
            {
                return Ok(VerifiedJws {
                    header: self.header,
                    alg: self.alg,
                    claims: self.claims,
                });
            }
        }
        Err(if tried {
            Error::BadSignature
        } else {
            Error::NoMatchingKey
        })
    }
}

impl VerifiedJws {
    /// The verified header.
    pub fn header(&self) -> &JsonObject {
        &self.header
    }

    /// The algorithm that verified.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The verified claims.
    pub fn claims(&self) -> &JsonObject {
        &self.claims
    }

    /// The verified claims, by value.
    pub fn into_claims(self) -> JsonObject {
        self.claims
    }
}

/// Signs `claims` as a compact JWS with header `{"alg", "typ", "kid"}`.
pub fn sign_jwt(key: &SigningKey, typ: &str, claims: &impl Serialize) -> Result<String, Error> {
    #[derive(Serialize)]
    struct Header<'a> {
        alg: &'a str,
        typ: &'a str,
        kid: &'a str,
    }
    let header = serde_json::to_vec(&Header {
        alg: key.alg().name(),
        typ,
        kid: key.kid(),
    })
    .map_err(|_| Error::Malformed("header"))?;
    let payload = serde_json::to_vec(claims).map_err(|_| Error::Malformed("claims"))?;
    let mut out = b64::encode(header);
    out.push('.');
    out.push_str(&b64::encode(payload));
    let signature = key.sign(out.as_bytes())?;
    out.push('.');
    out.push_str(&b64::encode(signature));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compact(header: &serde_json::Value, claims: &str, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            b64::encode(header.to_string()),
            b64::encode(claims),
            b64::encode(sig)
        )
    }

    #[test]
    fn sign_then_verify() {
        let key = SigningKey::generate(Alg::ES256).unwrap();
        let jwt = sign_jwt(&key, "at+jwt", &json!({"sub": "x"})).unwrap();
        let jws = UnverifiedJws::parse(&jwt).unwrap();
        assert_eq!(jws.unverified_header_str("typ"), Some("at+jwt"));
        assert_eq!(jws.unverified_header_str("kid"), Some(key.kid()));
        let verified = jws.verify(&key.verifying_key().unwrap()).unwrap();
        assert_eq!(verified.claims()["sub"], "x");
    }

    #[test]
    fn tampered_payload_fails() {
        let key = SigningKey::generate(Alg::ES256).unwrap();
        let jwt = sign_jwt(&key, "JWT", &json!({"sub": "x"})).unwrap();
        let mut parts: Vec<&str> = jwt.split('.').collect();
        let other = b64::encode(br#"{"sub":"y"}"#);
        parts[1] = &other;
        let jws = UnverifiedJws::parse(&parts.join(".")).unwrap();
        assert_eq!(
            jws.verify(&key.verifying_key().unwrap()).unwrap_err(),
            Error::BadSignature
        );
    }

    #[test]
    fn rejects_none_hmac_crit_and_bad_shapes() {
        let none = compact(&json!({"alg": "none"}), "{}", b"");
        assert!(matches!(
            UnverifiedJws::parse(&none),
            Err(Error::AlgNotAllowed(_))
        ));
        let hs = compact(&json!({"alg": "HS256"}), "{}", b"x");
        assert!(matches!(
            UnverifiedJws::parse(&hs),
            Err(Error::AlgNotAllowed(_))
        ));
        let crit = compact(
            &json!({"alg": "ES256", "crit": ["b64"], "b64": false}),
            "{}",
            b"x",
        );
        assert!(UnverifiedJws::parse(&crit).is_err());
        assert!(UnverifiedJws::parse("a.b").is_err());
        assert!(UnverifiedJws::parse("a.b.c.d").is_err());
        let dup = compact(&json!({"alg": "ES256"}), r#"{"a":1,"a":2}"#, b"x");
        assert!(matches!(
            UnverifiedJws::parse(&dup),
            Err(Error::DuplicateMember(_))
        ));
        assert_eq!(
            UnverifiedJws::parse(&"a".repeat(MAX_JWS_LEN + 1)).unwrap_err(),
            Error::TooLarge
        );
    }

    #[test]
    fn wrong_alg_key_is_no_match() {
        let es = SigningKey::generate(Alg::ES256).unwrap();
        let rs = SigningKey::generate(Alg::RS256).unwrap();
        let jwt = sign_jwt(&es, "JWT", &json!({})).unwrap();
        let jws = UnverifiedJws::parse(&jwt).unwrap();
        assert_eq!(
            jws.verify_any([&rs.verifying_key().unwrap()]).unwrap_err(),
            Error::NoMatchingKey
        );
    }
}
