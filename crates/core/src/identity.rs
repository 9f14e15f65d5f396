//! The logged-in person: who they are (national identity number, names, HPR number), how they
//! logged in (identity provider, methods, levels, time), and which claims each granted scope
//! releases into access tokens, ID tokens and userinfo (HELSEID.md §5.2).

use segl_proto::claims::{self as c, scope};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// A person as the register or an identity provider describes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// National identity number (fødselsnummer or D-number).
    pub pid: String,
    /// Given name.
    pub given_name: String,
    /// Middle name, possibly empty.
    #[serde(default)]
    pub middle_name: Option<String>,
    /// Family name.
    pub family_name: String,
    /// Number in the health personnel register.
    #[serde(default)]
    pub hpr_number: Option<String>,
}

impl Person {
    /// `name`: given (+ middle) + family.
    pub fn full_name(&self) -> String {
        let mut parts = vec![self.given_name.as_str()];
        if let Some(m) = self.middle_name.as_deref().filter(|m| !m.is_empty()) {
            parts.push(m);
        }
        parts.push(&self.family_name);
        parts.join(" ")
    }
}

/// A completed login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// The person.
    pub person: Person,
    /// `helseid://claims/identity/pid_pseudonym`, also the `sub`.
    pub pseudonym: String,
    /// The identity provider's name (`idp` claim), e.g. `testidp-oidc`.
    pub idp: String,
    /// Authentication methods (`amr`).
    pub amr: Vec<String>,
    /// `"4"`, `"3"`, …
    pub security_level: String,
    /// `high`, `substantial`, …
    pub assurance_level: String,
    /// `internett` or `helsenett`.
    pub network: String,
    /// When the person authenticated.
    pub auth_time: i64,
    /// The session id (`sid` claim).
    pub sid: String,
}

impl Login {
    /// The `acr` this login satisfies, in HelseID's vocabulary.
    pub fn acr(&self) -> String {
        format!("Level{}", self.security_level)
    }

    /// Whether this login satisfies the `acr_values` of a request: `Level4`/`High` need level 4,
    /// `Level3`/`Substantial` level 3 or more; `idp:<name>` must name this login's IdP.
    pub fn satisfies(&self, acr_values: &[String]) -> bool {
        let level: u8 = self.security_level.parse().unwrap_or(0);
        level >= required_level(acr_values)
            && acr_values
                .iter()
                .filter_map(|v| v.strip_prefix("idp:"))
                .all(|idp| idp == self.idp)
    }

    /// Identity claims for an access token, each only when its scope was granted; plus `idp`,
    /// `amr`, `auth_time` and `sid`, which describe the login itself.
    pub fn access_token_claims(&self, scopes: &[String]) -> Map<String, Value> {
        let mut out = self.scoped_claims(scopes);
        out.insert("idp".into(), json!(self.idp));
        out.insert("amr".into(), json!(self.amr));
        out.insert("auth_time".into(), json!(self.auth_time));
        out.insert("sid".into(), json!(self.sid));
        out
    }

    /// The claims released by `scopes` (ID token, userinfo and access token share these).
    pub fn scoped_claims(&self, scopes: &[String]) -> Map<String, Value> {
        let has = |s: &str| scopes.iter().any(|x| x == s);
        let mut out = Map::new();
        if has(scope::PID) {
            out.insert(c::PID.into(), json!(self.person.pid));
        }
        if has(scope::PID_PSEUDONYM) {
            out.insert(c::PID_PSEUDONYM.into(), json!(self.pseudonym));
        }
        if has(scope::SECURITY_LEVEL) {
            out.insert(c::SECURITY_LEVEL.into(), json!(self.security_level));
        }
        if has(scope::ASSURANCE_LEVEL) {
            out.insert(c::ASSURANCE_LEVEL.into(), json!(self.assurance_level));
        }
        if has(scope::NETWORK) {
            out.insert(c::NETWORK.into(), json!(self.network));
        }
        if let (true, Some(hpr)) = (has(scope::HPR_NUMBER), &self.person.hpr_number) {
            out.insert(c::HPR_NUMBER.into(), json!(hpr));
        }
        if has(scope::PROFILE) {
            out.insert("name".into(), json!(self.person.full_name()));
            out.insert("given_name".into(), json!(self.person.given_name));
            out.insert(
                "middle_name".into(),
                json!(self.person.middle_name.clone().unwrap_or_default()),
            );
            out.insert("family_name".into(), json!(self.person.family_name));
        }
        out
    }
}

