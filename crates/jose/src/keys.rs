//! Keys parsed once and held in memory: [`VerifyingKey`] for checking signatures and
//! [`SigningKey`] for making them. Nothing on a request path re-parses key material.

use crate::{Alg, Error, Jwk, KeyType, b64};
use aws_lc_rs::encoding::{AsBigEndian, AsDer};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self as sig, KeyPair as _, ParsedPublicKey};
use pkcs1::der::{Decode as _, Encode as _};
use std::fmt;
use zeroize::Zeroizing;

/// A public key ready to verify signatures with one algorithm.
pub struct VerifyingKey {
    alg: Alg,
    kid: Option<String>,
    key: ParsedPublicKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Parses the public part of `jwk` for `alg`. Fails when the key does not fit the algorithm,
    /// is malformed, or is an RSA key under 2048 bits.
    pub fn from_jwk(jwk: &Jwk, alg: Alg) -> Result<VerifyingKey, Error> {
        if !jwk.fits(alg) {
            return Err(Error::Key("key type does not fit the algorithm"));
        }
        let member = |v: &Option<String>| -> Result<Vec<u8>, Error> {
            b64::decode(v.as_deref().ok_or(Error::Key("missing key member"))?)
        };
        let bytes = match alg.key_type() {
            KeyType::Rsa => rsa_public_der(&member(&jwk.n)?, &member(&jwk.e)?)?,
            KeyType::Ec(_) => {
                let (x, y) = (member(&jwk.x)?, member(&jwk.y)?);
                let len = ec_coordinate_len(alg);
                if x.len() != len || y.len() != len {
                    return Err(Error::Key("EC coordinate has the wrong length"));
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                point
            }
            KeyType::Ed25519 => member(&jwk.x)?,
        };
        // Parsing validates the key (EC points on the curve, RSA size bounds): RFC 8725 §3.4.
        let key = ParsedPublicKey::new(alg.verification(), bytes)
            .map_err(|_| Error::Key("public key rejected"))?;
        Ok(VerifyingKey {
            alg,
            kid: jwk.kid.clone(),
            key,
        })
    }

    /// The algorithm this key verifies.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The key id, if the JWK had one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Verifies `signature` over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        self.key
            .verify_sig(message, signature)
            .map_err(|_| Error::BadSignature)
    }
}

fn ec_coordinate_len(alg: Alg) -> usize {
    match alg {
        Alg::ES384 => 48,
        Alg::ES512 => 66,
        _ => 32,
    }
}

fn rsa_public_der(n: &[u8], e: &[u8]) -> Result<Vec<u8>, Error> {
    let key = pkcs1::RsaPublicKey {
        modulus: pkcs1::UintRef::new(n).map_err(|_| Error::Key("bad RSA modulus"))?,
        public_exponent: pkcs1::UintRef::new(e).map_err(|_| Error::Key("bad RSA exponent"))?,
    };
    key.to_der().map_err(|_| Error::Key("bad RSA key"))
}

enum Pair {
    Rsa(sig::RsaKeyPair),
    Ec(sig::EcdsaKeyPair),
    Ed(sig::Ed25519KeyPair),
}

/// A private key that signs with one algorithm. Its `Debug` never shows key material.
pub struct SigningKey {
    alg: Alg,
    kid: String,
    pair: Pair,
    public: Jwk,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a new key for `alg` (RSA: 2048 bits). Its `kid` is the RFC 7638 thumbprint.
    pub fn generate(alg: Alg) -> Result<SigningKey, Error> {
        let pkcs8 = match alg.key_type() {
            KeyType::Rsa => {
                let pair = sig::RsaKeyPair::generate(KeySize::Rsa2048)
                    .map_err(|_| Error::Crypto("RSA key generation"))?;
                let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> =
                    pair.as_der().map_err(|_| Error::Crypto("RSA export"))?;
                der.as_ref().to_vec()
            }
            KeyType::Ec(_) => sig::EcdsaKeyPair::generate(ec_signing(alg))
                .and_then(|p| p.to_pkcs8v1())
                .map_err(|_| Error::Crypto("EC key generation"))?
                .as_ref()
                .to_vec(),
            KeyType::Ed25519 => sig::Ed25519KeyPair::generate()
                .and_then(|p| p.to_pkcs8v1())
                .map_err(|_| Error::Crypto("Ed25519 key generation"))?
                .as_ref()
                .to_vec(),
        };
        SigningKey::from_pkcs8(alg, &pkcs8)
    }

