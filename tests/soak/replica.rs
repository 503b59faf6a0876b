//! One gateway replica (an `App` on port 0, its data plane on shard threads of its own) in front
//! of a shared upstream, on a given store URL; stopped gracefully (the same drain as SIGTERM).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use approval_gateway::app::App;
use approval_gateway::config;
use approval_gateway::metrics::Metrics;
use tokio::sync::oneshot;

use crate::support::gateway::{POLICY, SECRET};

/// The upstream's answer head must come within this; the slow-beyond-timeout fault exceeds it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest `Prefer: wait` the gateway honours; held requests use at most this.
pub const MAX_WAIT: Duration = Duration::from_secs(3);

pub struct Replica {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: Arc<Metrics>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn start(store_url: &str, upstream_url: &str) -> Replica {
    let text = format!(
        "[listen]\nproxy = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         [upstream]\nurl = \"{upstream_url}\"\nrequest_timeout = \"{}s\"\n\
         [store]\nurl = \"{store_url}\"\n\
         [gate]\nmax_wait = \"{}s\"\n\
         [jwt]\nalgorithms = [\"HS256\"]\nhs_secret_env = \"TEST_JWT_SECRET\"\n\
         {POLICY}",
        REQUEST_TIMEOUT.as_secs(),
        MAX_WAIT.as_secs(),
    );
    let env = |k: &str| match k {
        "TEST_JWT_SECRET" => Some(SECRET.to_owned()),
        "MOLECULE_PLATFORM_APPROVAL_GATE" => Some("enforce".to_owned()),
        _ => None,
    };
    let config = config::parse(&text, &env).unwrap_or_else(|e| panic!("soak config: {e}"));
    let app = App::build(config).await.expect("gateway builds");
    let (proxy, admin, store) = (app.proxy_addr(), app.admin_addr(), app.store().clone());
    let metrics = Arc::clone(app.metrics());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    let since = Instant::now();
    while !store.is_ready() {
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "replica's store never became ready"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Replica {
        proxy,
        admin,
        metrics,
        stop,
        task,
    }
}

impl Replica {
    /// Raise the shutdown flag (stop accepting, drain in-flight requests); await the result with
    /// [`Stopping::done`].
    pub fn begin_stop(self) -> Stopping {
        let _ = self.stop.send(());
        Stopping { task: self.task }
    }

    pub async fn stop(self) {
        self.begin_stop().done().await;
    }
}

pub struct Stopping {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Stopping {
    pub async fn done(self) {
        self.task
            .await
            .expect("gateway task")
            .expect("gateway ran and stopped cleanly");
    }
}
