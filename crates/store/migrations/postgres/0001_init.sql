-- Segl store schema, version 1 (PostgreSQL). Keep the columns identical to
-- ../sqlite/0001_init.sql; only the type names differ.

-- One-time identifiers (client assertion / DPoP proof / request object `jti`s).
-- The primary key is the replay check: INSERT ... ON CONFLICT DO NOTHING.
CREATE TABLE jti (
    kind       SMALLINT NOT NULL,
    key        BYTEA    NOT NULL,
    expires_at BIGINT   NOT NULL,
    PRIMARY KEY (kind, key)
);

CREATE INDEX jti_expires_at ON jti (expires_at);

-- Token-signing keys; private_key is encrypted by the caller.
CREATE TABLE signing_keys (
    kid         TEXT   NOT NULL PRIMARY KEY,
    alg         TEXT   NOT NULL,
    public_jwk  TEXT   NOT NULL,
    private_key BYTEA  NOT NULL,
    created_at  BIGINT NOT NULL,
    activate_at BIGINT NOT NULL
);

-- Named secrets all processes agree on (e.g. HMAC keys).
CREATE TABLE secrets (
    name  TEXT  NOT NULL PRIMARY KEY,
    value BYTEA NOT NULL
);
