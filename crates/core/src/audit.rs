//! The audit log's event model and its hash chain (SECURITY.md, Normen: audit events).
//!
//! What this module owns: what an audit event says ([`Event`], built from the decisions the
//! core already made, never from a token, assertion, code, refresh token or key), its
//! canonical byte encoding, the chain hash
//! `hash_n = SHA-256(hash_{n-1} || canonical(event_n) || seq_n)` (genesis: 32 zero bytes,
//! `seq_n` as 8 bytes big-endian), the signed checkpoints that pin the chain at a sequence
//! number, and [`verify_chain`], which walks recorded events in sequence order and names the
//! first problem precisely.
//!
//! What it does not own: where events are stored and how concurrent writers are serialized
//! (the store), when events are written and awaited (the server), and reading a clock.

use crate::UnixTime;
use crate::grant::AccessTokenClaims;
use segl_jose::{SigningKey, UnverifiedJws, VerifyingKey};
use segl_proto::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The hash that precedes the first event of a chain.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// The `typ` of a signed checkpoint.
pub const CHECKPOINT_TYP: &str = "segl-audit-checkpoint+jwt";

/// The most characters kept of an identifier-like field (client id, organization, request id…).
const MAX_ID_CHARS: usize = 255;
/// The most characters kept of the free-text `detail`.
const MAX_DETAIL_CHARS: usize = 1000;

/// What happened. The recorded name is [`EventKind::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// An access token was issued (client_credentials or authorization_code).
    TokenIssued,
    /// A refresh token was used: a new access token and the rotated refresh token.
    TokenRefreshed,
    /// A token exchange (RFC 8693) issued a token to an actor.
    TokenExchange,
    /// A replaced refresh token was used again; its family is now revoked.
    RefreshReuse,
    /// An authorization code was redeemed a second time; what it issued is now revoked.
    CodeReuse,
    /// A client revoked a token (RFC 7009).
    Revocation,
    /// A person logged in at an identity provider.
    Login,
    /// A client assertion was refused (or replayed).
    ClientAuthenticationFailed,
    /// A token-signing key was added (rotation, or the first key of a store).
    KeyRotated,
    /// A delegation customer → supplier was added by an operator.
    DelegationAdded,
    /// A delegation was removed by an operator.
    DelegationRemoved,
    /// An authorization code was issued to a client (after a login, or from a session).
    CodeIssued,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 12] = [
        EventKind::TokenIssued,
        EventKind::TokenRefreshed,
        EventKind::TokenExchange,
        EventKind::RefreshReuse,
        EventKind::CodeReuse,
        EventKind::Revocation,
        EventKind::Login,
        EventKind::ClientAuthenticationFailed,
        EventKind::KeyRotated,
        EventKind::DelegationAdded,
        EventKind::DelegationRemoved,
        EventKind::CodeIssued,
    ];

    /// The recorded name, e.g. `token_issued`.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::TokenIssued => "token_issued",
            EventKind::TokenRefreshed => "token_refreshed",
            EventKind::TokenExchange => "token_exchange",
            EventKind::RefreshReuse => "refresh_reuse",
            EventKind::CodeReuse => "code_reuse",
            EventKind::Revocation => "revocation",
            EventKind::Login => "login",
            EventKind::ClientAuthenticationFailed => "client_authentication_failed",
            EventKind::KeyRotated => "key_rotated",
            EventKind::DelegationAdded => "delegation_added",
            EventKind::DelegationRemoved => "delegation_removed",
            EventKind::CodeIssued => "code_issued",
        }
    }
}

/// Whether what the event records succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// `success`.
    Success,
    /// `failure` (the event's `error` says why).
    Failure,
}

