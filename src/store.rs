//! SQLite persistence: the desired state with its generation, the last apply
//! result, and traffic accounting. The file holds private keys, so it is
//! created 0600.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous, SqliteTransactionManager,
};
use sqlx::{Connection, Row, SqlitePool, TransactionManager};

use crate::model::GatewayConfig;
use crate::system::intent::{Journal, JournalFuture, LinkIntent, LinkKind};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored desired state is unreadable: {0}")]
    Corrupt(String),
    #[error("database file {path}: {source}")]
    File { path: String, source: std::io::Error },
    /// The database could not be opened at start, in one sentence.
    #[error("cannot open the database {path}: {detail}")]
    Open { path: String, detail: String },
}

impl StoreError {
    /// The database's disk is full (`SQLITE_FULL`): nothing was written.
    pub fn disk_full(&self) -> bool {
        const SQLITE_FULL: i32 = 13;
        let StoreError::Db(sqlx::Error::Database(e)) = self else { return false };
        // The code is SQLite's extended result code: its low byte is the primary one.
        e.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == SQLITE_FULL)
    }

    /// The error as one sentence about `path`, without the repetitions of
    /// nested sources (for the one line printed when the daemon cannot start).
    fn opening(self, path: &str) -> StoreError {
        let detail = match &self {
            StoreError::Db(sqlx::Error::Database(e)) => match e.code() {
                Some(code) => format!("{} (SQLite error {code})", e.message()),
                None => e.message().to_string(),
            },
            StoreError::File { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        StoreError::Open { path: path.to_string(), detail }
    }
}

/// Opens the database file (creating it 0600) without following a
/// symlink in its last component (`O_NOFOLLOW`), and checks that root or
/// the daemon's own user owns it: a link planted where the database is
/// expected would make the daemon write private keys wherever it points,
/// and a file someone else owns can be read or replaced by them. The same
/// for SQLite's `-wal` and `-shm` files beside it, if they exist.
fn own_database_file(path: &str) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| if e.raw_os_error() == Some(libc::ELOOP) { symlink_refused("it") } else { e })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    check_owner("it", &meta)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    for suffix in ["-wal", "-shm"] {
        let side = format!("{path}{suffix}");
        match std::fs::symlink_metadata(&side) {
            Ok(m) if m.file_type().is_symlink() => return Err(symlink_refused(&side)),
            Ok(m) => check_owner(&side, &m)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(file)
}

/// `what`: "it" for the database itself, else the path of the file meant.
fn symlink_refused(what: &str) -> std::io::Error {
    std::io::Error::other(format!("{what} is a symbolic link; the database is never opened through one: give the file's own path"))
}

/// Root's or the daemon's own user's file; anyone else's is refused.
fn check_owner(what: &str, meta: &std::fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() == 0 || meta.uid() == me {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "{what} is owned by uid {}, not by root or the daemon's uid {me}: chown it or give another path",
        meta.uid()
    )))
}

/// SQLite opens the database by its path: the file there must still be the
/// one checked, not a link or another file swapped in meanwhile.
fn still_the_same_file(path: &str, checked: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (now, then) = (std::fs::symlink_metadata(path)?, checked.metadata()?);
    if now.file_type().is_symlink() {
        return Err(symlink_refused("it"));
    }
    if (now.dev(), now.ino()) != (then.dev(), then.ino()) {
        return Err(std::io::Error::other("the file was replaced while it was being opened"));
    }
    Ok(())
}

#[derive(Clone)]
pub struct Store {
    pub pool: SqlitePool,
}

/// The outcome of one reconcile pass, as persisted and reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyRecord {
    pub generation: i64,
    pub applied_generation: i64,
    pub ok: bool,
    pub errors: Vec<String>,
    pub finished_at: i64,
    pub duration_ms: u64,
    /// Networks changed on the system by that pass.
    pub changed: Vec<u16>,
}

/// SQLite's name for an in-memory database: no file of that name is made.
pub const IN_MEMORY: &str = ":memory:";

