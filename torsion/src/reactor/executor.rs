//! The local executor: futures run on the reactor thread, woken from any thread.
//!
//! A task is polled once synchronously when it is spawned (as Twisted's `ensureDeferred` runs a
//! coroutine up to its first `await`; tokio's `spawn_local` does not), then each time its waker
//! fires. Wakers are `Send + Sync` and may be used anywhere:
//!
//! * a wake on the reactor's own thread goes to a reactor-local ready list (no mutex, no
//!   eventfd write): the first wake after the list was drained queues one `call_soon` that polls
//!   every task on it;
//! * a wake from another thread is a call through the reactor's thread queue (a mutex, and an
//!   eventfd write when the reactor may sleep).
//!
//! Repeated wakes before the next poll are coalesced either way.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::ThreadId;

use super::handle::Shared;
use super::{Inner, Reactor};
use crate::defer::{Cancelled, Failure};

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

thread_local! {
    /// The reactors of this thread that have tasks, by the address of their `Shared` (what a
    /// waker holds): how a same-thread wake finds its reactor without a mutex.
    static LOCAL: RefCell<Vec<(usize, Weak<Inner>)>> = const { RefCell::new(Vec::new()) };
}

fn shared_key(shared: &Arc<Shared>) -> usize {
    Arc::as_ptr(shared) as usize
}

fn local_reactor(key: usize) -> Option<Rc<Inner>> {
    LOCAL
        .try_with(|l| {
            l.borrow()
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, w)| w.upgrade())
        })
        .ok()
        .flatten()
}

struct TaskWaker {
    shared: Arc<Shared>,
    /// The reactor's thread: a wake from it takes the local path.
    thread: ThreadId,
    slot: u32,
    generation: u32,
    /// True while a poll is already queued for this task.
    queued: AtomicBool,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let (slot, generation) = (self.slot, self.generation);
        if std::thread::current().id() == self.thread {
            if let Some(inner) = local_reactor(shared_key(&self.shared)) {
                inner
                    .executor
                    .ready(Reactor::from_inner(inner.clone()), slot, generation);
                return;
            }
            // The reactor is gone (or its thread is tearing down): nothing can run the task.
            return;
        }
        // A gone reactor cannot run the task any more: nothing to do.
        let _ = self.shared.push(Box::new(move |r: &Reactor| {
            r.inner.executor.poll(r, slot, generation)
        }));
    }
}

enum State {
    /// Waiting for its waker; the future is here.
    Idle(LocalFuture),
    /// Being polled (the future is on the poller's stack).
    Running,
    /// Cancelled while being polled: drop the future when the poll returns.
    CancelledWhileRunning,
}

struct Slot {
    generation: u32,
    task: Option<(State, Arc<TaskWaker>)>,
}

pub(crate) struct Executor {
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
    /// Tasks woken on the reactor thread, polled by one queued `call_soon`.
    ready: RefCell<Vec<(u32, u32)>>,
    /// This reactor is in the thread's `LOCAL` list.
    registered: std::cell::Cell<bool>,
    /// The reactor's thread pool, started on first use (`defer_to_thread`, `call_in_thread`).
    pub(crate) pool: RefCell<Option<crate::defer::threads::Pool>>,
    /// The size the pool is made with.
    pub(crate) pool_size: std::cell::Cell<usize>,
}

impl Default for Executor {
    fn default() -> Self {
        Executor {
            slots: RefCell::default(),
            free: RefCell::default(),
            ready: RefCell::default(),
            registered: std::cell::Cell::new(false),
            pool: RefCell::new(None),
            pool_size: std::cell::Cell::new(crate::defer::DEFAULT_POOL_SIZE),
        }
    }
}

impl Executor {
    /// Number of unfinished tasks.
    pub(crate) fn len(&self) -> usize {
        self.slots
            .borrow()
            .iter()
            .filter(|s| s.task.is_some())
            .count()
    }

    /// Queues a same-thread wake; the first one after a drain schedules the drain.
    fn ready(&self, reactor: Reactor, slot: u32, generation: u32) {
        let first = {
            let mut ready = self.ready.borrow_mut();
            ready.push((slot, generation));
            ready.len() == 1
        };
        if first {
            reactor.call_soon(|r| {
                let batch = std::mem::take(&mut *r.inner.executor.ready.borrow_mut());
                for (slot, generation) in batch {
                    r.inner.executor.poll(r, slot, generation);
                }
            });
        }
    }

    fn register(&self, reactor: &Reactor) {
        if self.registered.replace(true) {
            return;
        }
        let key = shared_key(&reactor.inner.shared);
        let weak = Rc::downgrade(&reactor.inner);
        let _ = LOCAL.try_with(|l| {
            let mut l = l.borrow_mut();
            // Forget reactors that are gone (their address may be reused by this one).
            l.retain(|(k, w)| w.strong_count() > 0 && *k != key);
            l.push((key, weak));
        });
    }

