//! Coarse timeouts for the two deadlines armed on every request: hyper's header-read timeout
//! (the downstream side, `proxy/listener.rs`) and the upstream request timeout (and for the
//! request-body timeouts: relayed, `body.rs`; buffered, the gated path).
//!
//! With tokio's timer each of them is a timer-wheel insert and removal per request, and the
//! wheel's bookkeeping on every park. Moving both here took a pass-through request from 22.2k
//! to 20.3k instructions (callgrind, release build, `bench/run --parts callgrind`). Both deadlines are
//! seconds away and only have to catch what stalls, so they need not be precise to the
//! millisecond. Here a deadline is a slot in a per-shard slab (`shard.rs`), and one ticker task per slab
//! scans it every [`TICK`] and wakes what is due. Arming one is a lock, a slab insert and a
//! waker clone; disarming is a lock and a removal. The ticker runs only while the slab holds
//! something, so an idle gateway does not wake up for it.
//!
//! Input: deadlines. Output: wake-ups. Invariant: a deadline is never reported as passed before
//! it has, and its task is woken no later than one [`TICK`] (plus scheduling) after it. Time is
//! tokio's clock (`tokio::time::Instant`), so tests can pause it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use slab::Slab;
use tokio::time::MissedTickBehavior;

use super::shard;

/// How often due deadlines are looked for: how late, at most, one fires.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// The current time on tokio's clock.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// One shard's deadlines (held by `shard.rs`). A deadline armed on one shard may be disarmed on
/// another thread (a task moved by a multi-threaded runtime): it keeps its own handle to this.
#[derive(Debug, Default)]
pub(super) struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    slots: Slab<Slot>,
    /// A ticker task is running for this slab.
    ticking: bool,
}

#[derive(Debug)]
struct Slot {
    deadline: Instant,
    /// Taken by the ticker when it wakes the task, so a task is woken once per registration.
    waker: Option<Waker>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A slot holds no invariant a panic could break: keep going with the data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Register `slot`, starting a ticker on the current runtime if none is running.
    ///
    /// Outside a tokio runtime no ticker can start: the deadline is then only noticed when its
    /// task is polled for another reason (the gateway arms deadlines only on its runtimes).
    fn insert(self: &Arc<Self>, slot: Slot) -> usize {
        let (key, start) = {
            let mut inner = self.lock();
            let key = inner.slots.insert(slot);
            let start = !inner.ticking;
            inner.ticking = true;
            (key, start)
        };
        if start {
            // Spawned with the lock released: a runtime that is shutting down drops the task
            // at once, and `Ticking::drop` takes the lock.
            let ticking = Ticking {
                registry: Arc::clone(self),
                armed: true,
            };
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn(ticker(ticking))),
                Err(_) => drop(ticking),
            }
        }
        key
    }
}

/// The ticker's hold on its slab. However the ticker ends (the slab ran empty, or its runtime
/// shut down and dropped it) the slab learns that it has no ticker, and the next deadline armed
/// starts one.
struct Ticking {
    registry: Arc<Registry>,
    /// Cleared when the ticker stops by itself (it then told the slab under the lock).
    armed: bool,
}

impl Drop for Ticking {
    fn drop(&mut self) {
        if self.armed {
            self.registry.lock().ticking = false;
        }
    }
}

async fn ticker(mut ticking: Ticking) {
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut due = Vec::new();
    loop {
        every.tick().await;
        let now = now();
        {
            let mut inner = ticking.registry.lock();
            for (_, slot) in inner.slots.iter_mut() {
                if slot.deadline <= now {
                    due.extend(slot.waker.take());
                }
            }
            if inner.slots.is_empty() {
                // Decided under the lock: the next insert sees `ticking == false` and starts
                // a new ticker.
                inner.ticking = false;
                ticking.armed = false;
            }
        }
        // Woken outside the lock: a waker may run arbitrary code.
        due.drain(..).for_each(Waker::wake);
        if !ticking.armed {
            return;
        }
    }
}

/// One deadline, armed on its first poll (no clock read) and disarmed on drop.
#[derive(Debug)]
pub(super) struct Deadline {
    at: Instant,
    /// Its slab and slot, once polled.
    slot: Option<(Arc<Registry>, usize)>,
}

impl Deadline {
    pub(super) fn new(at: Instant) -> Self {
        Self { at, slot: None }
    }

    pub(super) fn reset(&mut self, at: Instant) {
        self.at = at;
        if let Some((registry, key)) = &self.slot {
            registry.lock().slots[*key].deadline = at;
        }
    }

    /// Ready once `at` has passed; until then the task is woken at most one [`TICK`] after it.
    pub(super) fn poll_passed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some((registry, key)) = &self.slot else {
            // First poll: no clock read. A deadline already past is woken at the next tick.
            let registry = shard::timers();
            let key = registry.insert(Slot {
                deadline: self.at,
                waker: Some(cx.waker().clone()),
            });
            self.slot = Some((registry, key));
            return Poll::Pending;
        };
        if now() >= self.at {
            return Poll::Ready(());
        }
        let mut inner = registry.lock();
        let waker = &mut inner.slots[*key].waker;
        if waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        let old = waker.replace(cx.waker().clone());
        drop(inner);
        drop(old); // outside the lock: dropping a waker may run arbitrary code
        Poll::Pending
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some((registry, key)) = self.slot.take() {
            let slot = registry.lock().slots.remove(key);
            drop(slot); // its waker, outside the lock
        }
    }
}

impl Future for Deadline {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().poll_passed(cx)
    }
}

impl Sleep for Deadline {}

/// hyper's [`Timer`] on [`Deadline`]s (hyper uses it for the header-read timeout).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CoarseTimer;

impl Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        match now().checked_add(duration) {
            Some(at) => self.sleep_until(at),
            None => Box::pin(Never),
        }
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(Deadline::new(deadline))
    }

    fn now(&self) -> Instant {
        now()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<Deadline>() {
            Some(d) => d.get_mut().reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A sleep whose deadline is too far away to represent.
#[derive(Debug)]
struct Never;

impl Future for Never {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl Sleep for Never {}

pin_project_lite::pin_project! {
    /// `fut`, or `Err(Elapsed)` once its deadline has passed (see [`timeout`]). A deadline
    /// too far away to represent is `None`: never.
    #[derive(Debug)]
    pub(crate) struct Timeout<F> {
        #[pin]
        fut: F,
        deadline: Option<Deadline>,
    }
}

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// Run `fut` until `after` has passed since `from`, on the coarse clock. `fut` is polled first,
/// so a future that is ready when its deadline is too still wins.
pub(crate) fn timeout<F: Future>(from: Instant, after: Duration, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        deadline: from.checked_add(after).map(Deadline::new),
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match this.deadline {
            Some(deadline) => deadline.poll_passed(cx).map(|()| Err(Elapsed)),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
impl Registry {
    fn len(&self) -> usize {
        self.lock().slots.len()
    }
}

/// Deadlines armed on this shard and not yet disarmed (for tests).
#[cfg(test)]
fn armed() -> usize {
    shard::timers().len()
}

#[cfg(test)]
mod tests {
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
        assert!(!shard::timers().lock().ticking);
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
        assert!(!shard::timers().lock().ticking);
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
}
