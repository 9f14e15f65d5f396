-- Segl store schema, version 4 (SQLite): the audit log, a hash chain of events.
-- Keep the columns identical to ../postgres/0004_audit.sql; only the type names differ.
-- Times are unix seconds (UTC). Lists (`actor_chain`, `scopes`) are their items joined by
-- U+001F (empty: ''). Nothing here is ever purged.

-- One event per row, in chain order: `hash` = SHA-256(`prev_hash` || canonical(event) || seq),
-- computed by the caller (segl-core's audit module) inside the appending transaction.
CREATE TABLE audit_events (
    seq            INTEGER NOT NULL PRIMARY KEY,
    time           BIGINT  NOT NULL,
    event          TEXT    NOT NULL,
    client_id      TEXT    NULL,
    client_name    TEXT    NULL,
    orgnr_parent   TEXT    NULL,
    orgnr_child    TEXT    NULL,
    orgnr_supplier TEXT    NULL,
    pid            TEXT    NULL,
    actor_chain    TEXT    NOT NULL,
    audience       TEXT    NULL,
    scopes         TEXT    NOT NULL,
    jti            TEXT    NULL,
    outcome        TEXT    NOT NULL,
    error          TEXT    NULL,
    source         TEXT    NULL,
    request_id     TEXT    NULL,
    detail         TEXT    NULL,
    prev_hash      BLOB    NOT NULL,
    hash           BLOB    NOT NULL
);

CREATE INDEX audit_events_time ON audit_events (time);
CREATE INDEX audit_events_pid ON audit_events (pid);
CREATE INDEX audit_events_client_id ON audit_events (client_id);
CREATE INDEX audit_events_orgnr_parent ON audit_events (orgnr_parent);
CREATE INDEX audit_events_orgnr_child ON audit_events (orgnr_child);
CREATE INDEX audit_events_orgnr_supplier ON audit_events (orgnr_supplier);

-- Append-only for Segl and for mistakes (not for someone who can drop the trigger: that is
-- what the chain and the signed checkpoints are for).
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

-- The chain head: the last sequence number and hash, in one row that every appender locks
-- (SQLite: the write lock of BEGIN IMMEDIATE) and updates in its transaction, so concurrent
-- appenders, in one process or many, extend one chain.
CREATE TABLE audit_head (
    id   SMALLINT NOT NULL PRIMARY KEY CHECK (id = 1),
    seq  BIGINT   NOT NULL,
    hash BLOB     NOT NULL
);

INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));

-- Signed checkpoints: a JWS by the server's signing key stating the chain's hash at `seq`;
-- `kid` and `public_jwk` name the key, so that a checkpoint stays verifiable after its key
-- has been retired and deleted from signing_keys.
CREATE TABLE audit_checkpoints (
    id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    seq        BIGINT  NOT NULL,
    time       BIGINT  NOT NULL,
    kid        TEXT    NOT NULL,
    public_jwk TEXT    NOT NULL,
    jws        TEXT    NOT NULL
);

CREATE INDEX audit_checkpoints_seq ON audit_checkpoints (seq);