    /// Spawns `fut`, whose output goes to the returned [`Task`].
    pub(crate) fn spawn<T: 'static>(
        &self,
        reactor: &Reactor,
        fut: impl Future<Output = T> + 'static,
    ) -> Task<T> {
        let out: Rc<RefCell<Output<T>>> = Rc::new(RefCell::new(Output {
            result: None,
            ended: false,
            waker: None,
        }));
        let guard = OutputGuard(out.clone());
        let wrapped = async move {
            let guard = guard;
            let result = match (CatchUnwind(Box::pin(fut))).await {
                Ok(v) => Ok(v),
                Err(payload) => {
                    let f = Failure::from_panic(payload);
                    tracing::error!(
                        message = %f.message(),
                        "a task spawned on the reactor panicked; the task is dropped"
                    );
                    Err(f)
                }
            };
            guard.finish(result);
        };
        let (slot, generation) = self.spawn_erased(reactor, Box::pin(wrapped));
        Task {
            reactor: Rc::downgrade(&reactor.inner),
            slot,
            generation,
            out,
        }
    }

    fn spawn_erased(&self, reactor: &Reactor, fut: LocalFuture) -> (u32, u32) {
        self.register(reactor);
        let slot = match self.free.borrow_mut().pop() {
            Some(s) => s,
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(Slot {
                    generation: 0,
                    task: None,
                });
                (slots.len() - 1) as u32
            }
        };
        let generation = {
            let mut slots = self.slots.borrow_mut();
            let s = &mut slots[slot as usize];
            let waker = Arc::new(TaskWaker {
                shared: reactor.inner.shared.clone(),
                thread: std::thread::current().id(),
                slot,
                generation: s.generation,
                queued: AtomicBool::new(true),
            });
            s.task = Some((State::Idle(fut), waker));
            s.generation
        };
        // This first poll is a callback of the reactor like any other, even when `spawn_local`
        // is called from outside the loop: `iterate`/`run` from it are refused (a nested
        // iteration would run this task's own wake-up while it is being polled, and lose it).
        let _looping = reactor.enter().ok();
        self.poll(reactor, slot, generation);
        (slot, generation)
    }

    /// Polls the task if it still exists. No borrow is held while the future runs.
    pub(crate) fn poll(&self, reactor: &Reactor, slot: u32, generation: u32) {
        let (mut fut, waker) = {
            let mut slots = self.slots.borrow_mut();
            let Some(s) = slots.get_mut(slot as usize) else {
                return;
            };
            if s.generation != generation {
                return;
            }
            let Some((state, waker)) = s.task.as_mut() else {
                return;
            };
            let fut = match std::mem::replace(state, State::Running) {
                State::Idle(f) => f,
                other => {
                    *state = other;
                    return;
                }
            };
            (fut, waker.clone())
        };
        waker.queued.store(false, Ordering::Release);
        let w = Waker::from(waker);
        let mut cx = Context::from_waker(&w);
        let result = catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
        let finished = match result {
            Ok(Poll::Ready(())) => true,
            Ok(Poll::Pending) => false,
            Err(payload) => {
                // (The futures spawned here catch their own panics; this is a last resort.)
                tracing::error!(
                    message = %crate::error::panic_message(&*payload),
                    "a task spawned on the reactor panicked; the task is dropped"
                );
                true
            }
        };
        let _ = reactor;
        let dropped = {
            let mut slots = self.slots.borrow_mut();
            let s = &mut slots[slot as usize];
            let cancelled = matches!(s.task.as_ref(), Some((State::CancelledWhileRunning, _)));
            if finished || cancelled {
                s.task = None;
                s.generation = s.generation.wrapping_add(1);
                self.free.borrow_mut().push(slot);
                Some(fut)
            } else {
                if let Some((state, _)) = s.task.as_mut() {
                    *state = State::Idle(fut);
                }
                None
            }
        };
        // The future may own anything (even a Task handle): drop it with no borrow held.
        drop(dropped);
    }

    fn cancel(&self, slot: u32, generation: u32) {
        let fut = {
            let mut slots = self.slots.borrow_mut();
            let Some(s) = slots.get_mut(slot as usize) else {
                return;
            };
            if s.generation != generation {
                return;
            }
            match s.task.as_mut() {
                Some((state @ State::Running, _)) => {
                    *state = State::CancelledWhileRunning;
                    None
                }
                Some((State::Idle(_), _)) => {
                    let task = s.task.take();
                    s.generation = s.generation.wrapping_add(1);
                    self.free.borrow_mut().push(slot);
                    task
                }
                _ => None,
            }
        };
        drop(fut);
    }

    fn is_finished(&self, slot: u32, generation: u32) -> bool {
        let slots = self.slots.borrow();
        match slots.get(slot as usize) {
            Some(s) => s.generation != generation || s.task.is_none(),
            None => true,
        }
    }

    /// Drops every task and stops the thread pool (when the reactor is dropped).
    pub(crate) fn clear(&self) {
        let pool = self.pool.borrow_mut().take();
        drop(pool); // joins its workers
        let tasks: Vec<_> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter_map(|s| s.task.take())
            .collect();
        drop(tasks);
        self.ready.borrow_mut().clear();
    }
}