impl Outcome {
    /// The recorded name.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// One audit event as recorded. Built with the typed constructors below; the names of the
/// kind and outcome are kept as text so that an event read back (possibly written by a newer
/// version, possibly altered) is represented exactly as stored, and hashed as stored.
///
/// Never holds a token, assertion, code, refresh token or key: tokens are named by `jti`,
/// refresh-token families and keys by their ids in `detail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When (UTC unix seconds).
    pub time: i64,
    /// The [`EventKind::name`].
    pub event: String,
    /// The client that made the request (for a refused assertion: the `client_id` it claimed).
    pub client_id: Option<String>,
    /// The client's registered name.
    pub client_name: Option<String>,
    /// `orgnr_parent`: the organization the client acts for (a delegation's customer).
    pub orgnr_parent: Option<String>,
    /// `orgnr_child`: the sub-unit.
    pub orgnr_child: Option<String>,
    /// `orgnr_supplier`: a multi-tenant client's supplier (a delegation's supplier).
    pub orgnr_supplier: Option<String>,
    /// The person's national identity number, only when a person is involved.
    pub pid: Option<String>,
    /// For an exchange: the actors, the one that asked now first (the token's `act` chain).
    pub actor_chain: Vec<String>,
    /// The API audience of the issued token.
    pub audience: Option<String>,
    /// The granted scopes.
    pub scopes: Vec<String>,
    /// The issued (or revoked) token's `jti`.
    pub jti: Option<String>,
    /// The [`Outcome::name`].
    pub outcome: String,
    /// For a failure: the OAuth error code.
    pub error: Option<String>,
    /// The source address (the TCP peer) of the request.
    pub source: Option<String>,
    /// The request id (`x-request-id`), to find the request's log lines.
    pub request_id: Option<String>,
    /// More about the event, `key=value` pairs separated by spaces (grant, refresh family,
    /// key id, …).
    pub detail: Option<String>,
}

impl Event {
    /// An event of `kind` at `now` with nothing else filled in.
    pub fn new(kind: EventKind, outcome: Outcome, now: UnixTime) -> Event {
        Event {
            time: now.secs(),
            event: kind.name().to_owned(),
            client_id: None,
            client_name: None,
            orgnr_parent: None,
            orgnr_child: None,
            orgnr_supplier: None,
            pid: None,
            actor_chain: Vec::new(),
            audience: None,
            scopes: Vec::new(),
            jti: None,
            outcome: outcome.name().to_owned(),
            error: None,
            source: None,
            request_id: None,
            detail: None,
        }
    }

    /// A successful issuance of the access token `claims` (kind `TokenIssued`,
    /// `TokenRefreshed` or `TokenExchange`), with the person's `pid` when a person is involved.
    /// The actor chain is read from the token's `act` claim, outermost first.
    pub fn issued(
        kind: EventKind,
        now: UnixTime,
        claims: &AccessTokenClaims,
        pid: Option<&str>,
    ) -> Event {
        let mut event = Event::new(kind, Outcome::Success, now);
        event.client_id = Some(clean(&claims.client_id, MAX_ID_CHARS));
        event.client_name = Some(clean(&claims.client_name, MAX_ID_CHARS));
        event.orgnr_parent = Some(clean(&claims.orgnr_parent, MAX_ID_CHARS));
        event.orgnr_child = claims
            .orgnr_child
            .as_deref()
            .map(|o| clean(o, MAX_ID_CHARS));
        event.orgnr_supplier = claims
            .orgnr_supplier
            .as_deref()
            .map(|o| clean(o, MAX_ID_CHARS));
        event.pid = pid.map(|p| clean(p, MAX_ID_CHARS));
        event.actor_chain = actor_chain(claims.identity.get("act"));
        event.audience = Some(clean(&claims.aud, MAX_ID_CHARS));
        event.scopes = items(match &claims.scope {
            Value::String(s) => s.split(' ').map(str::to_owned).collect(),
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        });
        event.jti = Some(clean(&claims.jti, MAX_ID_CHARS));
        event
    }

    /// A refused request: `outcome` failure with the OAuth `error` code.
    pub fn refused(kind: EventKind, now: UnixTime, error: ErrorCode) -> Event {
        let mut event = Event::new(kind, Outcome::Failure, now);
        event.error = Some(error.as_str().to_owned());
        event
    }

    /// Sets the client. `client_id` may be unverified (a refused assertion's): every text
    /// field is bounded and stripped of control characters, here and in every setter.
    pub fn with_client(mut self, client_id: &str, client_name: Option<&str>) -> Event {
        self.client_id = Some(clean(client_id, MAX_ID_CHARS));
        self.client_name = client_name.map(|n| clean(n, MAX_ID_CHARS));
        self
    }

    /// Sets the organizations.
    pub fn with_orgs(
        mut self,
        parent: Option<&str>,
        child: Option<&str>,
        supplier: Option<&str>,
    ) -> Event {
        self.orgnr_parent = parent.map(|o| clean(o, MAX_ID_CHARS));
        self.orgnr_child = child.map(|o| clean(o, MAX_ID_CHARS));
        self.orgnr_supplier = supplier.map(|o| clean(o, MAX_ID_CHARS));
        self
    }

