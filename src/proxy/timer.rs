//! Coarse timeouts for the two deadlines armed on every request: hyper's header-read timeout
//! and the upstream request timeout (and for the request-body timeouts, `body.rs`).
//!
//! With tokio's timer each of them is a timer-wheel insert and removal per request, and the
//! wheel's bookkeeping on every park. Moving both here took a pass-through request from 22.2k
//! to 20.3k instructions (callgrind, release build, `bench/run --parts callgrind`). Both deadlines are
//! seconds away and only have to catch what stalls, so they need not be precise to the
//! millisecond. Here a deadline is a slot in a per-thread slab, and one ticker task per slab
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

/// How often due deadlines are looked for: how late, at most, one fires.
pub const TICK: Duration = Duration::from_millis(100);

thread_local! {
    /// This thread's deadlines. A deadline armed here may be disarmed on another thread (a
    /// task moved by a multi-threaded runtime): it keeps its own handle to this slab.
    static REGISTRY: Arc<Registry> = Arc::new(Registry::default());
}

/// The current time on tokio's clock.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[derive(Debug, Default)]
struct Registry {
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
            let registry = REGISTRY.with(Arc::clone);
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
pub struct CoarseTimer;

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
    pub struct Timeout<F> {
        #[pin]
        fut: F,
        deadline: Option<Deadline>,
    }
}

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// Run `fut` until `after` has passed since `from`, on the coarse clock. `fut` is polled first,
/// so a future that is ready when its deadline is too still wins.
pub fn timeout<F: Future>(from: Instant, after: Duration, fut: F) -> Timeout<F> {
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

/// Deadlines armed on this thread and not yet disarmed (for tests).
#[cfg(test)]
fn armed() -> usize {
    REGISTRY.with(|r| r.len())
}

#[cfg(test)]
#[path = "timer_tests.rs"]
mod tests;
