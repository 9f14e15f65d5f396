-- Segl store schema, version 2 (SQLite): state for logins and the authorization code grant.
-- Keep the columns identical to ../postgres/0002_login.sql; only the type names differ.
-- All times are unix seconds; a row is live while `expires_at > now` and purged once
-- `expires_at < now`.

-- Short-lived records (pushed authorization requests, login transactions, sessions), keyed by
-- a caller-chosen digest; `data` is opaque text (typically JSON). `kind` is RecordKind::code.
CREATE TABLE records (
    kind       SMALLINT NOT NULL,
    key        BLOB     NOT NULL,
    data       TEXT     NOT NULL,
    expires_at BIGINT   NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;

CREATE INDEX records_expires_at ON records (expires_at);

-- Authorization codes, keyed by a digest of the code. A redeemed code keeps its row (with
-- `redeemed_at` set) until it expires, so that a second redemption is recognised.
CREATE TABLE codes (
    key         BLOB   NOT NULL PRIMARY KEY,
    data        TEXT   NOT NULL,
    expires_at  BIGINT NOT NULL,
    redeemed_at BIGINT NULL
) WITHOUT ROWID;

CREATE INDEX codes_expires_at ON codes (expires_at);

-- The token ids issued from each code's first redemption (revoked when it is reused). No
-- foreign key: rows are deleted with their code by purge_expired, which also removes rows
-- whose code no longer exists.
CREATE TABLE code_issues (
    code_key BLOB NOT NULL,
    jti      TEXT NOT NULL,
    PRIMARY KEY (code_key, jti)
) WITHOUT ROWID;

-- Revoked access token ids, kept until the token itself expires.
CREATE TABLE revoked_tokens (
    jti        TEXT   NOT NULL PRIMARY KEY,
    expires_at BIGINT NOT NULL
) WITHOUT ROWID;

CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);
