//! Hot reload (SIGHUP or `POST /v1/admin/reload`): the policy — routes, guards, callers, JWT keys,
//! TTLs, the mode — is rebuilt from the config file and swapped whole. Requests in flight keep
//! the policy they started with (they hold its `Arc`). An invalid file is rejected whole, every
//! error is logged, the old policy keeps serving. Listener addresses and the store URL are read
//! only at start: a change to them is logged as needing a restart.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{self, Config, ConfigErrors, Listen, Policy};
use crate::metrics::{Metrics, ResultLabels};

/// Reads the env for a reload (the flag and secrets may change with the file).
pub type EnvFn = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Rebuilds the policy from the config file and swaps it in (see the module docs); one per
/// process started from a file.
pub struct Reloader {
    path: PathBuf,
    env: Box<EnvFn>,
    policy: Arc<ArcSwap<Policy>>,
    metrics: Arc<Metrics>,
    /// What the process started with; changes need a restart.
    started: (Listen, String, String),
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    pub(crate) fn new(
        path: PathBuf,
        env: Box<EnvFn>,
        started: &Config,
        policy: Arc<ArcSwap<Policy>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let fixed = (
            started.listen,
            started.store.url.clone(),
            started.upstream.url.to_string(),
        );
        Self {
            path,
            env,
            policy,
            metrics,
            started: fixed,
        }
    }

    /// Rebuild the policy from the file and swap it in, or keep the old one.
    pub fn reload(&self) -> Result<(), ConfigErrors> {
        match config::load(&self.path, &*self.env) {
            Ok(new) => {
                self.warn_restart_needed(&new);
                self.metrics.gate_mode.set(new.policy.gate.mode.gauge());
                tracing::info!(path = %self.path.display(), summary = %new.summary(), "configuration reloaded");
                self.policy.store(new.policy);
                self.count("success");
                Ok(())
            }
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!(path = %self.path.display(), at = %e.at, problem = %e.message, "reload rejected");
                }
                tracing::error!(
                    count = errors.0.len(),
                    "configuration reload rejected; the previous configuration keeps serving"
                );
                self.count("failure");
                Err(errors)
            }
        }
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    fn warn_restart_needed(&self, new: &Config) {
        let (listen, store, upstream) = &self.started;
        if new.listen != *listen {
            tracing::warn!(
                "listen addresses changed in the file; they take effect after a restart"
            );
        }
        if new.store.url != *store {
            tracing::warn!("store url changed in the file; it takes effect after a restart");
        }
        if new.upstream.url.to_string() != *upstream {
            tracing::warn!(
                "upstream settings changed in the file; they take effect after a restart"
            );
        }
    }
}

/// Reload on every SIGHUP until the process stops.
#[cfg(unix)]
pub(crate) async fn on_sighup(reloader: Arc<Reloader>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload only via the admin API");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        let _ = reloader.reload();
    }
}
