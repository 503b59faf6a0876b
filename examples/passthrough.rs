//! Measurement harness: the data plane alone, pass-through only, for `bench/callgrind-passthrough.sh`.
//!
//! `passthrough LISTEN_ADDR UPSTREAM_URL [THREADS] [multi|sharded]` serves until SIGINT/SIGTERM:
//! `multi` (default) on one multi-threaded runtime with THREADS (default 2) workers, `sharded`
//! on THREADS single-threaded shards (`proxy::listener::serve_sharded`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use approval_gateway::metrics::Metrics;
use approval_gateway::proxy::{self, Proxy, Upstream};

fn main() {
    let mut args = std::env::args().skip(1);
    let listen: std::net::SocketAddr = args.next().expect("listen addr").parse().unwrap();
    let url = args.next().expect("upstream url");
    let threads: usize = args.next().map_or(2, |t| t.parse().unwrap());
    let cfg = approval_gateway::config::Upstream {
        trusted_proxies: Vec::new(),
        url: url.parse().unwrap(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(30),
    };
    let sharded = args.next().as_deref() == Some("sharded");
    let mut rt = if sharded {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let rt = rt.enable_all().build().unwrap();
    rt.block_on(async move {
        if sharded {
            let proxy = flag_off(&cfg);
            let (tx, rx) = tokio::sync::watch::channel(false);
            let shards =
                proxy::listener::serve_sharded(listen, threads, proxy, rx, proxy::DEFAULT_DRAIN)
                    .unwrap();
            shutdown().await;
            let _ = tx.send(true);
            shards.join().await;
            return;
        }
        let proxy = flag_off(&cfg);
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        proxy::serve(listener, proxy, shutdown()).await;
    });
}

/// The data plane with the gate off (no route evaluation, the store never touched).
fn flag_off(cfg: &approval_gateway::config::Upstream) -> Proxy {
    let policy = approval_gateway::config::parse("", &|_| None)
        .unwrap()
        .policy;
    let store = approval_gateway::store::Store::open("sqlite::memory:").unwrap();
    Proxy::new(
        Upstream::new(cfg).unwrap(),
        Arc::new(Metrics::new()),
        Arc::new(arc_swap::ArcSwap::new(policy)),
        store,
    )
}

async fn shutdown() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
