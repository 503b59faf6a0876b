//! Fresh, migrated stores for tests: `sqlite()` (a temp file) and `postgres()` (a fresh database
//! per call on the shared server, so concurrent test runs never see each other's rows).
//!
//! Postgres: `AG_TEST_POSTGRES_URL` overrides `postgres://postgres@127.0.0.1:5432/test` (the
//! server to create databases on). Unreachable → a loud `SKIPPED` line and `None`, unless
//! `AG_REQUIRE_POSTGRES=1`, which turns that into a failure.
//!
//! Every database a test process creates is dropped when that process exits ([`drop_created`]);
//! databases of a process that was killed are swept by the next run ([`sweep_stale`]).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use approval_gateway::store::Store;
use sqlx::{Connection, Executor, PgConnection};

const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(60);
const STALE_AFTER: Duration = Duration::from_secs(3600);

async fn ready(store: Store) -> Store {
    tokio::time::timeout(
        MIGRATE_TIMEOUT,
        store.migrate_until_ready(std::future::pending()),
    )
    .await
    .expect("store migrated in time");
    assert!(store.is_ready());
    store
}

/// A fresh SQLite store in its own temp directory (which `open` creates), migrated.
pub async fn sqlite() -> Store {
    sqlite_with_file().await.0
}

/// [`sqlite`], with the path of its database file (for a second connection to it).
pub async fn sqlite_with_file() -> (Store, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("ag-test-{}", uuid::Uuid::new_v4().simple()));
    let file = dir.join("approvals.db");
    let url = format!("sqlite://{}", file.display());
    (ready(Store::open(&url).expect("sqlite url")).await, file)
}

/// An in-memory SQLite store, migrated.
pub async fn sqlite_memory() -> Store {
    ready(Store::open("sqlite::memory:").expect("sqlite url")).await
}

fn server_url() -> String {
    std::env::var("AG_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES.to_owned())
}

/// `url` with its database name replaced by `db` (query string kept).
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[authority_end..].find('/') {
        Some(i) => &base[..authority_end + i],
        None => base,
    };
    format!("{root}/{db}{query}")
}

/// Creates a fresh database and returns its URL; `None` (after a loud SKIPPED line) when the
/// server is unreachable and `AG_REQUIRE_POSTGRES` is not `1`.
pub async fn postgres_url() -> Option<String> {
    let server = server_url();
    let admin = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(&server)).await;
    let mut admin = match admin {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return unreachable(&server, &e.to_string()),
        Err(_) => return unreachable(&server, "connect timed out"),
    };
    sweep_stale(&mut admin).await;
    let name = format!("ag_{}_{}", unix_now(), uuid::Uuid::new_v4().simple());
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create test database");
    CREATED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(name.clone());
    let _ = admin.close().await;
    Some(with_database(&server, &name))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The databases this process created, dropped at exit by [`drop_created`].
static CREATED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Drops every database this process created, when it exits (`atexit`: after the harness has
/// run every test, whether they passed or not). A `Store` has no async drop, so a test cannot
/// drop its own; `WITH (FORCE)` ends the connections pools of finished tests still hold.
/// Errors are ignored: what is left is swept by the next run ([`sweep_stale`]).
#[dtor::dtor(unsafe, method = at_binary_exit)]
fn drop_created() {
    let names = std::mem::take(&mut *CREATED.lock().unwrap_or_else(PoisonError::into_inner));
    if names.is_empty() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        let server = server_url();
        let Ok(Ok(mut admin)) =
            tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(&server)).await
        else {
            return;
        };
        for name in names {
            let _ = admin
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await;
        }
        let _ = admin.close().await;
    });
}

/// A run that was killed before [`drop_created`] leaves its databases behind, so each test
/// process, once, drops this helper's databases older than `STALE_AFTER` (their names carry
/// their creation time). Plain `DROP DATABASE` refuses one still in use; errors are ignored.
async fn sweep_stale(admin: &mut PgConnection) {
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SWEPT.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return;
    }
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname ~ '^ag_[0-9]+_[0-9a-f]{32}$'",
    )
    .fetch_all(&mut *admin)
    .await
    .unwrap_or_default();
    let cutoff = unix_now().saturating_sub(STALE_AFTER.as_secs());
    for name in names {
        let created = name.split('_').nth(1).and_then(|t| t.parse::<u64>().ok());
        if created.is_some_and(|t| t < cutoff) {
            let _ = admin
                .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
                .await;
        }
    }
}

fn unreachable(server: &str, why: &str) -> Option<String> {
    if std::env::var("AG_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!("Postgres unreachable at {server} ({why}) and AG_REQUIRE_POSTGRES=1");
    }
    eprintln!("SKIPPED: Postgres unreachable at {server} ({why}); set AG_REQUIRE_POSTGRES=1 to fail instead");
    None
}

/// A fresh, migrated Postgres store on its own database (None when skipped, see module docs).
pub async fn postgres() -> Option<Store> {
    Some(postgres_with_url().await?.0)
}

/// [`postgres`], with its database's URL (for tests that also open sessions of their own).
pub async fn postgres_with_url() -> Option<(Store, String)> {
    let url = postgres_url().await?;
    let store = ready(Store::open(&url).expect("postgres url")).await;
    Some((store, url))
}

#[test]
fn database_names_are_replaced() {
    assert_eq!(
        with_database("postgres://u@h:5432/test", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        with_database("postgres://u@h/test?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
}
