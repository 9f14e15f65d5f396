//! Upstream identity providers (`[[idp]]`): which of them can serve an authorization request,
//! what an upstream `acr` means in HelseID's levels, and who the person is by the upstream's
//! ID token claims. Pure: the HTTP flow to the upstream is the server's.

use crate::identity::{Person, required_level};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The test IdP's name (`idp` claim and `acr_values=idp:testidp-oidc`).
pub const TEST_IDP: &str = "testidp-oidc";

/// A security level in HelseID's two vocabularies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    /// `"4"`, `"3"`, …
    pub security_level: String,
    /// `high`, `substantial`, …
    pub assurance_level: String,
}

impl Level {
    /// `"4"`/`high`.
    pub fn high() -> Level {
        Level {
            security_level: "4".into(),
            assurance_level: "high".into(),
        }
    }

    /// `"3"`/`substantial`.
    pub fn substantial() -> Level {
        Level {
            security_level: "3".into(),
            assurance_level: "substantial".into(),
        }
    }

    /// The numeric level (0 when not a number).
    pub fn number(&self) -> u8 {
        self.security_level.parse().unwrap_or(0)
    }
}

/// The `acr_map` used when an `[[idp]]` sets none: ID-porten's values and the older
/// `Level4`/`Level3`.
pub fn default_acr_map() -> BTreeMap<String, Level> {
    BTreeMap::from([
        ("idporten-loa-high".to_owned(), Level::high()),
        ("idporten-loa-substantial".to_owned(), Level::substantial()),
        ("Level4".to_owned(), Level::high()),
        ("Level3".to_owned(), Level::substantial()),
    ])
}

/// Which upstream claims carry the person (`[idp.claims]`: our name → the upstream's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    /// The national identity number.
    pub pid: String,
    /// The full name (used when given and family names are absent).
    pub name: String,
    /// Given name.
    pub given_name: String,
    /// Middle name.
    pub middle_name: String,
    /// Family name.
    pub family_name: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        ClaimNames {
            pid: "pid".into(),
            name: "name".into(),
            given_name: "given_name".into(),
            middle_name: "middle_name".into(),
            family_name: "family_name".into(),
        }
    }
}

impl ClaimNames {
    /// The names `[idp.claims]` may set.
    pub const KEYS: [&'static str; 5] = ["pid", "name", "given_name", "middle_name", "family_name"];

    /// Sets one mapping; `false` if `ours` is not one of [`ClaimNames::KEYS`].
    pub fn set(&mut self, ours: &str, theirs: &str) -> bool {
        let slot = match ours {
            "pid" => &mut self.pid,
            "name" => &mut self.name,
            "given_name" => &mut self.given_name,
            "middle_name" => &mut self.middle_name,
            "family_name" => &mut self.family_name,
            _ => return false,
        };
        theirs.clone_into(slot);
        true
    }
}

/// What the decisions need to know of one upstream IdP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `name`: in `acr_values=idp:<name>` and the `idp` claim.
    pub name: String,
    /// The name shown on the choice page.
    pub display_name: String,
    /// The `acr_values` asked for at the upstream.
    pub acr_values: Vec<String>,
    /// Upstream `acr` → our levels.
    pub acr_map: BTreeMap<String, Level>,
    /// Where the person's claims are.
    pub claims: ClaimNames,
}

impl Upstream {
    /// The highest level a login through this upstream can have: the best mapped level among
    /// the `acr_values` asked for, or in the whole map when none are asked for.
    pub fn max_level(&self) -> u8 {
        self.acr_map
            .iter()
            .filter(|(acr, _)| self.acr_values.is_empty() || self.acr_values.contains(acr))
            .map(|(_, l)| l.number())
            .max()
            .unwrap_or(0)
    }
}

/// An identity provider that can serve a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice<'a> {
    /// The built-in test IdP.
    TestIdp,
    /// An upstream OpenID provider.
    Upstream(&'a Upstream),
}

impl Choice<'_> {
    /// The IdP's name.
    pub fn name(&self) -> &str {
        match self {
            Choice::TestIdp => TEST_IDP,
            Choice::Upstream(u) => &u.name,
        }
    }

    /// The name to show.
    pub fn display_name(&self) -> &str {
        match self {
            Choice::TestIdp => "Test IdP",
            Choice::Upstream(u) => &u.display_name,
        }
    }
}