impl Store {
    /// Opens (creating if needed) the database; `None` (or SQLite's own
    /// spelling `:memory:`) means in memory.
    pub async fn open(path: Option<&str>) -> Result<Self, StoreError> {
        let path = path.filter(|p| *p != IN_MEMORY);
        Self::open_inner(path).await.map_err(|e| e.opening(path.unwrap_or(":memory:")))
    }

    async fn open_inner(path: Option<&str>) -> Result<Self, StoreError> {
        let pool = match path {
            None => {
                // One connection: every connection to :memory: is a separate database.
                pool_options()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(SqliteConnectOptions::from_str("sqlite::memory:")?)
                    .await?
            }
            Some(path) => {
                let file_err = |source| StoreError::File { path: path.to_string(), source };
                let file = own_database_file(path).map_err(file_err)?;
                let opts = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(false)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    // Rows cross from SQLite's thread to the reader in
                    // batches of this many: traffic.json streams tens of
                    // thousands (the default, 50, wakes the reader for every 50).
                    .row_buffer_size(1024);
                let pool = pool_options().max_connections(4).connect_with(opts).await?;
                still_the_same_file(path, &file).map_err(file_err)?;
                pool
            }
        };
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool })
    }

    /// The desired state and its generation; generation 0 = none accepted yet.
    pub async fn desired(&self) -> Result<(i64, GatewayConfig), StoreError> {
        let row = sqlx::query("SELECT generation, config FROM desired_state WHERE id = 1").fetch_optional(&self.pool).await?;
        match row {
            None => Ok((0, GatewayConfig::new())),
            Some(r) => {
                let text: String = r.try_get("config")?;
                let config = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok((r.try_get("generation")?, config))
            }
        }
    }

    /// The desired generation alone (0: none yet), without reading the state.
    pub async fn desired_generation(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT generation FROM desired_state WHERE id = 1").fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(r) => r.try_get(0)?,
            None => 0,
        })
    }

    /// The desired generation and its networks' ports, without parsing the
    /// state (status.json asks for nothing more).
    pub async fn desired_ports(&self) -> Result<(i64, Vec<u16>), StoreError> {
        let row = sqlx::query("SELECT generation, (SELECT group_concat(key) FROM json_each(config)) FROM desired_state WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok((0, Vec::new())) };
        let keys: Option<String> = r.try_get(1)?;
        let ports = keys.unwrap_or_default().split(',').filter_map(|k| crate::types::parse_listen_port(k).ok()).collect();
        Ok((r.try_get(0)?, ports))
    }

    /// Stores a new desired state and returns its generation. In an
    /// explicit transaction: `fetch_one` returns with the first row, before
    /// the statement ends, so in autocommit mode a commit that then failed
    /// (a full disk) went unnoticed and the caller waited for a generation
    /// that was never stored.
    pub async fn save_desired(&self, config: &GatewayConfig, now: i64) -> Result<i64, StoreError> {
        let text = serde_json::to_string(config).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(
            "INSERT INTO desired_state (id, generation, config, accepted_at) VALUES (1, 1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET generation = generation + 1, config = ?1, accepted_at = ?2
             RETURNING generation",
        )
        .bind(text)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let generation = row.try_get(0)?;
        tx.commit().await?;
        Ok(generation)
    }

    pub async fn save_apply(&self, r: &ApplyRecord) -> Result<(), StoreError> {
        let errors = serde_json::to_string(&r.errors).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT OR REPLACE INTO apply_state (id, generation, applied_generation, ok, errors, finished_at, duration_ms, changed)
             VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(r.generation)
        .bind(r.applied_generation)
        .bind(r.ok)
        .bind(errors)
        .bind(r.finished_at)
        .bind(r.duration_ms as i64)
        .bind(serde_json::to_string(&r.changed).unwrap_or_else(|_| "[]".into()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn last_apply(&self) -> Result<Option<ApplyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT generation, applied_generation, ok, errors, finished_at, duration_ms, changed FROM apply_state WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let errors: String = r.try_get("errors")?;
        Ok(Some(ApplyRecord {
            generation: r.try_get("generation")?,
            applied_generation: r.try_get("applied_generation")?,
            ok: r.try_get("ok")?,
            errors: serde_json::from_str(&errors).unwrap_or_default(),
            finished_at: r.try_get("finished_at")?,
            duration_ms: r.try_get::<i64, _>("duration_ms")? as u64,
            changed: serde_json::from_str(&r.try_get::<String, _>("changed")?).unwrap_or_default(),
        }))
    }
}

impl Store {
    /// Each peer's last endpoint (see `endpoints`); rows that do not parse
    /// (none are written so) are skipped.
    pub async fn endpoints(&self) -> Result<crate::endpoints::Endpoints, StoreError> {
        let mut known = crate::endpoints::Endpoints::new();
        for row in sqlx::query("SELECT network, peer_key, endpoint FROM peer_endpoints").fetch_all(&self.pool).await? {
            let port = u16::try_from(row.try_get::<i64, _>(0)?).ok();
            let key = row.try_get::<String, _>(1)?.parse().ok();
            let endpoint = row.try_get::<String, _>(2)?.parse().ok();
            if let (Some(port), Some(key), Some(endpoint)) = (port, key, endpoint) {
                known.entry(port).or_default().insert(key, endpoint);
            }
        }
        Ok(known)
    }

    /// Stores changed endpoints (`None`: forget the peer's), in one transaction.
    pub async fn save_endpoints(
        &self,
        changes: &std::collections::BTreeMap<(u16, crate::types::PublicKey), Option<std::net::SocketAddr>>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for ((port, key), endpoint) in changes {
            let q = match endpoint {
                Some(e) => sqlx::query("INSERT OR REPLACE INTO peer_endpoints (network, peer_key, endpoint, seen_at) VALUES (?, ?, ?, ?)")
                    .bind(i64::from(*port))
                    .bind(key.to_string())
                    .bind(e.to_string())
                    .bind(now),
                None => sqlx::query("DELETE FROM peer_endpoints WHERE network = ? AND peer_key = ?")
                    .bind(i64::from(*port))
                    .bind(key.to_string()),
            };
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The pool's options: every connection goes back to the pool clean.
pub(crate) fn pool_options() -> SqlitePoolOptions {
    SqlitePoolOptions::new().after_release(|conn, _| Box::pin(end_stale_transaction(conn)))
}

/// Ends what a failed transaction left on a connection going back to the
/// pool. SQLite rolls a transaction back by itself on some errors
/// (`SQLITE_FULL`, `SQLITE_IOERR`: a full disk); the rollback sqlx then
/// sends on dropping the transaction fails ("no transaction is active"), and
/// sqlx still counts the transaction as open, so every later `begin` on that
/// connection failed ("attempted to call begin_with at non-zero transaction
/// depth") until a restart. sqlx's own begin at that count opens a
/// savepoint, which starts a transaction if SQLite has none; rolling back
/// twice (to the savepoint, then the transaction) ends both and brings the
/// count to zero, whether SQLite's transaction was still open or not.
/// `Ok(false)` (the pool closes the connection) if that does not do it.
async fn end_stale_transaction(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    // Commands run in order: once the ping answers, the rollback queued by a
    // dropped transaction has run.
    conn.ping().await?;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    tracing::warn!("a failed database transaction was left open on a connection: ending it");
    SqliteTransactionManager::begin(conn, None).await?;
    while conn.is_in_transaction() {
        SqliteTransactionManager::rollback(conn).await?;
    }
    Ok(true)
}

/// The journal of links about to be created (`system::intent`), in SQLite,
/// so it survives the crash it is for.
impl Journal for Store {
    fn record<'a>(&'a self, intent: &'a LinkIntent) -> JournalFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query("INSERT OR REPLACE INTO link_intents (name, kind, network, created_at) VALUES (?, ?, ?, ?)")
                .bind(&intent.name)
                .bind(intent.kind.as_str())
                .bind(intent.network.map(i64::from))
                .bind(crate::clock::now_unix())
                .execute(&self.pool)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }

    fn forget<'a>(&'a self, name: &'a str) -> JournalFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query("DELETE FROM link_intents WHERE name = ?").bind(name).execute(&self.pool).await.map(drop).map_err(|e| e.to_string())
        })
    }

    fn unfinished(&self) -> JournalFuture<'_, Vec<LinkIntent>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT name, kind, network FROM link_intents ORDER BY created_at, name")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| e.to_string())?;
            let intent = |r: &sqlx::sqlite::SqliteRow| -> Result<LinkIntent, String> {
                let kind: String = r.try_get("kind").map_err(|e| e.to_string())?;
                Ok(LinkIntent {
                    name: r.try_get("name").map_err(|e| e.to_string())?,
                    kind: LinkKind::parse(&kind).ok_or_else(|| format!("unknown link kind '{kind}'"))?,
                    network: r.try_get::<Option<i64>, _>("network").map_err(|e| e.to_string())?.and_then(|p| u16::try_from(p).ok()),
                })
            };
            rows.iter().map(intent).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generations_increase_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let path = path.to_str().unwrap();
        let s = Store::open(Some(path)).await.unwrap();
        assert_eq!(s.desired().await.unwrap().0, 0);
        let cfg = crate::render::tests::sample_config();
        assert_eq!(s.save_desired(&cfg, 1).await.unwrap(), 1);
        assert_eq!(s.save_desired(&GatewayConfig::new(), 2).await.unwrap(), 2);
        assert_eq!(s.save_desired(&cfg, 3).await.unwrap(), 3);
        s.pool.close().await;
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the database holds private keys");
        let s = Store::open(Some(path)).await.unwrap();
        let (g, c) = s.desired().await.unwrap();
        assert_eq!((g, c), (3, cfg));
    }

    #[tokio::test]
    async fn a_full_database_is_told_apart_from_other_errors() {
        let s = Store::open(None).await.unwrap();
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&s.pool).await.unwrap();
        sqlx::query(&format!("PRAGMA max_page_count = {pages}")).execute(&s.pool).await.unwrap();
        let insert = "INSERT INTO link_intents (name, kind, network, created_at) VALUES (?, 'veth', NULL, 0)";
        let full = StoreError::from(sqlx::query(insert).bind("x".repeat(100_000)).execute(&s.pool).await.unwrap_err());
        assert!(full.disk_full(), "{full}");
        let other = StoreError::from(sqlx::query("INSERT INTO nowhere VALUES (1)").execute(&s.pool).await.unwrap_err());
        assert!(!other.disk_full(), "{other}");
    }

    #[tokio::test]
    async fn endpoints_roundtrip() {
        let s = Store::open(None).await.unwrap();
        let (a, b) = (crate::types::PublicKey::from_bytes([1; 32]), crate::types::PublicKey::from_bytes([2; 32]));
        let e: std::net::SocketAddr = "[2001:db8::1]:51820".parse().unwrap();
        let changes = std::collections::BTreeMap::from([((51820, a), Some(e)), ((51820, b), Some("192.0.2.1:1".parse().unwrap()))]);
        s.save_endpoints(&changes, 1).await.unwrap();
        s.save_endpoints(&std::collections::BTreeMap::from([((51820, b), None)]), 2).await.unwrap();
        assert_eq!(s.endpoints().await.unwrap(), crate::endpoints::Endpoints::from([(51820, [(a, e)].into())]));
    }

    #[tokio::test]
    async fn apply_record_roundtrip_in_memory() {
        let s = Store::open(None).await.unwrap();
        assert_eq!(s.last_apply().await.unwrap(), None);
        let r = ApplyRecord {
            generation: 2,
            applied_generation: 1,
            ok: false,
            errors: vec!["x".into()],
            finished_at: 5,
            duration_ms: 7,
            changed: vec![51820],
        };
        s.save_apply(&r).await.unwrap();
        assert_eq!(s.last_apply().await.unwrap(), Some(r));
    }
}
