//! The durable writer: requests hand their audit events — and the replay records (`jti`) of
//! client assertions and DPoP proofs — to one task per process that commits whatever is queued
//! in one transaction (group commit) and then answers every request of it; and the periodic
//! signed checkpoints of the audit chain.
//!
//! A request that issues something awaits its event's commit before it answers (an answered
//! token always has its event on disk), and answers `503 temporarily_unavailable` when the
//! event cannot be written ([`AuditLog::record`]). A request's `jti`s are recorded the same way
//! before anything is issued ([`AuditLog::insert_jtis`]): nothing is acknowledged before its
//! replay record is durable. A request can also hand its replay records together with a gate
//! that, given their verdicts, makes the event of what it issues ([`AuditLog::insert_jtis_gated`]):
//! both go in the same transaction, so that request waits for one commit instead of two. Concurrent requests share one transaction, so durability costs
//! one commit per batch rather than per request. Refusals are recorded the same way but a
//! failed write does not change their answer ([`AuditLog::record_refusal`]). The `tracing`
//! events with target `segl::audit` stay as they were, beside this log.
//!
//! What events say and how they are hashed is `segl_core::audit`; how the chain is serialized
//! between processes is the store's `commit_group` / `append_audit`.

use crate::App;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use segl_core::UnixTime;
use segl_core::audit::{self, Event, Recorded};
use segl_store::{AuditCheckpoint, AuditEvent, AuditRecord, Error, JtiKind, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The most events committed in one transaction.
const MAX_BATCH: usize = 512;
/// The most events waiting for the writer (a request waits for room beyond that).
const QUEUE: usize = 4096;

/// Where a request came from, for its audit events: the TCP peer and the request id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The TCP peer's address (behind a reverse proxy: the proxy's).
    pub source: Option<String>,
    /// The `x-request-id` of the request (the caller's, or the one Segl made).
    pub request_id: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Origin {
            source: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string()),
            request_id: parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        })
    }
}

