//! Wiring: one shared state built from a [`Config`], two listeners, background tasks.
//!
//! `App::build` binds the listeners (port 0 works, for tests) and opens the store lazily — the
//! gateway starts even when the store is down: pass-through serves at once, migrations are
//! retried in the background and gating begins when they succeed (`/readyz` is 503 until then).
//! `App::run` serves until `shutdown`, then stops accepting and drains in-flight requests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, AdminState};
use crate::config::{Config, Policy};
use crate::metrics::{ApprovalEvent, Metrics};
use crate::proxy::{self, Proxy, Upstream};
use crate::reload::{EnvFn, Reloader};
use crate::store::Store;

/// How often due approvals are turned into `expired` transitions.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The gateway, built and bound but not yet serving: [`App::build`], then [`App::run`].
pub struct App {
    config: Config,
    store: Store,
    policy: Arc<ArcSwap<Policy>>,
    metrics: Arc<Metrics>,
    proxy_listener: TcpListener,
    admin_listener: TcpListener,
    reloader: Option<Arc<Reloader>>,
    /// Serve the data plane on the caller's runtime instead of its own shard threads.
    inline_proxy: bool,
}

impl App {
    /// Bind both listeners and set up the store, the metrics and the live policy; the store
    /// is opened lazily, so a store that is down does not fail this.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let store = Store::open(&config.store.url).context("opening the approval store")?;
        // SO_REUSEPORT: each proxy shard gets its own listener on this address (see `run`).
        let proxy_listener = proxy::listener::bind_reuseport(config.listen.proxy)
            .with_context(|| format!("binding the proxy listener {}", config.listen.proxy))?;
        let admin_listener = TcpListener::bind(config.listen.admin)
            .await
            .with_context(|| format!("binding the admin listener {}", config.listen.admin))?;
        let metrics = Arc::new(Metrics::new());
        metrics.gate_mode.set(config.policy.gate.mode.gauge());
        let policy = Arc::new(ArcSwap::new(Arc::clone(&config.policy)));
        Ok(App {
            config,
            store,
            policy,
            metrics,
            proxy_listener,
            admin_listener,
            reloader: None,
            inline_proxy: false,
        })
    }

    /// Enable hot reload (SIGHUP, `POST /v1/admin/reload`) from the file this config came from.
    pub fn reload_from(mut self, path: std::path::PathBuf, env: Box<EnvFn>) -> Self {
        let reloader = Reloader::new(
            path,
            env,
            &self.config,
            Arc::clone(&self.policy),
            Arc::clone(&self.metrics),
        );
        self.reloader = Some(Arc::new(reloader));
        self
    }

    /// Serve the data plane on the runtime that calls [`App::run`] rather than on one
    /// single-threaded runtime per core (tests that capture thread-local tracing output).
    pub fn proxy_on_this_runtime(mut self) -> Self {
        self.inline_proxy = true;
        self
    }

    /// The hot reloader, when [`App::reload_from`] enabled one.
    pub fn reloader(&self) -> Option<&Arc<Reloader>> {
        self.reloader.as_ref()
    }

    /// The address the proxy listener is bound to (the real port when configured as 0).
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_listener
            .local_addr()
            .unwrap_or(self.config.listen.proxy)
    }

    /// The address the admin listener is bound to (the real port when configured as 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .unwrap_or(self.config.listen.admin)
    }

    /// The approval store the gate and the admin API share.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The process's metrics, as served at `/metrics`.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Serve both listeners until `shutdown` resolves, then drain.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let upstream = Upstream::new(&self.config.upstream)
            .context("building the upstream client")?
            .with_body_timeouts(self.config.listen.body_timeouts);
        let proxy = Proxy::with_canvas_decide(
            upstream,
            Arc::clone(&self.metrics),
            Arc::clone(&self.policy),
            self.store.clone(),
            self.config.molecule.is_some(),
        );
        let mirror_health = self
            .config
            .molecule
            .as_ref()
            .map(|_| Arc::new(crate::mirror::MirrorHealth::default()));
        let admin = api::router(AdminState {
            store: self.store.clone(),
            policy: Arc::clone(&self.policy),
            metrics: Arc::clone(&self.metrics),
            pending: Arc::default(),
            reloader: self.reloader.clone(),
            mirror: mirror_health.clone(),
        });
        tracing::info!(
            proxy = %self.proxy_addr(), admin = %self.admin_addr(), summary = %self.config.summary(),
            "approval-gateway serving"
        );

        #[cfg(unix)]
        let sighup = self
            .reloader
            .clone()
            .map(|r| tokio::spawn(crate::reload::on_sighup(r)));
        let migrator = tokio::spawn({
            let store = self.store.clone();
            let stop = stopped(stop_rx.clone());
            async move { store.migrate_until_ready(stop).await }
        });
        let notifier = crate::notify::spawn(
            self.config.notify.clone(),
            self.store.clone(),
            Arc::clone(&self.policy),
            Arc::clone(&self.metrics),
            stopped(stop_rx.clone()),
        )
        .context("starting notifications")?;
        // The canvas mirror (docs/molecule.md §8), only when `[molecule] mirror_approvals` is on.
        // With several replicas, one runs the worker (`worker = true`); all intercept decides.
        let worker = self.config.molecule.clone().filter(|m| m.worker);
        let mirror = match (worker, mirror_health) {
            (Some(settings), Some(health)) => Some(
                crate::mirror::spawn(
                    settings,
                    self.store.clone(),
                    Arc::clone(&self.policy),
                    Arc::clone(&self.metrics),
                    health,
                    stopped(stop_rx.clone()),
                )
                .context("starting the canvas mirror")?,
            ),
            _ => None,
        };
        let sweeper = tokio::spawn(sweep(
            self.store.clone(),
            Arc::clone(&self.metrics),
            stopped(stop_rx.clone()),
        ));
        let admin_server = axum::serve(self.admin_listener, admin)
            .with_graceful_shutdown(stopped(stop_rx.clone()));
        let admin_task = tokio::spawn(async move { admin_server.await });
        if self.inline_proxy {
            proxy::serve(self.proxy_listener, proxy, stopped(stop_rx)).await;
        } else {
            // The data plane runs on one single-threaded runtime per core
            // (`serve_sharded_from`): a connection, its handling and its upstream connections
            // stay on one thread. The admin listener, the store's background work and the
            // sweeper stay on this runtime.
            let listener = self
                .proxy_listener
                .into_std()
                .context("handing over the proxy listener")?;
            let shards = proxy::listener::serve_sharded_from(
                listener,
                proxy_shards(),
                proxy,
                stop_rx.clone(),
                proxy::DEFAULT_DRAIN,
            )
            .context("starting the proxy shards")?;
            stopped(stop_rx).await;
            shards.join().await;
        }

        // The admin listener holds SSE streams open; give it a moment, then stop it.
        if tokio::time::timeout(Duration::from_secs(5), admin_task)
            .await
            .is_err()
        {
            tracing::warn!("admin listener did not drain in 5s; closing");
        }
        #[cfg(unix)]
        if let Some(task) = sighup {
            task.abort();
        }
        migrator.abort();
        sweeper.abort();
        if let Some(task) = notifier {
            task.abort();
        }
        if let Some(task) = mirror {
            task.abort();
        }
        tracing::info!("approval-gateway stopped");
        Ok(())
    }
}

/// One proxy shard per available core (`GATEWAY_PROXY_THREADS` overrides).
fn proxy_shards() -> usize {
    std::env::var("GATEWAY_PROXY_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
}

/// Resolves once the shutdown flag is raised (or its sender is gone).
pub(crate) async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Expiry is enforced at read time in every query; this only turns due approvals into
/// `expired` transitions (so events and metrics see them). The pending gauge is counted when
/// `/metrics` is read (`api::health::PendingGauge`).
async fn sweep(store: Store, metrics: Arc<Metrics>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        if !store.is_ready() {
            continue;
        }
        let now = chrono::Utc::now();
        match store.expire_due(now).await {
            Ok(expired) => {
                for a in &expired {
                    metrics.approval(&a.action, ApprovalEvent::expired);
                    tracing::info!(event = "expired", approval_id = %a.id, action = %a.action, "approval expired");
                }
            }
            Err(e) => {
                metrics.store_errors.inc();
                tracing::warn!(error = %e, "expiry sweep failed");
            }
        }
    }
}
