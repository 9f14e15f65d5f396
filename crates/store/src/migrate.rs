//! A tiny schema migrator (the sqlx `migrate!` macro needs the `macros` feature, which the
//! workspace does not enable).
//!
//! Each backend has an ordered list of `(version, sql)` migrations embedded from the parallel
//! directories `migrations/sqlite/` and `migrations/postgres/`; both lists must have the same
//! versions and describe the same columns. Applied versions are recorded in
//! `schema_migrations(version BIGINT PRIMARY KEY, applied_at BIGINT)`.
//!
//! Applying is idempotent and safe when several processes start at once: everything (creating
//! `schema_migrations`, reading it, running the pending scripts, recording them) happens in one
//! transaction that first takes a database-wide lock: `BEGIN IMMEDIATE` on SQLite (the write
//! lock, waited for up to the busy timeout) and `pg_advisory_xact_lock` on PostgreSQL (in a
//! READ COMMITTED transaction whatever the server's default isolation, so that the statements
//! after the lock see what the previous holder committed). A process that waited for the lock
//! then sees the versions the winner recorded and applies nothing. A failing script rolls the
//! whole transaction back.

use crate::Error;
use sqlx::{PgPool, SqlitePool};

/// One schema migration: a version number and the SQL script that brings the schema from the
/// previous version to it (possibly several statements).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Strictly increasing version number, the same in both backends' lists.
    pub(crate) version: i64,
    /// The script, run with `sqlx::raw_sql` (multi-statement).
    pub(crate) sql: &'static str,
}

/// SQLite migrations, oldest first.
pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../migrations/sqlite/0002_login.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("../migrations/sqlite/0003_refresh.sql"),
    },
    Migration {
        version: 4,
        sql: include_str!("../migrations/sqlite/0004_audit.sql"),
    },
    Migration {
        version: 5,
        sql: include_str!("../migrations/sqlite/0005_jti_rowid.sql"),
    },
];

/// PostgreSQL migrations, oldest first.
pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../migrations/postgres/0002_login.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("../migrations/postgres/0003_refresh.sql"),
    },
    Migration {
        version: 4,
        sql: include_str!("../migrations/postgres/0004_audit.sql"),
    },
    Migration {
        version: 5,
        sql: include_str!("../migrations/postgres/0005_jti_rowid.sql"),
    },
];

/// The key of the PostgreSQL advisory lock serializing migrations (ASCII "SeglMigr").
const PG_LOCK_KEY: i64 = 0x5365_676c_4d69_6772;

/// The migrations of `all` whose version is not in `applied`, oldest first. Logs a warning for
/// applied versions this build does not know (the database was migrated by a newer Segl; the
/// migrations are additive, so an older process keeps working).
fn pending<'a>(all: &'a [Migration], applied: &[i64]) -> Vec<&'a Migration> {
    for version in applied {
        if !all.iter().any(|m| m.version == *version) {
            tracing::warn!(
                version,
                "the database has a schema migration this version of Segl does not know \
                 (migrated by a newer version?)"
            );
        }
    }
    all.iter()
        .filter(|m| !applied.contains(&m.version))
        .collect()
}

/// Applies the pending SQLite migrations (see the module documentation).
pub(crate) async fn sqlite(pool: &SqlitePool) -> Result<(), Error> {
    use crate::sqlite::map_err;

    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations \
         (version BIGINT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
    let todo = pending(SQLITE, &applied);
    for migration in &todo {
        tracing::info!(
            version = migration.version,
            "applying SQLite schema migration"
        );
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, applied_at) \
             VALUES (?, CAST(strftime('%s', 'now') AS INTEGER))",
        )
        .bind(migration.version)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    }
    tx.commit().await.map_err(map_err)?;
    Ok(())
}

/// Applies the pending PostgreSQL migrations (see the module documentation).
pub(crate) async fn postgres(pool: &PgPool) -> Result<(), Error> {
    use crate::postgres::map_err;

    // READ COMMITTED whatever the server's default: under REPEATABLE READ or SERIALIZABLE the
    // snapshot would be taken by the lock statement, before waiting, and a process that waited
    // would not see the schema the winner committed (and fail re-creating it).
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
        .await
        .map_err(map_err)?;
    // Never wait forever behind a stuck migrator (or, in later migrations, a table lock).
    sqlx::query("SET LOCAL lock_timeout = '60s'")
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PG_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    // Checked rather than `CREATE TABLE IF NOT EXISTS`, which logs a notice on every start.
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('schema_migrations') IS NOT NULL")
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
    if !exists {
        sqlx::query(
            "CREATE TABLE schema_migrations \
             (version BIGINT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    }
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
    let todo = pending(POSTGRES, &applied);
    for migration in &todo {
        tracing::info!(
            version = migration.version,
            "applying PostgreSQL schema migration"
        );
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, applied_at) \
             VALUES ($1, CAST(EXTRACT(EPOCH FROM now()) AS BIGINT))",
        )
        .bind(migration.version)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    }
    tx.commit().await.map_err(map_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_have_the_same_increasing_versions() {
        let sqlite: Vec<i64> = SQLITE.iter().map(|m| m.version).collect();
        let postgres: Vec<i64> = POSTGRES.iter().map(|m| m.version).collect();
        assert_eq!(sqlite, postgres);
        assert!(sqlite.windows(2).all(|w| w[0] < w[1]));
        assert!(sqlite.first().is_some_and(|v| *v >= 1));
    }

    #[test]
    fn pending_skips_applied_versions() {
        assert_eq!(pending(SQLITE, &[]).len(), SQLITE.len());
        assert_eq!(pending(SQLITE, &[1]).len(), SQLITE.len() - 1);
        assert_eq!(pending(SQLITE, &[1, 2]).len(), SQLITE.len() - 2);
        assert_eq!(pending(SQLITE, &[1, 2, 3, 4]).len(), 1);
        assert!(pending(SQLITE, &[1, 2, 3, 4, 5]).is_empty());
        assert!(pending(SQLITE, &[1, 2, 3, 4, 5, 99]).is_empty());
    }
}