/// What waits for the next group commit.
enum Pending {
    /// An audit event.
    Event {
        event: Box<AuditEvent>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// A request's replay records: the answer is whether each was new.
    Jtis {
        items: Vec<(JtiKind, [u8; 32], i64)>,
        done: oneshot::Sender<Result<Vec<bool>, String>>,
    },
    /// A request's replay records and the event of what they allow it to issue, appended in
    /// the same transaction when every record was new and `gate` yields it. The answer is
    /// the verdicts and whether the event was appended.
    Gated {
        items: Vec<(JtiKind, [u8; 32], i64)>,
        gate: Box<Gate>,
        done: oneshot::Sender<Result<(Vec<bool>, bool), String>>,
    },
}

/// Given a request's replay verdicts (all fresh), the event to record in their transaction, in
/// the store's form; `None` when nothing is issued after all.
type Gate = dyn Fn(&[bool]) -> Option<AuditEvent> + Send + Sync;

/// The handle requests record events through (cheap to share; one writer task behind it).
#[derive(Debug, Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the writer task on the current runtime. It ends when every handle is dropped.
    pub fn start(store: Arc<dyn Store>) -> AuditLog {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(store, receiver));
        AuditLog { queue }
    }

    /// Records `event` (stamped with `origin`) and waits until the transaction that holds it
    /// has committed. [`Error::Unavailable`] when it could not be written: the caller answers
    /// 503 and does not hand out what the event records.
    pub async fn record(&self, event: Event, origin: &Origin) -> Result<(), Error> {
        let event = event.with_origin(origin.source.as_deref(), origin.request_id.as_deref());
        let (done, committed) = oneshot::channel();
        let pending = Pending::Event {
            event: Box::new(to_store(&event)),
            done,
        };
        self.submit(pending, committed, "the audit writer has stopped")
            .await?
            .map_err(|why| Error::Unavailable(format!("audit log: {why}")))
    }

    /// Queues `pending` and waits for the writer's answer on `committed` (the other end of its
    /// `done`); [`Error::Unavailable`] with `stopped` when the writer is gone.
    async fn submit<T>(
        &self,
        pending: Pending,
        committed: oneshot::Receiver<Result<T, String>>,
        stopped: &str,
    ) -> Result<Result<T, String>, Error> {
        if self.queue.send(pending).await.is_err() {
            return Err(Error::Unavailable(stopped.into()));
        }
        committed
            .await
            .map_err(|_| Error::Unavailable(stopped.into()))
    }

    /// Records replay keys durably (in the next group commit) and says, for each, whether it
    /// was new. [`Error::Unavailable`] when they could not be written: nothing may be issued.
    pub async fn insert_jtis(
        &self,
        items: &[(JtiKind, [u8; 32], i64)],
    ) -> Result<Vec<bool>, Error> {
        let (done, committed) = oneshot::channel();
        let pending = Pending::Jtis {
            items: items.to_vec(),
            done,
        };
        self.submit(pending, committed, "the durable writer has stopped")
            .await?
            .map_err(Error::Unavailable)
    }

    /// Records replay keys durably, as [`AuditLog::insert_jtis`] does, and — in the same
    /// transaction, only when every key was new — the event `gate` makes of what they allow
    /// the request to issue (stamped with `origin`). `gate` runs on the writer, inside the
    /// transaction, and again if the store retries it: it must be quick and pure. Returns the
    /// verdicts and whether the event was recorded (`false` when a key was a replay, `gate`
    /// yielded nothing, or the event could not be stored).
    pub async fn insert_jtis_gated(
        &self,
        items: &[(JtiKind, [u8; 32], i64)],
        origin: &Origin,
        gate: impl Fn(&[bool]) -> Option<Event> + Send + Sync + 'static,
    ) -> Result<(Vec<bool>, bool), Error> {
        let origin = origin.clone();
        let gate = move |fresh: &[bool]| {
            let event =
                gate(fresh)?.with_origin(origin.source.as_deref(), origin.request_id.as_deref());
            let stored = to_store(&event);
            segl_store::check_audit_event(&stored)
                .is_ok()
                .then_some(stored)
        };
        let (done, committed) = oneshot::channel();
        let pending = Pending::Gated {
            items: items.to_vec(),
            gate: Box::new(gate),
            done,
        };
        self.submit(pending, committed, "the durable writer has stopped")
            .await?
            .map_err(Error::Unavailable)
    }

    /// Records the event of a refused request, as [`AuditLog::record`] does; a failure to
    /// write it is logged and does not change the refusal.
    pub async fn record_refusal(&self, event: Event, origin: &Origin) {
        let name = event.event.clone();
        if let Err(e) = self.record(event, origin).await {
            tracing::error!(error = %e, event = %name, "audit event not recorded");
        }
    }
}

/// The writer: takes whatever is queued (at least one event, at most [`MAX_BATCH`]), commits
/// it as one segment, acknowledges each event with the outcome, and repeats until every
/// sender is gone. Returns how many batches it committed.
async fn write_batches(store: Arc<dyn Store>, mut receiver: mpsc::Receiver<Pending>) -> u64 {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut batches = 0u64;
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Let the requests that are ready to run go first, then take what they queued: under
        // load a commit carries many more requests (most of its cost is per commit, not per
        // request), and when nothing else is runnable this returns at once.
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH
            && let Ok(p) = receiver.try_recv()
        {
            batch.push(p);
        }
        commit(store.as_ref(), std::mem::take(&mut batch)).await;
        batches += 1;
    }
    batches
}

