-- Segl store schema, version 5 (SQLite): the replay records in a rowid table. Same columns and
-- the same unique key as version 1; ../postgres/0005_jti_rowid.sql changes nothing.
--
-- Version 1 made `jti` a WITHOUT ROWID table, i.e. a B-tree ordered by (kind, key). The keys
-- are hashes, so every new record landed on a random page of the table, and the index on
-- `expires_at` ordered each second's records by (kind, key) as well: a group commit of n
-- records dirtied up to 2n pages, each written whole to the WAL. As a rowid table the rows
-- are stored in insertion order and the `expires_at` index in (expires_at, rowid) order, both
-- growing at their ends; only the unique index on (kind, key) takes random inserts.
CREATE TABLE jti_rowid (
    kind       SMALLINT NOT NULL,
    key        BLOB     NOT NULL,
    expires_at BIGINT   NOT NULL,
    PRIMARY KEY (kind, key)
);

INSERT INTO jti_rowid (kind, key, expires_at)
    SELECT kind, key, expires_at FROM jti ORDER BY expires_at;

DROP TABLE jti;

ALTER TABLE jti_rowid RENAME TO jti;

CREATE INDEX jti_expires_at ON jti (expires_at);