    /// Sets the person.
    pub fn with_pid(mut self, pid: Option<&str>) -> Event {
        self.pid = pid.map(|p| clean(p, MAX_ID_CHARS));
        self
    }

    /// Sets the token id.
    pub fn with_jti(mut self, jti: &str) -> Event {
        self.jti = Some(clean(jti, MAX_ID_CHARS));
        self
    }

    /// Sets the detail text.
    pub fn with_detail(mut self, detail: &str) -> Event {
        self.detail = Some(clean(detail, MAX_DETAIL_CHARS));
        self
    }

    /// Sets where the request came from: the source address and the request id (which the
    /// caller may choose, so it is bounded like the rest).
    pub fn with_origin(mut self, source: Option<&str>, request_id: Option<&str>) -> Event {
        self.source = source.map(|s| clean(s, MAX_ID_CHARS));
        self.request_id = request_id.map(|r| clean(r, MAX_ID_CHARS));
        self
    }

    /// The canonical encoding that is hashed: a version tag, then every field in declaration
    /// order — integers as 8 bytes big-endian, text as a 4-byte big-endian length and the
    /// UTF-8 bytes, an optional field as `0` (absent) or `1` and the text, a list as a 4-byte
    /// count and its items. Every field has a fixed place and a length, so two different
    /// events never encode to the same bytes.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"segl-audit-v1");
        out.extend_from_slice(&self.time.to_be_bytes());
        put_text(&mut out, &self.event);
        for field in [
            &self.client_id,
            &self.client_name,
            &self.orgnr_parent,
            &self.orgnr_child,
            &self.orgnr_supplier,
            &self.pid,
        ] {
            put_optional(&mut out, field.as_deref());
        }
        put_list(&mut out, &self.actor_chain);
        put_optional(&mut out, self.audience.as_deref());
        put_list(&mut out, &self.scopes);
        put_optional(&mut out, self.jti.as_deref());
        put_text(&mut out, &self.outcome);
        for field in [&self.error, &self.source, &self.request_id, &self.detail] {
            put_optional(&mut out, field.as_deref());
        }
        out
    }
}

/// `text` with control characters replaced by U+FFFD and cut to `max` characters.
fn clean(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// List items: cleaned, empty ones dropped.
fn items(values: Vec<String>) -> Vec<String> {
    values
        .iter()
        .map(|v| clean(v, MAX_ID_CHARS))
        .filter(|v| !v.is_empty())
        .collect()
}

/// The `client_id`s of a token's `act` claim, outermost (the current actor) first.
fn actor_chain(mut act: Option<&Value>) -> Vec<String> {
    let mut chain = Vec::new();
    // The nesting is bounded by `token_exchange.max_depth`; the bound here only guards
    // against a claim built some other way.
    while let Some(a) = act.filter(|_| chain.len() < 32) {
        if let Some(id) = a.get("client_id").and_then(Value::as_str) {
            chain.push(id.to_owned());
        }
        act = a.get("act");
    }
    items(chain)
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Fields are bounded far below 4 GiB; saturating keeps the function total.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    put_len(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

fn put_optional(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            put_text(out, t);
        }
    }
}

fn put_list(out: &mut Vec<u8>, list: &[String]) {
    put_len(out, list.len());
    for item in list {
        put_text(out, item);
    }
}

/// `SHA-256(prev || canonical(event) || seq)`, `seq` as 8 bytes big-endian.
pub fn chain_hash(prev: &[u8; 32], event: &Event, seq: i64) -> [u8; 32] {
    let canonical = event.canonical();
    let mut input = Vec::with_capacity(32 + canonical.len() + 8);
    input.extend_from_slice(prev);
    input.extend_from_slice(&canonical);
    input.extend_from_slice(&seq.to_be_bytes());
    segl_jose::sha256(&input)
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// An event read back from the store with its place in the chain. The hashes are as stored
/// (a wrong length is simply a mismatch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Its sequence number (the first event is 1).
    pub seq: i64,
    /// The event.
    pub event: Event,
    /// The hash of the event before it, as stored.
    pub prev_hash: Vec<u8>,
    /// Its own chain hash, as stored.
    pub hash: Vec<u8>,
}

/// A signed statement that the chain had `hash` at `seq` (written every
/// `audit.checkpoint_interval` seconds and logged, so that a copy outside the database pins
/// the chain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The issuer whose key signed it.
    pub iss: String,
    /// The sequence number.
    pub seq: i64,
    /// The chain hash at `seq`, lower-case hex.
    pub hash: String,
    /// When it was made (UTC unix seconds).
    pub time: i64,
}