/// Commits one batch: every queued request's replay records and every event, in one
/// transaction. An event the store would refuse is refused alone, so that it cannot fail the
/// others' transaction.
async fn commit(store: &dyn Store, batch: Vec<Pending>) {
    let mut events = Vec::new();
    let mut event_waiters = Vec::new();
    let mut jtis: Vec<(JtiKind, [u8; 32], i64)> = Vec::new();
    // Each request's replay records are `jtis[start..start + len]`.
    let mut jti_waiters = Vec::new();
    let mut gates: Vec<(usize, usize, Box<Gate>)> = Vec::new();
    let mut gate_waiters = Vec::new();
    for p in batch {
        match p {
            Pending::Event { event, done } => {
                if segl_store::check_audit_event(&event).is_ok() {
                    events.push(*event);
                    event_waiters.push(done);
                } else {
                    let _ = done.send(Err("the event cannot be stored".into()));
                }
            }
            Pending::Jtis { items, done } => {
                jti_waiters.push((jtis.len(), items.len(), done));
                jtis.extend(items);
            }
            Pending::Gated { items, gate, done } => {
                gates.push((jtis.len(), items.len(), gate));
                gate_waiters.push((jtis.len(), items.len(), done));
                jtis.extend(items);
            }
        }
    }
    let requests = jti_waiters.len() + gate_waiters.len();
    if requests > 0 {
        metrics::histogram!("segl_group_commit_requests").record(requests as f64);
    }
    // Which gated events the (last attempt of the) transaction appended.
    let appended = std::sync::Mutex::new(vec![false; gates.len()]);
    let gated = |fresh: &[bool]| -> Vec<AuditEvent> {
        let mut flags = appended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::new();
        for ((start, len, gate), flag) in gates.iter().zip(flags.iter_mut()) {
            let verdicts = fresh.get(*start..start + len).unwrap_or_default();
            *flag = false;
            if verdicts.len() == *len
                && verdicts.iter().all(|f| *f)
                && let Some(event) = gate(verdicts)
            {
                out.push(event);
                *flag = true;
            }
        }
        out
    };
    let refs: Vec<(JtiKind, &[u8], i64)> =
        jtis.iter().map(|(k, key, e)| (*k, &key[..], *e)).collect();
    let outcome = crate::metrics::store_op(
        "commit_group",
        store.commit_group(&refs, &events, &gated, &link),
    )
    .await
    .map_err(|e| {
        tracing::error!(error = %e, events = events.len(), jtis = refs.len(), "durable write failed");
        e.to_string()
    });
    // A request that gave up waiting (its connection closed) no longer listens.
    for done in event_waiters {
        let _ = done.send(outcome.clone().map(drop));
    }
    let verdicts = |start: usize, len: usize| -> Result<Vec<bool>, String> {
        match &outcome {
            Ok(v) => Ok(v.get(start..start + len).unwrap_or_default().to_vec()),
            Err(e) => Err(e.clone()),
        }
    };
    for (start, len, done) in jti_waiters {
        let _ = done.send(verdicts(start, len));
    }
    let appended = appended
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let recorded = events.len() + appended.iter().filter(|a| **a).count();
    if recorded > 0 {
        metrics::histogram!("segl_audit_batch_events").record(recorded as f64);
    }
    for ((start, len, done), recorded) in gate_waiters.into_iter().zip(appended) {
        let _ = done.send(verdicts(start, len).map(|v| (v, recorded)));
    }
}

/// Appends `events` as one chain segment and waits for the commit: for tools and start-up,
/// which write their few events directly (the CLI's key and delegation changes). Returns the
/// last sequence number.
pub async fn append(store: &dyn Store, events: &[Event]) -> Result<i64, Error> {
    let events: Vec<AuditEvent> = events.iter().map(to_store).collect();
    store.append_audit(&events, &link).await
}

/// The chain hash of segl-core, over the stored form of an event.
fn link(prev: &[u8; 32], seq: i64, event: &AuditEvent) -> [u8; 32] {
    audit::chain_hash(prev, &from_store(event.clone()), seq)
}