    /// Loads a PKCS#8 (v1 or v2) private key for `alg`.
    pub fn from_pkcs8(alg: Alg, der: &[u8]) -> Result<SigningKey, Error> {
        let pair = match alg.key_type() {
            KeyType::Rsa => Pair::Rsa(
                sig::RsaKeyPair::from_pkcs8(der)
                    .map_err(|_| Error::Key("not an RSA PKCS#8 key"))?,
            ),
            KeyType::Ec(_) => Pair::Ec(
                sig::EcdsaKeyPair::from_pkcs8(ec_signing(alg), der)
                    .map_err(|_| Error::Key("not a PKCS#8 key on the algorithm's curve"))?,
            ),
            KeyType::Ed25519 => Pair::Ed(
                sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|_| Error::Key("not an Ed25519 PKCS#8 key"))?,
            ),
        };
        SigningKey::from_pair(alg, pair)
    }

    /// Loads a private JWK (RSA with CRT members, EC with `d`, OKP with `d`). `alg` defaults to
    /// the JWK's own `alg`, else RS256 / the curve's ECDSA / EdDSA.
    pub fn from_private_jwk(jwk: &Jwk, alg: Option<Alg>) -> Result<SigningKey, Error> {
        let alg = match (alg, jwk.alg.as_deref()) {
            (Some(a), _) => a,
            (None, Some(name)) => name.parse()?,
            (None, None) => match (jwk.kty.as_str(), jwk.crv.as_deref()) {
                ("RSA", _) => Alg::RS256,
                ("EC", Some("P-384")) => Alg::ES384,
                ("EC", Some("P-521")) => Alg::ES512,
                ("EC", _) => Alg::ES256,
                _ => Alg::EdDSA,
            },
        };
        if !jwk.fits(alg) {
            return Err(Error::Key("key type does not fit the algorithm"));
        }
        let member = |v: &Option<String>| -> Result<Zeroizing<Vec<u8>>, Error> {
            Ok(Zeroizing::new(b64::decode(
                v.as_deref()
                    .ok_or(Error::Key("private JWK lacks a member"))?,
            )?))
        };
        let pair = match alg.key_type() {
            KeyType::Rsa => {
                let (n, e, d) = (member(&jwk.n)?, member(&jwk.e)?, member(&jwk.d)?);
                let (p, q) = (member(&jwk.p)?, member(&jwk.q)?);
                let (dp, dq, qi) = (member(&jwk.dp)?, member(&jwk.dq)?, member(&jwk.qi)?);
                let key = pkcs1::RsaPrivateKey {
                    modulus: uint(&n)?,
                    public_exponent: uint(&e)?,
                    private_exponent: uint(&d)?,
                    prime1: uint(&p)?,
                    prime2: uint(&q)?,
                    exponent1: uint(&dp)?,
                    exponent2: uint(&dq)?,
                    coefficient: uint(&qi)?,
                    other_prime_infos: None,
                };
                let der = Zeroizing::new(key.to_der().map_err(|_| Error::Key("bad RSA key"))?);
                Pair::Rsa(
                    sig::RsaKeyPair::from_der(&der).map_err(|_| Error::Key("RSA key rejected"))?,
                )
            }
            KeyType::Ec(_) => {
                let (x, y, d) = (member(&jwk.x)?, member(&jwk.y)?, member(&jwk.d)?);
                let mut point = vec![0x04];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Pair::Ec(
                    sig::EcdsaKeyPair::from_private_key_and_public_key(ec_signing(alg), &d, &point)
                        .map_err(|_| Error::Key("EC key rejected"))?,
                )
            }
            KeyType::Ed25519 => {
                let (x, d) = (member(&jwk.x)?, member(&jwk.d)?);
                Pair::Ed(
                    sig::Ed25519KeyPair::from_seed_and_public_key(&d, &x)
                        .map_err(|_| Error::Key("Ed25519 key rejected"))?,
                )
            }
        };
        SigningKey::from_pair(alg, pair)
    }

    /// Loads a PKCS#8 PEM file's text (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(alg: Alg, pem: &str) -> Result<SigningKey, Error> {
        let body: String = pem
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("-----"))
            .collect();
        use base64::Engine as _;
        let der = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .map_err(|_| Error::Malformed("PEM body is not base64"))?,
        );
        SigningKey::from_pkcs8(alg, &der)
    }

    fn from_pair(alg: Alg, pair: Pair) -> Result<SigningKey, Error> {
        let mut public = match &pair {
            Pair::Rsa(p) => {
                let der = p.public_key().as_ref();
                let key =
                    pkcs1::RsaPublicKey::from_der(der).map_err(|_| Error::Key("RSA public"))?;
                Jwk {
                    kty: "RSA".into(),
                    n: Some(b64::encode(key.modulus.as_bytes())),
                    e: Some(b64::encode(key.public_exponent.as_bytes())),
                    ..Jwk::default()
                }
            }
            Pair::Ec(p) => {
                let point = p.public_key().as_ref();
                let len = ec_coordinate_len(alg);
                let x = point.get(1..1 + len).ok_or(Error::Key("EC point"))?;
                let y = point
                    .get(1 + len..1 + 2 * len)
                    .ok_or(Error::Key("EC point"))?;
                let KeyType::Ec(crv) = alg.key_type() else {
                    return Err(Error::Key("EC key for a non-EC algorithm"));
                };
                Jwk {
                    kty: "EC".into(),
                    crv: Some(crv.into()),
                    x: Some(b64::encode(x)),
                    y: Some(b64::encode(y)),
                    ..Jwk::default()
                }
            }
            Pair::Ed(p) => Jwk {
                kty: "OKP".into(),
                crv: Some("Ed25519".into()),
                x: Some(b64::encode(p.public_key().as_ref())),
                ..Jwk::default()
            },
        };
        let kid = public.thumbprint()?;
        public.kid = Some(kid.clone());
        public.alg = Some(alg.name().into());
        public.use_ = Some("sig".into());
        Ok(SigningKey {
            alg,
            kid,
            pair,
            public,
        })
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The key id (RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK with `kid`, `alg` and `use`.
    pub fn public_jwk(&self) -> &Jwk {
        &self.public
    }

    /// The private key as PKCS#8 DER (for encrypted storage).
    pub fn to_pkcs8(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        let der = match &self.pair {
            Pair::Rsa(p) => {
                let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> =
                    p.as_der().map_err(|_| Error::Crypto("RSA export"))?;
                der.as_ref().to_vec()
            }
            Pair::Ec(p) => p
                .to_pkcs8v1()
                .map_err(|_| Error::Crypto("EC export"))?
                .as_ref()
                .to_vec(),
            Pair::Ed(p) => p
                .to_pkcs8v1()
                .map_err(|_| Error::Crypto("Ed export"))?
                .as_ref()
                .to_vec(),
        };
        Ok(Zeroizing::new(der))
    }

    /// The private key as a JWK (with `kid`, `alg`, `use`), for client key files.
    pub fn to_private_jwk(&self) -> Result<Jwk, Error> {
        let mut jwk = self.public.clone();
        match &self.pair {
            Pair::Rsa(_) => {
                let pkcs8 = self.to_pkcs8()?;
                let info =
                    pkcs8::PrivateKeyInfo::from_der(&pkcs8).map_err(|_| Error::Key("PKCS#8"))?;
                let key = pkcs1::RsaPrivateKey::from_der(info.private_key)
                    .map_err(|_| Error::Key("PKCS#1"))?;
                jwk.d = Some(b64::encode(key.private_exponent.as_bytes()));
                jwk.p = Some(b64::encode(key.prime1.as_bytes()));
                jwk.q = Some(b64::encode(key.prime2.as_bytes()));
                jwk.dp = Some(b64::encode(key.exponent1.as_bytes()));
                jwk.dq = Some(b64::encode(key.exponent2.as_bytes()));
                jwk.qi = Some(b64::encode(key.coefficient.as_bytes()));
            }
            Pair::Ec(p) => {
                let d = p
                    .private_key()
                    .as_be_bytes()
                    .map_err(|_| Error::Crypto("EC export"))?;
                jwk.d = Some(b64::encode(d.as_ref()));
            }
            Pair::Ed(p) => {
                let seed = p.seed().map_err(|_| Error::Crypto("Ed export"))?;
                let bytes = seed.as_be_bytes().map_err(|_| Error::Crypto("Ed export"))?;
                jwk.d = Some(b64::encode(bytes.as_ref()));
            }
        }
        Ok(jwk)
    }

    /// A verifier for this key's own signatures.
    pub fn verifying_key(&self) -> Result<VerifyingKey, Error> {
        VerifyingKey::from_jwk(&self.public, self.alg)
    }

    /// Signs `message`, returning the JWS signature bytes (R||S for ECDSA, RFC 7518 §3.4).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match &self.pair {
            Pair::Rsa(p) => {
                let padding: &'static dyn sig::RsaEncoding = match self.alg {
                    Alg::RS384 => &sig::RSA_PKCS1_SHA384,
                    Alg::RS512 => &sig::RSA_PKCS1_SHA512,
                    Alg::PS256 => &sig::RSA_PSS_SHA256,
                    Alg::PS384 => &sig::RSA_PSS_SHA384,
                    Alg::PS512 => &sig::RSA_PSS_SHA512,
                    _ => &sig::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0u8; p.public_modulus_len()];
                p.sign(padding, &rng, message, &mut out)
                    .map_err(|_| Error::Crypto("RSA sign"))?;
                Ok(out)
            }
            Pair::Ec(p) => Ok(p
                .sign(&rng, message)
                .map_err(|_| Error::Crypto("ECDSA sign"))?
                .as_ref()
                .to_vec()),
            Pair::Ed(p) => Ok(p.sign(message).as_ref().to_vec()),
        }
    }
}