/// Polls the inner future inside `catch_unwind`, so that a panic becomes a value.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(move || inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// Where a task's output waits for whoever awaits its [`Task`].
struct Output<T> {
    result: Option<Result<T, Failure>>,
    /// The future completed, panicked or was dropped (cancelled).
    ended: bool,
    waker: Option<Waker>,
}

/// Owned by the spawned future: records its output, or, when the future is dropped before it
/// finished (cancelled), that it ended without one; wakes the awaiter either way.
struct OutputGuard<T>(Rc<RefCell<Output<T>>>);

impl<T> OutputGuard<T> {
    fn finish(self, result: Result<T, Failure>) {
        self.0.borrow_mut().result = Some(result);
        // Drop wakes the awaiter.
    }
}

impl<T> Drop for OutputGuard<T> {
    fn drop(&mut self) {
        let waker = {
            let mut out = self.0.borrow_mut();
            out.ended = true;
            out.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A future spawned on the reactor's local executor ([`Reactor::spawn_local`],
/// [`Reactor::spawn_task`]), and the way to its output.
///
/// The task is polled once at once, inside the call that spawns it (as Twisted's
/// `ensureDeferred` runs a coroutine up to its first `await`), then on the reactor thread each
/// time it is woken. Awaiting the `Task` gives the future's output, or the [`Failure`] of a
/// panic in it ([`Panicked`](crate::defer::Panicked)) or of its cancellation
/// ([`Cancelled`]). Dropping the handle does not cancel the task; [`cancel`](Task::cancel) does.
///
/// ```
/// use torsion::Reactor;
///
/// let reactor = Reactor::new()?;
/// let answer = reactor.spawn_task(async { 6 * 7 }); // runs to completion here
/// let doubled = reactor.spawn_task(async move { answer.await.map(|n| n * 2) });
/// let n = reactor.run_until_complete(async move { doubled.await? }).unwrap();
/// assert_eq!(n, 84);
/// # Ok::<(), torsion::Error>(())
/// ```
pub struct Task<T = ()> {
    reactor: Weak<Inner>,
    slot: u32,
    generation: u32,
    out: Rc<RefCell<Output<T>>>,
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("slot", &self.slot)
            .field("generation", &self.generation)
            .field("ended", &self.out.borrow().ended)
            .finish()
    }
}

impl<T> Task<T> {
    /// Drops the future if it has not finished; awaiting the task then gives a [`Cancelled`]
    /// failure. Cancelling from inside the task's own poll drops it as soon as that poll
    /// returns.
    pub fn cancel(&self) {
        if let Some(inner) = self.reactor.upgrade() {
            inner.executor.cancel(self.slot, self.generation);
        }
    }

    /// True once the future has completed, panicked or been cancelled.
    pub fn is_finished(&self) -> bool {
        match self.reactor.upgrade() {
            Some(inner) => inner.executor.is_finished(self.slot, self.generation),
            None => true,
        }
    }
}

impl<T> Future for Task<T> {
    type Output = Result<T, Failure>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut out = self.out.borrow_mut();
        if let Some(r) = out.result.take() {
            return Poll::Ready(r);
        }
        if out.ended {
            return Poll::Ready(Err(Failure::new(Cancelled)));
        }
        if self.reactor.strong_count() == 0 {
            // The reactor (and the future with it) is gone.
            return Poll::Ready(Err(Failure::new(Cancelled)));
        }
        match &out.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => out.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::task::Waker;

    use crate::Reactor;

    /// A wake on the reactor thread goes to the local ready list, not through the thread queue
    /// (no mutex, no eventfd write); a wake from another thread goes through the queue.
    #[test]
    fn same_thread_wakes_skip_the_thread_queue() {
        // Serialised with the tests that count the process's open descriptors.
        let _serial = crate::testing::serial();
        let reactor = Reactor::new().unwrap();
        let slot: Rc<Cell<Option<Waker>>> = Rc::default();
        let polls = Rc::new(Cell::new(0));
        let (s, p) = (slot.clone(), polls.clone());
        let task = reactor.spawn_task(std::future::poll_fn(move |cx| {
            p.set(p.get() + 1);
            s.set(Some(cx.waker().clone()));
            if p.get() < 3 {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        }));
        assert_eq!(polls.get(), 1, "polled once at spawn");
        let waker = slot.take().unwrap();
        waker.wake_by_ref();
        waker.wake_by_ref(); // coalesced
        assert!(!reactor.inner.shared.has_pending(), "no thread-queue call");
        assert_eq!(reactor.inner.executor.ready.borrow().len(), 1);
        // Queued after the drain: runs once the task was polled a second time.
        let (s, r) = (slot.clone(), reactor.clone());
        reactor.call_soon(move |_| {
            assert!(r.inner.executor.ready.borrow().is_empty(), "drained");
            let w = s.take().expect("the second poll left a waker");
            // From another thread: through the thread queue.
            std::thread::spawn(move || w.wake()).join().unwrap();
            assert!(r.inner.shared.has_pending());
            let r2 = r.clone();
            r.call_later(std::time::Duration::from_millis(20), move |_| {
                r2.stop().unwrap();
            });
        });
        reactor.run().unwrap();
        assert_eq!(polls.get(), 3);
        assert!(task.is_finished());
    }
}