/// The IdPs that satisfy `acr_values`: the one named by `idp:<name>` if any (when it can reach
/// the level asked for), else every IdP that can reach that level. The test IdP logs in at
/// level 4.
pub fn choices<'a>(
    upstreams: impl IntoIterator<Item = &'a Upstream>,
    test_idp: bool,
    acr_values: &[String],
) -> Vec<Choice<'a>> {
    let level = required_level(acr_values);
    let named = acr_values.iter().find_map(|v| v.strip_prefix("idp:"));
    let mut out = Vec::new();
    if test_idp && named.is_none_or(|n| n == TEST_IDP) {
        out.push(Choice::TestIdp);
    }
    out.extend(
        upstreams
            .into_iter()
            .filter(|u| named.is_none_or(|n| n == u.name) && u.max_level() >= level)
            .map(Choice::Upstream),
    );
    out
}

/// Why an upstream login is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The ID token has no `acr`, or one the `acr_map` does not know.
    #[error("the identity provider's security level ({0}) is not one this server knows")]
    UnknownAcr(String),
    /// The level is below what the client asked for.
    #[error(
        "the login at the identity provider was at security level {got} ({acr}); this service requires level {need}"
    )]
    LevelTooLow {
        /// The upstream `acr`.
        acr: String,
        /// The mapped level.
        got: String,
        /// The level asked for.
        need: u8,
    },
    /// No national identity number in the expected claim.
    #[error("the identity provider did not state a national identity number (claim {0})")]
    NoPid(String),
}

/// A person logged in upstream, mapped to our vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamLogin {
    /// The person (names from the upstream; the HPR number is the register's).
    pub person: Person,
    /// The level.
    pub level: Level,
    /// `amr` as the upstream stated it.
    pub amr: Vec<String>,
    /// When the person authenticated (the upstream's `auth_time`), if stated.
    pub auth_time: Option<i64>,
}

