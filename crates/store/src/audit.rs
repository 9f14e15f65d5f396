//! The audit log's rows: events with their place in a hash chain, the chain head, and signed
//! checkpoints. The store keeps and serializes; it does not define the chain hash (the caller
//! passes it as an [`AuditLink`], which segl-core's audit module implements) nor what an event
//! means.

use crate::Error;

/// One audit event as stored: the columns of `audit_events` without its place in the chain.
/// Built by the caller (from segl-core's `audit::Event`); see there for what each field means.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub struct AuditEvent {
    /// UTC unix seconds.
    pub time: i64,
    /// The event name, e.g. `token_issued`.
    pub event: String,
    pub client_id: Option<String>,
    pub client_name: Option<String>,
    pub orgnr_parent: Option<String>,
    pub orgnr_child: Option<String>,
    pub orgnr_supplier: Option<String>,
    pub pid: Option<String>,
    pub actor_chain: Vec<String>,
    pub audience: Option<String>,
    pub scopes: Vec<String>,
    pub jti: Option<String>,
    /// `success` or `failure`.
    pub outcome: String,
    pub error: Option<String>,
    pub source: Option<String>,
    pub request_id: Option<String>,
    pub detail: Option<String>,
}

/// An audit event read back with its place in the chain (the hashes exactly as stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Its sequence number (the first event of a store is 1).
    pub seq: i64,
    /// The event.
    pub event: AuditEvent,
    /// The hash of the event before it (32 zero bytes before the first).
    pub prev_hash: Vec<u8>,
    /// Its chain hash.
    pub hash: Vec<u8>,
}

/// The chain head: the sequence number and hash of the last event appended (0 and 32 zero
/// bytes while the log is empty). Kept in its own row, updated in every append's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    /// The last sequence number.
    pub seq: i64,
    /// The last hash.
    pub hash: Vec<u8>,
}

/// Which events [`crate::Store::query_audit`] returns: those meeting every condition given,
/// with `seq > after_seq`, in sequence order, at most `limit` of them (page with `after_seq` =
/// the last `seq` returned).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// The person's national identity number.
    pub pid: Option<String>,
    /// The client.
    pub client_id: Option<String>,
    /// An organization number: `orgnr_parent`, `orgnr_child` or `orgnr_supplier`.
    pub org: Option<String>,
    /// From this time on (unix seconds, inclusive).
    pub from: Option<i64>,
    /// Up to this time (unix seconds, inclusive).
    pub to: Option<i64>,
    /// Only events after this sequence number.
    pub after_seq: i64,
    /// The most events returned.
    pub limit: u32,
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheckpoint {
    /// The sequence number it pins.
    pub seq: i64,
    /// When it was made (unix seconds).
    pub time: i64,
    /// The signing key's id.
    pub kid: String,
    /// The signing key's public JWK (JSON text).
    pub public_jwk: String,
    /// The compact JWS.
    pub jws: String,
}

/// The chain hash of `event` appended at `seq` after the hash `prev`: called by
/// [`crate::Store::append_audit`] for each event, in order, inside its transaction.
pub type AuditLink<'a> = dyn Fn(&[u8; 32], i64, &AuditEvent) -> [u8; 32] + Sync + 'a;

/// The audit events a group commit appends only as its replay records allow: given the
/// verdicts of [`crate::Store::commit_group`]'s `jtis` (in their order), the events to append
/// after the unconditional ones, in the same transaction. Called inside the transaction, after
/// the `jti` inserts, and again if the transaction is retried, so it must be pure.
pub type AuditGate<'a> = dyn Fn(&[bool]) -> Vec<AuditEvent> + Sync + 'a;

/// The longest text the store accepts in one audit field or list item, in bytes.
pub const MAX_AUDIT_TEXT: usize = 4096;
/// The most items in one audit list.
pub const MAX_AUDIT_ITEMS: usize = 256;

/// What joins list items in a column.
const SEPARATOR: char = '\u{1f}';

/// Checks that the store can keep `event` exactly (what [`crate::Store::append_audit`] checks
/// for every event before writing any): names non-empty; no text with NUL (PostgreSQL cannot
/// store it) or over [`MAX_AUDIT_TEXT`] bytes; list items non-empty and without U+001F, at
/// most [`MAX_AUDIT_ITEMS`] of them. [`Error::Corrupt`] otherwise.
pub fn check_audit_event(event: &AuditEvent) -> Result<(), Error> {
    let bad = |what: &str| Err(Error::Corrupt(format!("audit event: {what}")));
    if event.event.is_empty() || event.outcome.is_empty() {
        return bad("the event name and outcome must not be empty");
    }
    let texts = [
        Some(&event.event),
        event.client_id.as_ref(),
        event.client_name.as_ref(),
        event.orgnr_parent.as_ref(),
        event.orgnr_child.as_ref(),
        event.orgnr_supplier.as_ref(),
        event.pid.as_ref(),
        event.audience.as_ref(),
        event.jti.as_ref(),
        Some(&event.outcome),
        event.error.as_ref(),
        event.source.as_ref(),
        event.request_id.as_ref(),
        event.detail.as_ref(),
    ];
    for text in texts.into_iter().flatten() {
        if text.len() > MAX_AUDIT_TEXT || text.contains('\0') {
            return bad("a field is too long or contains NUL");
        }
    }
    for list in [&event.actor_chain, &event.scopes] {
        if list.len() > MAX_AUDIT_ITEMS {
            return bad("a list has too many items");
        }
        for item in list {
            if item.is_empty() || item.len() > MAX_AUDIT_TEXT || item.contains(['\0', SEPARATOR]) {
                return bad("a list item is empty, too long, or contains NUL or U+001F");
            }
        }
    }
    Ok(())
}