/// An event in the store's form.
pub fn to_store(e: &Event) -> AuditEvent {
    AuditEvent {
        time: e.time,
        event: e.event.clone(),
        client_id: e.client_id.clone(),
        client_name: e.client_name.clone(),
        orgnr_parent: e.orgnr_parent.clone(),
        orgnr_child: e.orgnr_child.clone(),
        orgnr_supplier: e.orgnr_supplier.clone(),
        pid: e.pid.clone(),
        actor_chain: e.actor_chain.clone(),
        audience: e.audience.clone(),
        scopes: e.scopes.clone(),
        jti: e.jti.clone(),
        outcome: e.outcome.clone(),
        error: e.error.clone(),
        source: e.source.clone(),
        request_id: e.request_id.clone(),
        detail: e.detail.clone(),
    }
}

/// An event as read from the store (every field kept exactly: what is verified is what is
/// stored).
pub fn from_store(e: AuditEvent) -> Event {
    Event {
        time: e.time,
        event: e.event,
        client_id: e.client_id,
        client_name: e.client_name,
        orgnr_parent: e.orgnr_parent,
        orgnr_child: e.orgnr_child,
        orgnr_supplier: e.orgnr_supplier,
        pid: e.pid,
        actor_chain: e.actor_chain,
        audience: e.audience,
        scopes: e.scopes,
        jti: e.jti,
        outcome: e.outcome,
        error: e.error,
        source: e.source,
        request_id: e.request_id,
        detail: e.detail,
    }
}

/// A stored record in segl-core's form, for verification.
pub fn recorded(r: AuditRecord) -> Recorded {
    Recorded {
        seq: r.seq,
        event: from_store(r.event),
        prev_hash: r.prev_hash,
        hash: r.hash,
    }
}

/// Writes a signed checkpoint of the chain head when the head has moved past `last` (the seq
/// this process checkpointed before); returns the seq it checkpointed, or `None` when there
/// was nothing new. The checkpoint is also logged (target `segl::audit`, event `checkpoint`,
/// with the JWS), so that a log sink outside the database keeps a copy.
pub async fn checkpoint(app: &App, last: i64) -> Result<Option<i64>, Error> {
    let head = app.store.audit_head().await?;
    if head.seq <= last {
        return Ok(None);
    }
    let hash: [u8; 32] = head.hash.as_slice().try_into().map_err(|_| {
        Error::Corrupt(format!(
            "the audit chain head's hash is {} bytes",
            head.hash.len()
        ))
    })?;
    let now: UnixTime = app.clock.now();
    let ring = app.keys.current();
    let signed = audit::Checkpoint::new(&app.settings.issuer, head.seq, &hash, now);
    let jws = signed
        .sign(&ring.signing)
        .map_err(|e| Error::Corrupt(format!("signing a checkpoint: {e}")))?;
    let public_jwk = serde_json::to_string(ring.signing.public_jwk())
        .map_err(|e| Error::Corrupt(format!("the signing key's JWK: {e}")))?;
    app.store
        .insert_audit_checkpoint(&AuditCheckpoint {
            seq: head.seq,
            time: now.secs(),
            kid: ring.signing.kid().to_owned(),
            public_jwk,
            jws: jws.clone(),
        })
        .await?;
    tracing::info!(
        target: "segl::audit",
        event = "checkpoint",
        seq = head.seq,
        hash = %signed.hash,
        kid = ring.signing.kid(),
        jws = %jws,
        "audit checkpoint"
    );
    Ok(Some(head.seq))
}

