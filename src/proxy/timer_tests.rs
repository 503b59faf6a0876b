//! The coarse timer: on tokio's paused clock for its timing, and under hyper on a real socket for
//! what it is there for (a stalled request head, an idle keep-alive connection).

use std::future::poll_fn;
use std::task::Poll;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant as TokioInstant;

use super::*;

/// Poll `sleep` once (registering it), expecting it to be pending.
async fn poll_once(sleep: &mut Pin<Box<dyn Sleep>>) {
    poll_fn(|cx| {
        assert!(sleep.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    })
    .await;
}

/// How long `fut` took on the paused clock. A deadline that never fires fails the test (after
/// an hour of paused time, which passes at once) instead of hanging it.
async fn took(fut: impl Future<Output = ()>) -> Duration {
    let start = TokioInstant::now();
    let hour = Duration::from_secs(3600);
    tokio::time::timeout(hour, fut)
        .await
        .expect("the deadline fired");
    start.elapsed()
}

/// Fired at `deadline` or up to one tick after it, never before.
fn assert_fired(took: Duration, deadline: Duration) {
    assert!(
        (deadline..=deadline + TICK).contains(&took),
        "{took:?} for a {deadline:?} deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn a_sleep_fires_after_its_deadline_within_one_tick() {
    let thirty = Duration::from_secs(30);
    assert_fired(took(CoarseTimer.sleep(thirty)).await, thirty);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_already_past_fires_at_the_next_tick() {
    assert_fired(took(CoarseTimer.sleep_until(now())).await, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn reset_moves_the_deadline_of_an_armed_sleep() {
    let start = TokioInstant::now();
    let mut sleep = CoarseTimer.sleep(Duration::from_secs(60));
    poll_once(&mut sleep).await;
    CoarseTimer.reset(&mut sleep, now() + Duration::from_secs(5));
    took(sleep).await;
    assert_fired(start.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_sleep_is_armed_from_its_first_poll_until_it_is_dropped() {
    let mut sleeps: Vec<_> = (0..3)
        .map(|_| CoarseTimer.sleep(Duration::from_secs(30)))
        .collect();
    assert_eq!(armed(), 0, "not polled yet");
    for s in &mut sleeps {
        poll_once(s).await;
    }
    assert_eq!(armed(), 3);
    sleeps.remove(1);
    assert_eq!(armed(), 2);
    poll_once(&mut CoarseTimer.sleep(Duration::from_secs(30))).await;
    drop(sleeps);
    assert_eq!(armed(), 0);
}

#[tokio::test(start_paused = true)]
async fn timeout_returns_the_future_or_elapsed_and_disarms() {
    let from = now();
    let two = Duration::from_secs(2);
    assert_eq!(timeout(from, two, async { 7 }).await, Ok(7));
    let never = std::future::pending::<()>();
    assert_eq!(timeout(from, two, never).await, Err(Elapsed));
    assert!(now() - from >= two);
    // Ready and due at once: the future wins.
    assert_eq!(timeout(now(), Duration::ZERO, async { 8 }).await, Ok(8));
    assert_eq!(armed(), 0);
}

/// A timeout too large to add to an instant (the config accepts `"500000000000y"`) is never,
/// not a panic.
#[tokio::test(start_paused = true)]
async fn an_unrepresentable_deadline_never_fires() {
    let hour = Duration::from_secs(3600);
    let t = timeout(now(), Duration::MAX, std::future::pending::<()>());
    assert!(tokio::time::timeout(hour, t).await.is_err());
    let sleep = CoarseTimer.sleep(Duration::MAX);
    assert!(tokio::time::timeout(hour, sleep).await.is_err());
}

/// hyper resets a sleep only after it fired (its next head wait): the new, later deadline
/// holds, and a fired sleep polled again stays ready.
#[tokio::test(start_paused = true)]
async fn a_fired_sleep_stays_ready_and_can_be_reset_later() {
    let mut sleep = CoarseTimer.sleep(Duration::from_secs(1));
    took(sleep.as_mut()).await;
    poll_fn(|cx| {
        assert!(sleep.as_mut().poll(cx).is_ready());
        Poll::Ready(())
    })
    .await;
    CoarseTimer.reset(&mut sleep, now() + Duration::from_secs(10));
    assert_fired(took(sleep).await, Duration::from_secs(10));
}

/// On a multi-threaded runtime a task, and so its deadline, may move: disarming on another
/// thread frees the slot in the slab it was armed in.
#[test]
fn a_deadline_disarmed_on_another_thread_leaves_its_own_slab() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sleep = CoarseTimer.sleep(Duration::from_secs(60));
        poll_once(&mut sleep).await;
        assert_eq!(armed(), 1);
        std::thread::spawn(move || drop(sleep)).join().unwrap();
        assert_eq!(armed(), 0);
    });
}

#[tokio::test(start_paused = true)]
async fn the_ticker_stops_when_nothing_is_armed_and_starts_again() {
    let one = Duration::from_secs(1);
    assert_fired(took(CoarseTimer.sleep(one)).await, one);
    // Nothing armed: the ticker stops at its next tick.
    tokio::time::sleep(TICK * 3).await;
    assert!(!REGISTRY.with(|r| r.lock().ticking));
    assert_fired(took(CoarseTimer.sleep(one)).await, one);
}

/// A ticker dropped with its runtime (each `#[tokio::test]` has its own) does not leave this
/// thread's deadlines without one.
#[test]
fn a_new_runtime_on_the_same_thread_gets_a_new_ticker() {
    let paused = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    };
    paused().block_on(async {
        let mut sleep = CoarseTimer.sleep(Duration::from_secs(60));
        poll_once(&mut sleep).await;
        // The runtime goes with the sleep still armed and its ticker running.
        std::mem::forget(sleep);
    });
    assert!(!REGISTRY.with(|r| r.lock().ticking));
    paused().block_on(async {
        let one = Duration::from_secs(1);
        assert_fired(took(CoarseTimer.sleep(one)).await, one);
    });
}

/// A hyper server on the production settings with a short head timeout, answering 200.
async fn server(header_read: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http = crate::proxy::listener::http1_builder(header_read);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(String::from("ok")))
            });
            let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            tokio::spawn(conn);
        }
    });
    addr
}

/// Read until the server closes the connection; what was read before it.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> String {
    let mut got = Vec::new();
    // A bound far above the timeout: the test waits on the close, the bound only stops a hang.
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closed the connection");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_stalled_request_head_is_disconnected() {
    let addr = server(Duration::from_millis(300)).await;
    // Taken before the server can have armed its deadline, so the bound below is safe.
    let started = std::time::Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let partial = b"GET / HTTP/1.1\r\nHost: x\r\n";
    stream.write_all(partial).await.unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(!answer.contains("200 OK"), "{answer}");
}

#[tokio::test]
async fn requests_on_time_are_served_and_an_idle_connection_is_closed() {
    let addr = server(Duration::from_millis(300)).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1024];
    let mut idle = std::time::Instant::now();
    for _ in 0..3 {
        // Taken before the answer is sent, so before the server waits for the next head.
        idle = std::time::Instant::now();
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        stream.write_all(request).await.unwrap();
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    }
    assert_eq!(read_to_close(&mut stream).await, "");
    assert!(idle.elapsed() >= Duration::from_millis(300));
}
