//! Which organization a request acts for (HELSEID.md §7): the structured claim
//! `helseid_authorization` in a client assertion's `assertion_details` (or, for compatibility,
//! `authorization_details`; both at once is an error) or in a request object's
//! `authorization_details`, checked against the client's registration and, for multi-tenant
//! clients, against the customer's delegation to the supplier. Also the SFM journal id.

use crate::{Client, OAuthError, Tenancy};
use serde_json::Value;

/// System of a single-tenant child organization (and its older spelling).
pub const SYSTEM_SINGLE: [&str; 2] = [
    "urn:oid:2.16.578.1.12.4.1.4.101",
    "urn:oid:2.16.578.1.12.4.1.2.101",
];
/// System of a multi-tenant `NO:ORGNR:<parent>:<child>` value.
pub const SYSTEM_MULTI: &str = "urn:oid:1.0.6523";
/// The `nhn:sfm:journal-id` structured claim type and token claim name.
pub const SFM_JOURNAL_ID: &str = "nhn:sfm:journal-id";

/// The organizations a token states.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrgSelection {
    /// `orgnr_parent`.
    pub parent: String,
    /// `orgnr_child`.
    pub child: Option<String>,
    /// `orgnr_supplier` (multi-tenant clients).
    pub supplier: Option<String>,
    /// `nhn:sfm:journal-id`.
    pub journal_id: Option<String>,
}

/// The structured claims of a client assertion: `assertion_details` or `authorization_details`.
pub fn from_assertion(
    claims: &serde_json::Map<String, Value>,
) -> Result<Option<&Value>, OAuthError> {
    match (
        claims.get("assertion_details"),
        claims.get("authorization_details"),
    ) {
        (Some(_), Some(_)) => Err(OAuthError::invalid_request(
            "the client assertion carries both assertion_details and authorization_details: send one",
        )),
        (a, b) => Ok(a.or(b)),
    }
}

/// Resolves the organizations for `client` from `details` (none: the client's own).
/// `delegated(from, to)` says whether customer `from` delegated to supplier `to`.
pub fn select(
    client: &Client,
    details: Option<&Value>,
    delegated: &dyn Fn(&str, &str) -> bool,
) -> Result<OrgSelection, OAuthError> {
    let items: Vec<&Value> = match details {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        Some(_) => {
            return Err(OAuthError::invalid_request(
                "structured claims must be an object or an array of objects",
            ));
        }
    };
    let mut org: Option<(String, Option<String>)> = None;
    let mut journal_id = None;
    for item in items {
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "helseid_authorization" => {
                if org.is_some() {
                    return Err(OAuthError::invalid_request(
                        "helseid_authorization is given twice",
                    ));
                }
                org = Some(organization(client, item, delegated)?);
            }
            SFM_JOURNAL_ID => {
                let id = item
                    .get("value")
                    .and_then(|v| v.get("journal_id"))
                    .and_then(Value::as_str);
                match id.filter(|id| is_uuid(id)) {
                    Some(id) if journal_id.is_none() => journal_id = Some(id.to_owned()),
                    Some(_) => {
                        return Err(OAuthError::invalid_request(
                            "nhn:sfm:journal-id is given twice",
                        ));
                    }
                    None => {
                        return Err(OAuthError::invalid_request(
                            "nhn:sfm:journal-id needs value.journal_id, a UUID",
                        ));
                    }
                }
            }
            "" => {
                return Err(OAuthError::invalid_request(
                    "a structured claim has no type",
                ));
            }
            other => {
                return Err(OAuthError::invalid_request(format!(
                    "unknown structured claim type {other}"
                )));
            }
        }
    }
    let (parent, child) = org.unwrap_or_else(|| (client.organization.clone(), None));
    let supplier = match &client.tenancy {
        Tenancy::Single => None,
        Tenancy::Multi { supplier } => Some(supplier.clone()),
    };
    Ok(OrgSelection {
        parent,
        child,
        supplier,
        journal_id,
    })
}

/// One `helseid_authorization`: `practitioner_role.organization.identifier`.
fn organization(
    client: &Client,
    item: &Value,
    delegated: &dyn Fn(&str, &str) -> bool,
) -> Result<(String, Option<String>), OAuthError> {
    let id = item
        .get("practitioner_role")
        .and_then(|r| r.get("organization"))
        .and_then(|o| o.get("identifier"))
        .ok_or_else(|| {
            OAuthError::invalid_request(
                "helseid_authorization needs practitioner_role.organization.identifier",
            )
        })?;
    let field = |n: &str| id.get(n).and_then(Value::as_str);
    if field("type").is_some_and(|t| t != "ENH") {
        return Err(OAuthError::invalid_request(
            "organization identifier type must be ENH",
        ));
    }
    let system = field("system")
        .ok_or_else(|| OAuthError::invalid_request("organization identifier needs a system"))?;
    let value = field("value")
        .ok_or_else(|| OAuthError::invalid_request("organization identifier needs a value"))?;
    match &client.tenancy {
        Tenancy::Single => {
            if !SYSTEM_SINGLE.contains(&system) {
                return Err(OAuthError::invalid_request(format!(
                    "a single-tenant client names its child organization with system {}",
                    SYSTEM_SINGLE[0]
                )));
            }
            if !is_orgnr(value) {
                return Err(OAuthError::invalid_request(format!(
                    "{value} is not a nine-digit organization number"
                )));
            }
            if !client.child_organizations.iter().any(|c| c == value) {
                return Err(OAuthError::invalid_request(format!(
                    "child organization {value} is not registered for this client"
                )));
            }
            Ok((client.organization.clone(), Some(value.to_owned())))
        }
        Tenancy::Multi { supplier } => {
            if system != SYSTEM_MULTI {
                return Err(OAuthError::invalid_request(format!(
                    "a multi-tenant client names the organization with system {SYSTEM_MULTI} and value NO:ORGNR:<parent>:<child>"
                )));
            }
            let rest = value.strip_prefix("NO:ORGNR:").ok_or_else(|| {
                OAuthError::invalid_request(format!("{value} is not NO:ORGNR:<parent>:<child>"))
            })?;
            // HELSEID.md §7.2: with no child the value still ends in a colon.
            let (parent, child) = rest
                .split_once(':')
                .ok_or_else(|| OAuthError::invalid_request(format!("{value} is not NO:ORGNR:<parent>:<child> (the child may be empty, the colon may not)")))?;
            if !is_orgnr(parent) || !(child.is_empty() || is_orgnr(child)) {
                return Err(OAuthError::invalid_request(format!(
                    "{value} is not NO:ORGNR:<parent>:<child> with nine-digit numbers"
                )));
            }
            if parent != supplier && !delegated(parent, supplier) {
                return Err(OAuthError::invalid_request(format!(
                    "organization {parent} has not delegated to the supplier {supplier}"
                )));
            }
            Ok((
                parent.to_owned(),
                (!child.is_empty()).then(|| child.to_owned()),
            ))
        }
    }
}