impl Checkpoint {
    /// A checkpoint of the chain at `seq` (hash `hash`).
    pub fn new(iss: &str, seq: i64, hash: &[u8; 32], now: UnixTime) -> Checkpoint {
        Checkpoint {
            iss: iss.to_owned(),
            seq,
            hash: hex(hash),
            time: now.secs(),
        }
    }

    /// Signs the checkpoint as a compact JWS (`typ` [`CHECKPOINT_TYP`], the key's `kid`).
    pub fn sign(&self, key: &SigningKey) -> Result<String, segl_jose::Error> {
        segl_jose::sign_jwt(key, CHECKPOINT_TYP, self)
    }

    /// Verifies a signed checkpoint with one of `keys` (chosen by the caller, e.g. the
    /// signing keys' public JWKs); returns it, or why not.
    pub fn verify(jws: &str, keys: &[VerifyingKey]) -> Result<Checkpoint, String> {
        let jws = UnverifiedJws::parse(jws).map_err(|e| format!("not a checkpoint JWS: {e}"))?;
        if jws.unverified_header_str("typ") != Some(CHECKPOINT_TYP) {
            return Err(format!("not a checkpoint (typ is not {CHECKPOINT_TYP})"));
        }
        let kid = jws.unverified_header_str("kid").map(str::to_owned);
        let candidates = keys
            .iter()
            .filter(|k| kid.is_none() || k.kid() == kid.as_deref());
        let claims = jws
            .verify_any(candidates)
            .map_err(|e| format!("signature does not verify (kid {kid:?}): {e}"))?
            .into_claims();
        serde_json::from_value(Value::Object(claims))
            .map_err(|e| format!("checkpoint payload: {e}"))
    }
}

/// The first problem found in a chain. Every variant names the sequence number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// An event's stored hash is not the hash of its contents: the event was changed.
    #[error("seq {seq}: the event does not match its hash (it was changed after it was written)")]
    HashMismatch {
        /// The changed event.
        seq: i64,
    },
    /// A sequence number is missing: the event was removed.
    #[error("seq {seq} is missing (the event was removed)")]
    Missing {
        /// The first missing sequence number.
        seq: i64,
    },
    /// An event's `prev_hash` is not the hash of the event before it: events were reordered,
    /// or one was replaced by a different chained event.
    #[error(
        "seq {seq}: prev_hash does not match the hash of the event before it (events reordered or replaced)"
    )]
    PrevHashMismatch {
        /// The event whose link is broken.
        seq: i64,
    },
    /// Rows were not given in increasing sequence order (a caller error, or duplicate rows).
    #[error("seq {seq} comes after seq {after}: events out of order")]
    OutOfOrder {
        /// The out-of-order sequence number.
        seq: i64,
        /// The sequence number before it.
        after: i64,
    },
    /// A signed checkpoint disagrees with the chain at its sequence number: the chain was
    /// rewritten from that point or earlier.
    #[error(
        "checkpoint at seq {seq}: the chain's hash there differs from the signed one (the chain was rewritten)"
    )]
    CheckpointMismatch {
        /// The checkpoint's sequence number.
        seq: i64,
    },
    /// The chain ends before a sequence number that a checkpoint or the chain head records:
    /// the events after `last` were removed.
    #[error(
        "seq {missing} is missing: the chain ends at seq {last} but {source_name} records seq {recorded} (events removed from the end)"
    )]
    Truncated {
        /// The first missing sequence number.
        missing: i64,
        /// The last event present.
        last: i64,
        /// The sequence number recorded elsewhere.
        recorded: i64,
        /// What recorded it (`the chain head`, `a checkpoint`).
        source_name: &'static str,
    },
    /// The chain head (the store's record of the last sequence number and hash) disagrees
    /// with the last event.
    #[error(
        "seq {seq}: the chain head records a different hash or sequence number than the last event"
    )]
    HeadMismatch {
        /// The last event's sequence number.
        seq: i64,
    },
}

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// How many events.
    pub events: u64,
    /// The last sequence number (0 for an empty chain).
    pub last_seq: i64,
    /// The hash of the last event ([`GENESIS`] for an empty chain).
    pub head: [u8; 32],
    /// How many checkpoints were compared with the chain.
    pub checkpoints: usize,
}