/// A list as its column text.
pub(crate) fn join(list: &[String]) -> String {
    let mut out = String::new();
    for (i, item) in list.iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        out.push_str(item);
    }
    out
}

/// A list from its column text (the inverse of [`join`] for lists [`check_audit_event`]
/// accepts).
pub(crate) fn split(text: &str) -> Vec<String> {
    if text.is_empty() {
        Vec::new()
    } else {
        text.split(SEPARATOR).map(str::to_owned).collect()
    }
}

/// The head hash as stored, which must be 32 bytes.
pub(crate) fn head_hash(hash: &[u8]) -> Result<[u8; 32], Error> {
    hash.try_into().map_err(|_| {
        Error::Corrupt(format!(
            "the audit chain head's hash is {} bytes, not 32",
            hash.len()
        ))
    })
}

/// The columns of `audit_events`, in the order of [`AuditRecord`]'s decoding and of the
/// `INSERT`s' parameters (`seq` first, `prev_hash` and `hash` last).
pub(crate) const COLUMNS: &str = "seq, time, event, client_id, client_name, orgnr_parent, \
     orgnr_child, orgnr_supplier, pid, actor_chain, audience, scopes, jti, outcome, error, \
     source, request_id, detail, prev_hash, hash";

/// The conditions of `query` as SQL over [`COLUMNS`] (`WHERE …` without `ORDER BY`/`LIMIT`),
/// with `placeholder(n)` for the n-th parameter (1-based), and the parameters in order. Only
/// constant fragments enter the text; every value is a parameter.
pub(crate) fn query_sql(
    query: &AuditQuery,
    placeholder: fn(usize) -> String,
) -> (String, Vec<QueryParam>) {
    let mut sql = String::new();
    let mut params = Vec::new();
    let next = |params: &mut Vec<QueryParam>, p: QueryParam| {
        params.push(p);
        placeholder(params.len())
    };
    sql.push_str(&format!(
        "seq > {}",
        next(&mut params, QueryParam::Int(query.after_seq))
    ));
    if let Some(pid) = &query.pid {
        let p = next(&mut params, QueryParam::Text(pid.clone()));
        sql.push_str(&format!(" AND pid = {p}"));
    }
    if let Some(client) = &query.client_id {
        let p = next(&mut params, QueryParam::Text(client.clone()));
        sql.push_str(&format!(" AND client_id = {p}"));
    }
    if let Some(org) = &query.org {
        let a = next(&mut params, QueryParam::Text(org.clone()));
        let b = next(&mut params, QueryParam::Text(org.clone()));
        let c = next(&mut params, QueryParam::Text(org.clone()));
        sql.push_str(&format!(
            " AND (orgnr_parent = {a} OR orgnr_child = {b} OR orgnr_supplier = {c})"
        ));
    }
    if let Some(from) = query.from {
        let p = next(&mut params, QueryParam::Int(from));
        sql.push_str(&format!(" AND time >= {p}"));
    }
    if let Some(to) = query.to {
        let p = next(&mut params, QueryParam::Int(to));
        sql.push_str(&format!(" AND time <= {p}"));
    }
    (sql, params)
}

/// One parameter of [`query_sql`].
#[derive(Debug, Clone)]
pub(crate) enum QueryParam {
    Int(i64),
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip() {
        for list in [
            vec![],
            vec!["a".to_owned()],
            vec![
                "nhn:sfm/api".to_owned(),
                "openid".to_owned(),
                "x y".to_owned(),
            ],
        ] {
            assert_eq!(split(&join(&list)), list);
        }
    }

    #[test]
    fn query_sql_binds_every_value() {
        let q = AuditQuery {
            pid: Some("p'; DROP TABLE x; --".into()),
            org: Some("999977774".into()),
            from: Some(5),
            after_seq: 7,
            limit: 10,
            ..AuditQuery::default()
        };
        let (sql, params) = query_sql(&q, |n| format!("${n}"));
        assert_eq!(
            sql,
            "seq > $1 AND pid = $2 AND (orgnr_parent = $3 OR orgnr_child = $4 OR orgnr_supplier = $5) AND time >= $6"
        );
        assert_eq!(params.len(), 6);
        assert!(!sql.contains("DROP"));
    }

    #[test]
    fn events_the_store_cannot_keep_are_refused() {
        let ok = AuditEvent {
            event: "login".into(),
            outcome: "success".into(),
            ..AuditEvent::default()
        };
        assert!(check_audit_event(&ok).is_ok());
        let cases = [
            AuditEvent {
                event: String::new(),
                ..ok.clone()
            },
            AuditEvent {
                client_id: Some("a\0".into()),
                ..ok.clone()
            },
            AuditEvent {
                detail: Some("x".repeat(MAX_AUDIT_TEXT + 1)),
                ..ok.clone()
            },
            AuditEvent {
                scopes: vec![String::new()],
                ..ok.clone()
            },
            AuditEvent {
                actor_chain: vec!["a\u{1f}b".into()],
                ..ok.clone()
            },
            AuditEvent {
                scopes: vec!["s".into(); MAX_AUDIT_ITEMS + 1],
                ..ok.clone()
            },
        ];
        for case in cases {
            assert!(
                matches!(check_audit_event(&case), Err(Error::Corrupt(_))),
                "{case:?}"
            );
        }
    }
}