fn ec_signing(alg: Alg) -> &'static sig::EcdsaSigningAlgorithm {
    match alg {
        Alg::ES384 => &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
        Alg::ES512 => &sig::ECDSA_P521_SHA512_FIXED_SIGNING,
        _ => &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
    }
}

fn uint(bytes: &[u8]) -> Result<pkcs1::UintRef<'_>, Error> {
    pkcs1::UintRef::new(bytes).map_err(|_| Error::Key("bad RSA member"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alg_round_trips_through_pkcs8_and_private_jwk() {
        for alg in Alg::ALL {
            let key = SigningKey::generate(alg).unwrap();
            let msg = b"segl";
            let s = key.sign(msg).unwrap();
            key.verifying_key().unwrap().verify(msg, &s).unwrap();

            let again = SigningKey::from_pkcs8(alg, &key.to_pkcs8().unwrap()).unwrap();
            assert_eq!(again.kid(), key.kid(), "{alg}");

            let jwk = key.to_private_jwk().unwrap();
            assert!(jwk.has_private_members());
            let from_jwk = SigningKey::from_private_jwk(&jwk, None).unwrap();
            assert_eq!(from_jwk.alg(), alg);
            let s2 = from_jwk.sign(msg).unwrap();
            key.verifying_key().unwrap().verify(msg, &s2).unwrap();
            assert!(!key.public_jwk().has_private_members());
        }
    }

    #[test]
    fn verifying_key_refuses_wrong_type_and_bad_points() {
        let ec = SigningKey::generate(Alg::ES256).unwrap();
        assert!(VerifyingKey::from_jwk(ec.public_jwk(), Alg::RS256).is_err());
        let mut off_curve = ec.public_jwk().clone();
        off_curve.y = off_curve.x.clone();
        assert!(VerifyingKey::from_jwk(&off_curve, Alg::ES256).is_err());
    }
}