/// Walks a chain in sequence order, one event at a time (so a long chain can be read in
/// pages), checking each link and the given checkpoints as it passes them.
#[derive(Debug, Clone)]
pub struct Verifier {
    last_seq: i64,
    running: [u8; 32],
    events: u64,
    /// Checkpoints not yet passed, as `(seq, hash hex)`, sorted by `seq` descending (so the
    /// next one is at the end).
    pending: Vec<(i64, String)>,
    checked: usize,
}

impl Verifier {
    /// A verifier for a chain that starts at seq 1, with the (already signature-checked)
    /// checkpoints to compare.
    pub fn new(checkpoints: &[Checkpoint]) -> Verifier {
        let mut pending: Vec<(i64, String)> = checkpoints
            .iter()
            .map(|c| (c.seq, c.hash.to_ascii_lowercase()))
            .collect();
        pending.sort_by_key(|c| std::cmp::Reverse(c.0));
        Verifier {
            last_seq: 0,
            running: GENESIS,
            events: 0,
            pending,
            checked: 0,
        }
    }

    /// Checks the next recorded event.
    pub fn push(&mut self, row: &Recorded) -> Result<(), Problem> {
        // Checkpoints at or before the previous event (seq 0 is the genesis) are due now.
        self.pass_checkpoints()?;
        let expected = self.last_seq.saturating_add(1);
        if row.seq < expected {
            return Err(Problem::OutOfOrder {
                seq: row.seq,
                after: self.last_seq,
            });
        }
        if row.seq > expected {
            return Err(Problem::Missing { seq: expected });
        }
        if row.prev_hash.as_slice() != self.running.as_slice() {
            return Err(Problem::PrevHashMismatch { seq: row.seq });
        }
        let computed = chain_hash(&self.running, &row.event, row.seq);
        if row.hash.as_slice() != computed.as_slice() {
            return Err(Problem::HashMismatch { seq: row.seq });
        }
        self.running = computed;
        self.last_seq = row.seq;
        self.events = self.events.saturating_add(1);
        Ok(())
    }

    /// Compares the checkpoints due at the last event with the chain. `pending` is sorted
    /// descending, and the walk passes every seq one at a time, so each checkpoint is compared
    /// when the walk stands at exactly its seq; one left behind has a negative seq.
    fn pass_checkpoints(&mut self) -> Result<(), Problem> {
        while let Some((seq, hash)) = self.pending.last() {
            if *seq > self.last_seq {
                break;
            }
            if *seq < self.last_seq || *hash != hex(&self.running) {
                return Err(Problem::CheckpointMismatch { seq: *seq });
            }
            self.pending.pop();
            self.checked += 1;
        }
        Ok(())
    }

    /// Ends the walk: the remaining checkpoints and the chain head (`(seq, hash)` as the store
    /// keeps it, if it does) must agree with the last event.
    pub fn finish(mut self, head: Option<(i64, &[u8])>) -> Result<Summary, Problem> {
        self.pass_checkpoints()?;
        if let Some((seq, _)) = self.pending.first() {
            // The highest checkpoint is beyond the chain's end.
            return Err(Problem::Truncated {
                missing: self.last_seq.saturating_add(1),
                last: self.last_seq,
                recorded: *seq,
                source_name: "a signed checkpoint",
            });
        }
        if let Some((head_seq, head_hash)) = head {
            if head_seq > self.last_seq {
                return Err(Problem::Truncated {
                    missing: self.last_seq.saturating_add(1),
                    last: self.last_seq,
                    recorded: head_seq,
                    source_name: "the chain head",
                });
            }
            if head_seq != self.last_seq || head_hash != self.running.as_slice() {
                return Err(Problem::HeadMismatch { seq: self.last_seq });
            }
        }
        Ok(Summary {
            events: self.events,
            last_seq: self.last_seq,
            head: self.running,
            checkpoints: self.checked,
        })
    }
}

/// Verifies a whole chain given in sequence order (see [`Verifier`]).
pub fn verify_chain(
    rows: &[Recorded],
    checkpoints: &[Checkpoint],
    head: Option<(i64, &[u8])>,
) -> Result<Summary, Problem> {
    let mut verifier = Verifier::new(checkpoints);
    for row in rows {
        verifier.push(row)?;
    }
    verifier.finish(head)
}

#[cfg(test)]
mod tests;
