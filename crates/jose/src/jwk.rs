//! JSON Web Keys (RFC 7517) as Segl reads and writes them, and RFC 7638 thumbprints.

use crate::{Alg, Error, KeyType, b64};
use serde::{Deserialize, Serialize};

/// A JWK. Only the members Segl uses are typed; unknown members are ignored on read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `RSA`, `EC` or `OKP`.
    pub kty: String,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Intended algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Intended use (`sig`).
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// RSA modulus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC / OKP curve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate, or the OKP public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// Private exponent / scalar / seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<String>,
    /// RSA first prime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<String>,
    /// RSA second prime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// RSA first CRT exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<String>,
    /// RSA second CRT exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dq: Option<String>,
    /// RSA CRT coefficient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qi: Option<String>,
}

/// A JWK Set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

impl Jwk {
    /// Parses one JWK from JSON, rejecting duplicate members.
    pub fn from_json(bytes: &[u8]) -> Result<Jwk, Error> {
        let obj = crate::parse_object(bytes)?;
        serde_json::from_value(serde_json::Value::Object(obj))
            .map_err(|_| Error::Malformed("not a JWK"))
    }

    /// Whether any private member is present (RFC 7517 §9.3; RFC 9449 §4.3 (7)).
    pub fn has_private_members(&self) -> bool {
        self.d.is_some()
            || self.p.is_some()
            || self.q.is_some()
            || self.dp.is_some()
            || self.dq.is_some()
            || self.qi.is_some()
    }

    /// This key without its private members.
    pub fn to_public(&self) -> Jwk {
        Jwk {
            d: None,
            p: None,
            q: None,
            dp: None,
            dq: None,
            qi: None,
            ..self.clone()
        }
    }

    /// The public key members only (no `kid`, `alg`, `use`), as a DPoP proof's `jwk` header.
    pub fn to_public_without_meta(&self) -> Jwk {
        Jwk {
            kid: None,
            alg: None,
            use_: None,
            ..self.to_public()
        }
    }

    /// Whether this key can serve `alg`: `kty`/`crv` fit, and a declared `alg` equals it.
    pub fn fits(&self, alg: Alg) -> bool {
        if self
            .alg
            .as_deref()
            .is_some_and(|declared| declared != alg.name())
        {
            return false;
        }
        if self.use_.as_deref().is_some_and(|u| u != "sig") {
            return false;
        }
        match alg.key_type() {
            KeyType::Rsa => self.kty == "RSA",
            KeyType::Ec(crv) => self.kty == "EC" && self.crv.as_deref() == Some(crv),
            KeyType::Ed25519 => self.kty == "OKP" && self.crv.as_deref() == Some("Ed25519"),
        }
    }

    /// The RFC 7638 thumbprint: base64url(SHA-256(canonical required members)).
    pub fn thumbprint(&self) -> Result<String, Error> {
        // RFC 7638 §3.2: required members only, lexicographic order, no whitespace; each
        // value as a JSON string.
        let q = |v: &Option<String>| -> Result<String, Error> {
            let v = v
                .as_deref()
                .ok_or(Error::Key("missing member for thumbprint"))?;
            serde_json::to_string(v).map_err(|_| Error::Key("thumbprint"))
        };
        let text = match self.kty.as_str() {
            "RSA" => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, q(&self.e)?, q(&self.n)?),
            "EC" => format!(
                r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
                q(&self.crv)?,
                q(&self.x)?,
                q(&self.y)?
            ),
            "OKP" => format!(
                r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
                q(&self.crv)?,
                q(&self.x)?
            ),
            _ => return Err(Error::Key("unsupported kty")),
        };
        Ok(b64::encode(crate::sha256(text.as_bytes())))
    }
}

impl Jwks {
    /// Parses a JWK Set from JSON, rejecting duplicate members.
    pub fn from_json(bytes: &[u8]) -> Result<Jwks, Error> {
        let obj = crate::parse_object(bytes)?;
        serde_json::from_value(serde_json::Value::Object(obj))
            .map_err(|_| Error::Malformed("not a JWK Set (expected {\"keys\": [...]})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7638 §3.1 example.
    #[test]
    fn rfc7638_example_thumbprint() {
        let jwk = Jwk::from_json(br#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#).unwrap();
        assert_eq!(
            jwk.thumbprint().unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn fits_checks_kty_crv_alg_and_use() {
        let ec = Jwk {
            kty: "EC".into(),
            crv: Some("P-256".into()),
            ..Jwk::default()
        };
        assert!(ec.fits(Alg::ES256));
        assert!(!ec.fits(Alg::ES384));
        assert!(!ec.fits(Alg::RS256));
        let declared = Jwk {
            alg: Some("ES256".into()),
            ..ec.clone()
        };
        assert!(declared.fits(Alg::ES256));
        let enc = Jwk {
            use_: Some("enc".into()),
            ..ec
        };
        assert!(!enc.fits(Alg::ES256));
    }
}