/// The security level `acr_values` ask for: `Level4`/`High` 4, `Level3`/`Substantial` 3,
/// else 0.
pub fn required_level(acr_values: &[String]) -> u8 {
    acr_values
        .iter()
        .map(|v| match v.as_str() {
            "Level4" | "High" | "high" => 4,
            "Level3" | "Substantial" | "substantial" => 3,
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

/// Whether `pid` is a well-formed Norwegian national identity number: eleven digits whose two
/// mod-11 check digits are right (fødselsnummer, D-number and synthetic test numbers alike).
pub fn is_national_id(pid: &str) -> bool {
    let digits: Vec<u32> = pid.chars().filter_map(|ch| ch.to_digit(10)).collect();
    if pid.len() != 11 || digits.len() != 11 {
        return false;
    }
    let check = |weights: &[u32]| -> Option<u32> {
        let sum: u32 = weights.iter().zip(&digits).map(|(w, d)| w * d).sum();
        match 11 - sum % 11 {
            11 => Some(0),
            10 => None,
            k => Some(k),
        }
    };
    // Day (+40 for D-numbers) and month (+40 or +80 for synthetic test numbers) must be a date.
    let two = |i: usize| {
        digits
            .get(i)
            .zip(digits.get(i + 1))
            .map(|(a, b)| a * 10 + b)
            .unwrap_or(0)
    };
    let day = match two(0) {
        d @ 41..=71 => d - 40,
        d => d,
    };
    let month = match two(2) {
        m @ 81..=92 => m - 80,
        m @ 41..=52 => m - 40,
        m => m,
    };
    if !(1..=31).contains(&day) || !(1..=12).contains(&month) {
        return false;
    }
    let k1 = check(&[3, 7, 6, 1, 8, 9, 4, 5, 2]);
    let k2 = check(&[5, 4, 3, 2, 7, 6, 5, 4, 3, 2]);
    k1 == digits.get(9).copied() && k2 == digits.get(10).copied()
}

/// A stable, made-up name for a well-formed national id that is not in the register.
pub fn generated_person(pid: &str) -> Person {
    const GIVEN: [&str; 8] = [
        "Kari", "Ola", "Ingrid", "Lars", "Sigrid", "Per", "Astrid", "Nils",
    ];
    const FAMILY: [&str; 8] = [
        "Nordmann", "Hansen", "Johansen", "Olsen", "Larsen", "Berg", "Dahl", "Lie",
    ];
    let n: usize = pid.bytes().map(usize::from).sum();
    Person {
        pid: pid.to_owned(),
        given_name: GIVEN
            .get(n % GIVEN.len())
            .copied()
            .unwrap_or("Kari")
            .to_owned(),
        middle_name: None,
        family_name: FAMILY
            .get((n / 8) % FAMILY.len())
            .copied()
            .unwrap_or("Nordmann")
            .to_owned(),
        hpr_number: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_ids() {
        // HelseID's synthetic test person and a few made-up valid and invalid numbers.
        assert!(is_national_id("06828399789"));
        assert!(!is_national_id("06828399788"));
        assert!(!is_national_id("0682839978"));
        assert!(!is_national_id("0682839978a"));
        assert!(!is_national_id("068283997890"));
        assert!(
            !is_national_id("00000000000"),
            "check digits right, but no date"
        );
    }

    fn login() -> Login {
        Login {
            person: Person {
                pid: "06828399789".into(),
                given_name: "Kvart".into(),
                middle_name: None,
                family_name: "Grevling".into(),
                hpr_number: Some("431001110".into()),
            },
            pseudonym: "p".into(),
            idp: "testidp-oidc".into(),
            amr: vec!["pwd".into()],
            security_level: "4".into(),
            assurance_level: "high".into(),
            network: "internett".into(),
            auth_time: 1,
            sid: "s".into(),
        }
    }

    #[test]
    fn claims_follow_scopes() {
        let l = login();
        let none = l.scoped_claims(&["openid".into()]);
        assert!(none.is_empty());
        let all: Vec<String> = [
            scope::PID,
            scope::SECURITY_LEVEL,
            scope::HPR_NUMBER,
            scope::PROFILE,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = l.scoped_claims(&all);
        assert_eq!(c[c::PID], "06828399789");
        assert_eq!(c[c::SECURITY_LEVEL], "4");
        assert_eq!(c[c::HPR_NUMBER], "431001110");
        assert_eq!(c["name"], "Kvart Grevling");
        assert!(c.get(c::ASSURANCE_LEVEL).is_none());
    }

    #[test]
    fn acr_values() {
        let l = login();
        assert!(l.satisfies(&["Level4".into(), "idp:testidp-oidc".into()]));
        assert!(!l.satisfies(&["idp:idporten-oidc".into()]));
        let mut low = login();
        low.security_level = "3".into();
        assert!(!low.satisfies(&["Level4".into()]));
        assert!(low.satisfies(&["Level3".into()]));
    }
}