/// Writes a checkpoint every `audit.checkpoint_interval` seconds (the first at start).
pub fn spawn_checkpoints(app: &App) -> tokio::task::JoinHandle<()> {
    let app = app.clone();
    tokio::spawn(async move {
        let every = std::time::Duration::from_secs(app.settings.audit.checkpoint_interval);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = 0;
        loop {
            tick.tick().await;
            match checkpoint(&app, last).await {
                Ok(Some(seq)) => last = seq,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "audit checkpoint failed; retrying later"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: i64) -> Event {
        Event::new(
            audit::EventKind::TokenIssued,
            audit::Outcome::Success,
            UnixTime(n),
        )
        .with_client(&format!("c{n}"), None)
    }

    async fn store() -> Arc<dyn Store> {
        let store = segl_store::open("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    async fn chain(store: &dyn Store) -> Result<audit::Summary, audit::Problem> {
        let rows: Vec<Recorded> = store
            .audit_events(1, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(recorded)
            .collect();
        let head = store.audit_head().await.unwrap();
        audit::verify_chain(&rows, &[], Some((head.seq, &head.hash)))
    }

    /// Concurrent requests share commits, each is acknowledged after its commit, and the
    /// result is one chain that segl-core verifies.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_share_commits_and_form_one_chain() {
        let store = store().await;
        let log = AuditLog::start(store.clone());
        let origin = Origin {
            source: Some("127.0.0.1".into()),
            request_id: Some("r".into()),
        };
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..200 {
            let (log, origin) = (log.clone(), origin.clone());
            tasks.spawn(async move { log.record(event(n), &origin).await });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        let summary = chain(store.as_ref()).await.unwrap();
        assert_eq!(summary.events, 200);
        let first = store.audit_events(1, 1).await.unwrap();
        assert_eq!(first[0].event.source.as_deref(), Some("127.0.0.1"));
        assert_eq!(first[0].event.request_id.as_deref(), Some("r"));
        // Direct appends (the CLI's) continue the same chain.
        assert_eq!(
            append(store.as_ref(), &[event(1), event(2)]).await.unwrap(),
            202
        );
        assert_eq!(chain(store.as_ref()).await.unwrap().events, 202);
    }

    /// When the store cannot write, the request hears so (and answers 503).
    #[tokio::test]
    async fn a_failed_write_is_reported_to_every_waiting_request() {
        let store = segl_store::open("sqlite::memory:").await.unwrap();
        // Not migrated: there is no audit table.
        let log = AuditLog::start(store);
        let result = log.record(event(1), &Origin::default()).await;
        assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
        // A refusal's failed write is only logged.
        log.record_refusal(event(2), &Origin::default()).await;
    }

    fn pending(e: &Event) -> (Pending, oneshot::Receiver<Result<(), String>>) {
        let (done, committed) = oneshot::channel();
        let p = Pending::Event {
            event: Box::new(to_store(e)),
            done,
        };
        (p, committed)
    }

    /// Replay records share the batch with events: each request gets its own verdicts, a key
    /// repeated in the batch (or seen before) is not fresh, and the events are on the chain.
    #[tokio::test]
    async fn jtis_and_events_share_one_commit() {
        let store = store().await;
        let (queue, receiver) = mpsc::channel(QUEUE);
        let key = |n: u8| (JtiKind::ClientAssertion, [n; 32], i64::MAX);
        let mut waits = Vec::new();
        for items in [vec![key(1), key(2)], vec![key(3)], vec![key(2), key(4)]] {
            let (done, verdict) = oneshot::channel();
            queue.send(Pending::Jtis { items, done }).await.unwrap();
            waits.push(verdict);
        }
        let (p, ack) = pending(&event(1));
        queue.send(p).await.unwrap();
        drop(queue);
        assert_eq!(write_batches(store.clone(), receiver).await, 1);
        let verdicts: Vec<Vec<bool>> = futures_verdicts(waits).await;
        assert_eq!(verdicts, [vec![true, true], vec![true], vec![false, true]]);
        ack.await.unwrap().unwrap();
        assert_eq!(chain(store.as_ref()).await.unwrap().events, 1);
        // Seen in an earlier commit: a replay.
        let log = AuditLog::start(store.clone());
        assert_eq!(
            log.insert_jtis(&[key(3), key(5)]).await.unwrap(),
            [false, true]
        );
    }

    async fn futures_verdicts(
        waits: Vec<oneshot::Receiver<Result<Vec<bool>, String>>>,
    ) -> Vec<Vec<bool>> {
        let mut out = Vec::new();
        for w in waits {
            out.push(w.await.unwrap().unwrap());
        }
        out
    }

    /// A gated event is appended in the same transaction as its request's replay records, only
    /// when every record was new and the gate yields it; the request hears which.
    #[tokio::test]
    async fn gated_events_follow_their_replay_verdicts() {
        let store = store().await;
        let log = AuditLog::start(store.clone());
        let origin = Origin {
            source: Some("127.0.0.1".into()),
            request_id: Some("g".into()),
        };
        let key = |n: u8| (JtiKind::DpopProof, [n; 32], i64::MAX);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let gate = |n: i64| {
            let seen = seen.clone();
            move |fresh: &[bool]| {
                seen.lock().unwrap().push((n, fresh.to_vec()));
                Some(event(n))
            }
        };
        // New records: the event is recorded with the request's origin.
        let (fresh, recorded) = log
            .insert_jtis_gated(&[key(1), key(2)], &origin, gate(1))
            .await
            .unwrap();
        assert_eq!((fresh, recorded), (vec![true, true], true));
        // One replayed record: no event, and the gate is not asked.
        let (fresh, recorded) = log
            .insert_jtis_gated(&[key(3), key(2)], &origin, gate(2))
            .await
            .unwrap();
        assert_eq!((fresh, recorded), (vec![true, false], false));
        // A gate that issues nothing, and an event the store would refuse: nothing recorded.
        let (_, recorded) = log
            .insert_jtis_gated(&[key(4)], &origin, |_: &[bool]| None)
            .await
            .unwrap();
        assert!(!recorded);
        let (fresh, recorded) = log
            .insert_jtis_gated(&[key(5)], &origin, |_: &[bool]| {
                let mut bad = event(5);
                bad.scopes = vec![String::new()];
                Some(bad)
            })
            .await
            .unwrap();
        assert_eq!((fresh, recorded), (vec![true], false));
        assert_eq!(*seen.lock().unwrap(), [(1, vec![true, true])]);
        let summary = chain(store.as_ref()).await.unwrap();
        assert_eq!(summary.events, 1);
        let rows = store.audit_events(1, 10).await.unwrap();
        assert_eq!(rows[0].event.client_id.as_deref(), Some("c1"));
        assert_eq!(rows[0].event.request_id.as_deref(), Some("g"));
        // The records of the refused requests are durable all the same.
        assert_eq!(
            log.insert_jtis(&[key(4), key(5), key(6)]).await.unwrap(),
            [false, false, true]
        );
    }

    /// Whatever is queued when the writer looks is one transaction.
    #[tokio::test]
    async fn queued_events_are_committed_together() {
        let store = store().await;
        let (queue, receiver) = mpsc::channel(QUEUE);
        let mut acks = Vec::new();
        for n in 0..10 {
            let (p, ack) = pending(&event(n));
            queue.send(p).await.unwrap();
            acks.push(ack);
        }
        drop(queue);
        assert_eq!(write_batches(store.clone(), receiver).await, 1);
        for ack in acks {
            ack.await.unwrap().unwrap();
        }
        assert_eq!(chain(store.as_ref()).await.unwrap().events, 10);
    }

    /// An event the store would refuse fails alone, not the batch it shares.
    #[tokio::test]
    async fn an_unstorable_event_fails_alone() {
        let store = store().await;
        let mut bad = event(1);
        bad.scopes = vec![String::new()];
        let (p1, bad_ack) = pending(&bad);
        let (p2, good_ack) = pending(&event(2));
        commit(store.as_ref(), vec![p1, p2]).await;
        assert!(bad_ack.await.unwrap().is_err());
        good_ack.await.unwrap().unwrap();
        assert_eq!(chain(store.as_ref()).await.unwrap().events, 1);
    }

    /// Stored events convert back to exactly what was recorded.
    #[test]
    fn store_form_round_trips() {
        let mut e = event(7).with_detail("refresh_family=F");
        e.actor_chain = vec!["sfm".into()];
        e.scopes = vec!["a".into(), "b".into()];
        assert_eq!(from_store(to_store(&e)), e);
    }
}
