-- Segl store schema, version 3 (PostgreSQL): refresh tokens with rotation, and delegations.
-- Keep the columns identical to ../sqlite/0003_refresh.sql; only the type names differ.
-- All times are unix seconds; a row is live while `expires_at > now` and purged once
-- `expires_at < now`.

-- A refresh-token family: every token rotated from one grant. `expires_at` is absolute (no
-- token of the family outlives it); `revoked_at` is set when the family is revoked (reuse
-- detected, or RFC 7009 revocation) and only its being set matters.
CREATE TABLE refresh_families (
    family_id  TEXT   NOT NULL PRIMARY KEY,
    client_id  TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT NULL
);

CREATE INDEX refresh_families_expires_at ON refresh_families (expires_at);

-- Refresh tokens, keyed by a digest of the token. A used token keeps its row (with
-- `replaced_by` = its successor's key and `replaced_at` set) until it expires, so that a retry
-- inside the grace window and any later reuse are recognised. No foreign key to the family:
-- both are purged by expiry, and a token's expiry never passes its family's.
CREATE TABLE refresh_tokens (
    key         BYTEA  NOT NULL PRIMARY KEY,
    family_id   TEXT   NOT NULL,
    data        TEXT   NOT NULL,
    expires_at  BIGINT NOT NULL,
    replaced_by BYTEA  NULL,
    replaced_at BIGINT NULL
);

CREATE INDEX refresh_tokens_family_id ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

-- Delegations from a customer organization to a supplier (organization numbers).
CREATE TABLE delegations (
    from_org TEXT NOT NULL,
    to_org   TEXT NOT NULL,
    PRIMARY KEY (from_org, to_org)
);
