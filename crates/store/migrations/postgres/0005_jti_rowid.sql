-- Segl store schema, version 5 (PostgreSQL): nothing to change. Version 5 on SQLite stores the
-- replay records in insertion order with a separate unique index on (kind, key); PostgreSQL
-- tables are heaps with separate indexes already (../sqlite/0005_jti_rowid.sql says why).
SELECT 1;