fn is_orgnr(s: &str) -> bool {
    s.len() == 9 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use segl_jose::{Alg, SigningKey};
    use serde_json::json;

    fn client(tenancy: Tenancy) -> Client {
        let key = SigningKey::generate(Alg::ES256).unwrap();
        Client::new(
            "c".into(),
            "C".into(),
            "999977774".into(),
            vec!["999977776".into()],
            Default::default(),
            Default::default(),
            tenancy,
            false,
            &[key.public_jwk().clone()],
            &[Alg::ES256],
        )
        .unwrap()
    }

    fn org(system: &str, value: &str) -> Value {
        json!({"type": "helseid_authorization", "practitioner_role": {"organization": {"identifier": {"system": system, "type": "ENH", "value": value}}}})
    }

    const NEVER: &dyn Fn(&str, &str) -> bool = &|_, _| false;

    #[test]
    fn single_tenant_child_organizations() {
        let c = client(Tenancy::Single);
        let s = select(&c, None, NEVER).unwrap();
        assert_eq!((s.parent.as_str(), s.child.as_deref()), ("999977774", None));
        for system in SYSTEM_SINGLE {
            let s = select(&c, Some(&org(system, "999977776")), NEVER).unwrap();
            assert_eq!(s.child.as_deref(), Some("999977776"));
        }
        let arr = json!([org(SYSTEM_SINGLE[0], "999977776")]);
        assert!(select(&c, Some(&arr), NEVER).is_ok());
        for bad in [
            org(SYSTEM_SINGLE[0], "999977775"),
            org(SYSTEM_SINGLE[0], "12345"),
            org(SYSTEM_MULTI, "NO:ORGNR:999977774:"),
            json!({"type": "other"}),
            json!("x"),
            json!([
                org(SYSTEM_SINGLE[0], "999977776"),
                org(SYSTEM_SINGLE[0], "999977776")
            ]),
        ] {
            assert!(select(&c, Some(&bad), NEVER).is_err(), "{bad}");
        }
    }

    #[test]
    fn multi_tenant_needs_a_delegation() {
        let c = client(Tenancy::Multi {
            supplier: "313745392".into(),
        });
        let delegated: &dyn Fn(&str, &str) -> bool =
            &|from, to| from == "999977774" && to == "313745392";
        let s = select(&c, None, NEVER).unwrap();
        assert_eq!(
            (s.parent.as_str(), s.supplier.as_deref()),
            ("999977774", Some("313745392"))
        );
        let s = select(
            &c,
            Some(&org(SYSTEM_MULTI, "NO:ORGNR:999977774:999977776")),
            delegated,
        )
        .unwrap();
        assert_eq!(
            (s.parent.as_str(), s.child.as_deref()),
            ("999977774", Some("999977776"))
        );
        let s = select(
            &c,
            Some(&org(SYSTEM_MULTI, "NO:ORGNR:999977774:")),
            delegated,
        )
        .unwrap();
        assert_eq!(s.child, None);
        assert!(
            select(&c, Some(&org(SYSTEM_MULTI, "NO:ORGNR:999977774:")), NEVER)
                .unwrap_err()
                .description
                .contains("delegated")
        );
        for bad in ["999977774", "NO:ORGNR:9999:", "NO:ORGNR:999977774:12"] {
            assert!(
                select(&c, Some(&org(SYSTEM_MULTI, bad)), delegated).is_err(),
                "{bad}"
            );
        }
        assert!(select(&c, Some(&org(SYSTEM_SINGLE[0], "999977776")), delegated).is_err());
    }

    #[test]
    fn journal_id_and_container_names() {
        let c = client(Tenancy::Single);
        let j = json!({"type": "nhn:sfm:journal-id", "value": {"journal_id": "5c0d1d5e-8f54-4c9e-9d4b-3a7f2b6c1e90"}});
        assert_eq!(
            select(&c, Some(&j), NEVER).unwrap().journal_id.as_deref(),
            Some("5c0d1d5e-8f54-4c9e-9d4b-3a7f2b6c1e90")
        );
        let bad = json!({"type": "nhn:sfm:journal-id", "value": {"journal_id": "nope"}});
        assert!(select(&c, Some(&bad), NEVER).is_err());
        let both = json!({"assertion_details": [], "authorization_details": []});
        assert!(from_assertion(both.as_object().unwrap()).is_err());
        let one = json!({"authorization_details": [j]});
        assert!(from_assertion(one.as_object().unwrap()).unwrap().is_some());
    }
}