/// Maps a verified upstream ID token's claims to a login, refusing a level below `required`
/// (from the client's `acr_values`). `register` finds a registered person by pid (for the
/// HPR number, and names the upstream did not give).
pub fn map_login(
    upstream: &Upstream,
    claims: &Map<String, Value>,
    required: u8,
    register: impl Fn(&str) -> Option<Person>,
) -> Result<UpstreamLogin, Refusal> {
    let acr = claims.get("acr").and_then(Value::as_str).unwrap_or("");
    let level = upstream
        .acr_map
        .get(acr)
        .ok_or_else(|| Refusal::UnknownAcr(if acr.is_empty() { "none" } else { acr }.into()))?;
    if level.number() < required {
        return Err(Refusal::LevelTooLow {
            acr: acr.into(),
            got: level.security_level.clone(),
            need: required,
        });
    }
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let pid = text(&upstream.claims.pid)
        .filter(|p| p.len() == 11 && p.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| Refusal::NoPid(upstream.claims.pid.clone()))?;
    let registered = register(&pid);
    let (mut given, mut family) = (
        text(&upstream.claims.given_name),
        text(&upstream.claims.family_name),
    );
    if let (None, None, Some(full)) = (&given, &family, text(&upstream.claims.name)) {
        // Only a full name: the last word is the family name.
        match full.rsplit_once(' ') {
            Some((g, f)) => (given, family) = (Some(g.to_owned()), Some(f.to_owned())),
            None => family = Some(full),
        }
    }
    let middle = text(&upstream.claims.middle_name);
    let person = match registered {
        Some(r) => Person {
            pid,
            given_name: given.unwrap_or(r.given_name),
            middle_name: middle.or(r.middle_name),
            family_name: family.unwrap_or(r.family_name),
            hpr_number: r.hpr_number,
        },
        None => Person {
            pid,
            given_name: given.unwrap_or_default(),
            middle_name: middle,
            family_name: family.unwrap_or_default(),
            hpr_number: None,
        },
    };
    let amr = match claims.get("amr") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    Ok(UpstreamLogin {
        person,
        level: level.clone(),
        amr,
        auth_time: claims.get("auth_time").and_then(Value::as_i64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn upstream(name: &str, acr_values: &[&str]) -> Upstream {
        Upstream {
            name: name.into(),
            display_name: name.to_uppercase(),
            acr_values: acr_values.iter().map(|s| s.to_string()).collect(),
            acr_map: default_acr_map(),
            claims: ClaimNames::default(),
        }
    }

    fn acr(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn choices_follow_level_and_idp() {
        let ups = [
            upstream("idporten-oidc", &["idporten-loa-high"]),
            upstream("minid", &["idporten-loa-substantial"]),
        ];
        let names = |c: Vec<Choice<'_>>| c.iter().map(|c| c.name().to_owned()).collect::<Vec<_>>();
        assert_eq!(
            names(choices(&ups, true, &[])),
            ["testidp-oidc", "idporten-oidc", "minid"]
        );
        assert_eq!(
            names(choices(&ups, true, &acr(&["Level4"]))),
            ["testidp-oidc", "idporten-oidc"]
        );
        assert_eq!(
            names(choices(&ups, false, &acr(&["High"]))),
            ["idporten-oidc"]
        );
        assert_eq!(names(choices(&ups, true, &acr(&["idp:minid"]))), ["minid"]);
        // idp: names one, but it cannot reach the level asked for.
        assert!(choices(&ups, true, &acr(&["idp:minid", "Level4"])).is_empty());
        assert_eq!(
            names(choices(&ups, true, &acr(&["idp:testidp-oidc"]))),
            ["testidp-oidc"]
        );
        assert!(choices(&ups, false, &acr(&["idp:nope"])).is_empty());
        // No acr_values asked for at the upstream: the whole map counts.
        assert_eq!(upstream("x", &[]).max_level(), 4);
    }

    #[test]
    fn logins_map_levels_names_and_the_register() {
        let up = upstream("idporten-oidc", &["idporten-loa-high"]);
        let claims = json!({"acr": "idporten-loa-high", "pid": "06828399789",
            "given_name": "Kvart", "family_name": "Grevling", "amr": ["BankID"], "auth_time": 1700000000});
        let l = map_login(&up, claims.as_object().unwrap(), 4, |_| None).unwrap();
        assert_eq!(l.level, Level::high());
        assert_eq!(l.person.full_name(), "Kvart Grevling");
        assert_eq!(l.amr, ["BankID"]);
        assert_eq!(l.auth_time, Some(1_700_000_000));
        // The register adds the HPR number; upstream names win.
        let registered = Person {
            pid: "06828399789".into(),
            given_name: "K".into(),
            middle_name: Some("M".into()),
            family_name: "G".into(),
            hpr_number: Some("431001110".into()),
        };
        let l = map_login(&up, claims.as_object().unwrap(), 4, |p| {
            (p == "06828399789").then(|| registered.clone())
        })
        .unwrap();
        assert_eq!(l.person.hpr_number.as_deref(), Some("431001110"));
        assert_eq!(l.person.full_name(), "Kvart M Grevling");
        // Only `name`.
        let only_name = json!({"acr": "Level4", "pid": "06828399789", "name": "Kari Nordmann"});
        let l = map_login(&up, only_name.as_object().unwrap(), 4, |_| None).unwrap();
        assert_eq!(
            (l.person.given_name.as_str(), l.person.family_name.as_str()),
            ("Kari", "Nordmann")
        );
    }

    #[test]
    fn refusals() {
        let mut up = upstream("idporten-oidc", &[]);
        let c = |v: Value| v.as_object().unwrap().clone();
        let low = c(json!({"acr": "idporten-loa-substantial", "pid": "06828399789"}));
        assert_eq!(
            map_login(&up, &low, 4, |_| None),
            Err(Refusal::LevelTooLow {
                acr: "idporten-loa-substantial".into(),
                got: "3".into(),
                need: 4
            })
        );
        assert!(map_login(&up, &low, 3, |_| None).is_ok());
        assert_eq!(
            map_login(&up, &c(json!({"pid": "06828399789"})), 0, |_| None),
            Err(Refusal::UnknownAcr("none".into()))
        );
        assert_eq!(
            map_login(
                &up,
                &c(json!({"acr": "eidas-low", "pid": "06828399789"})),
                0,
                |_| None
            ),
            Err(Refusal::UnknownAcr("eidas-low".into()))
        );
        for pid in [json!("123"), json!(6828399789u64), json!("0682839978x")] {
            assert_eq!(
                map_login(&up, &c(json!({"acr": "Level4", "pid": pid})), 0, |_| None),
                Err(Refusal::NoPid("pid".into()))
            );
        }
        // A mapped claim name.
        assert!(up.claims.set("pid", "helseid://claims/identity/pid"));
        assert!(!up.claims.set("hpr", "x"));
        let mapped = c(json!({"acr": "Level4", "helseid://claims/identity/pid": "06828399789"}));
        assert_eq!(
            map_login(&up, &mapped, 4, |_| None).unwrap().person.pid,
            "06828399789"
        );
    }
}
