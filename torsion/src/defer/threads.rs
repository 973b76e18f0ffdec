//! Threads (Twisted's `deferToThread`, `callInThread`, `blockingCallFromThread`): a bounded
//! pool of worker threads owned by the reactor, and calls from a worker back into the reactor.
//!
//! The pool starts no thread until it is first used, then starts workers as jobs wait, up to
//! its size ([`Reactor::set_thread_pool_size`], default [`DEFAULT_POOL_SIZE`]); jobs beyond
//! that wait in a queue. It is stopped and its threads joined after the reactor's shutdown
//! triggers (and when the reactor is dropped): jobs still queued then are dropped, and a
//! worker blocked in [`Handle::blocking_call_from_thread`] gets an error instead of waiting
//! forever. Joining waits for the jobs that are running, as Twisted's thread pool does.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Deferred, Failure};
use crate::reactor::{Phase, SystemEvent};
use crate::{Handle, Reactor};

/// The number of worker threads a reactor's pool starts at most, unless
/// [`Reactor::set_thread_pool_size`] says otherwise (Twisted's default maximum is 10).
pub const DEFAULT_POOL_SIZE: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

/// What a worker sends back: the job's id and its result (or panic), erased.
type Done = Box<dyn Any + Send>;

/// Resolvers of the Deferreds of jobs in flight, on the reactor thread.
type Pending = HashMap<u64, Box<dyn FnOnce(Done)>>;

struct Queue {
    jobs: VecDeque<Job>,
    idle: usize,
    stopping: bool,
}

struct PoolShared {
    queue: Mutex<Queue>,
    cv: Condvar,
}

impl PoolShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A reactor's thread pool (kept by its executor).
pub(crate) struct Pool {
    shared: Arc<PoolShared>,
    workers: Vec<JoinHandle<()>>,
    size: usize,
    next_id: u64,
    pending: Pending,
}

impl Pool {
    fn new(size: usize) -> Pool {
        Pool {
            shared: Arc::new(PoolShared {
                queue: Mutex::new(Queue {
                    jobs: VecDeque::new(),
                    idle: 0,
                    stopping: false,
                }),
                cv: Condvar::new(),
            }),
            workers: Vec::new(),
            size: size.max(1),
            next_id: 0,
            pending: HashMap::new(),
        }
    }

    /// Queues `job`, starting a worker when all are busy and the pool is not full. Fails (and
    /// gives the job up) only when no worker runs and none can be started: the job would wait
    /// for ever.
    fn submit(&mut self, job: Job) -> std::io::Result<()> {
        let start_one = {
            let mut q = self.shared.lock();
            q.jobs.push_back(job);
            q.jobs.len() > q.idle && self.workers.len() < self.size
        };
        if start_one {
            let shared = self.shared.clone();
            let n = self.workers.len();
            match std::thread::Builder::new()
                .name(format!("torsion-pool-{n}"))
                .spawn(move || worker(&shared))
            {
                Ok(h) => self.workers.push(h),
                // No new thread: the job waits for a running worker, if there is one.
                Err(e) if self.workers.is_empty() => {
                    let job = self.shared.lock().jobs.pop_back();
                    drop(job);
                    return Err(e);
                }
                Err(e) => tracing::warn!(error = %e, "cannot start another thread-pool worker"),
            }
        }
        self.shared.cv.notify_one();
        Ok(())
    }

    /// Stops the workers (dropping queued jobs) and joins them.
    pub(crate) fn stop(&mut self) {
        let dropped = {
            let mut q = self.shared.lock();
            q.stopping = true;
            std::mem::take(&mut q.jobs)
        };
        drop(dropped);
        self.shared.cv.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.pending.clear();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop();
    }
}

fn worker(shared: &PoolShared) {
    loop {
        let job = {
            let mut q = shared.lock();
            loop {
                if q.stopping {
                    return;
                }
                if let Some(job) = q.jobs.pop_front() {
                    break job;
                }
                q.idle += 1;
                q = shared.cv.wait(q).unwrap_or_else(|p| p.into_inner());
                q.idle -= 1;
            }
        };
        // A panic is caught by the job itself (it becomes the Deferred's failure).
        job();
    }
}

impl Reactor {
    fn with_pool<R>(&self, f: impl FnOnce(&mut Pool) -> R) -> R {
        let exec = &self.inner.executor;
        let mut slot = exec.pool.borrow_mut();
        if slot.is_none() {
            *slot = Some(Pool::new(exec.pool_size.get()));
            self.inner.shared.threads_stopping(false);
            // Stopped and joined once the shutdown triggers have run.
            self.add_system_event_trigger(Phase::After, SystemEvent::Shutdown, |r| {
                r.stop_thread_pool()
            });
        }
        f(slot.as_mut().expect("made above"))
    }

    /// Stops the pool and joins its threads (at shutdown, and when the reactor is dropped).
    pub(crate) fn stop_thread_pool(&self) {
        self.inner.shared.threads_stopping(true);
        let pool = self.inner.executor.pool.borrow_mut().take();
        drop(pool); // joins, with no borrow held
    }

    /// Sets the number of worker threads the pool starts at most (Twisted's
    /// `suggestThreadPoolSize`); at least 1. It applies to a pool not started yet: call it
    /// before the first [`defer_to_thread`](Reactor::defer_to_thread).
    #[doc(alias = "suggestThreadPoolSize")]
    pub fn set_thread_pool_size(&self, size: usize) {
        self.inner.executor.pool_size.set(size.max(1));
        if let Some(pool) = self.inner.executor.pool.borrow_mut().as_mut() {
            pool.size = size.max(1);
        }
    }

    /// Runs `f` on the reactor's thread pool and returns a Deferred of its result (Twisted's
    /// `deferToThread`). A panic in `f` becomes the Deferred's failure
    /// ([`Panicked`](super::Panicked)). The Deferred fires on the reactor thread, so the
    /// reactor must be running for it to fire. Cancelling it does not stop `f` (a thread
    /// cannot be interrupted): the Deferred fails with [`Cancelled`](super::Cancelled) and the
    /// result is dropped when it comes.
    ///
    /// ```
    /// use torsion::Reactor;
    ///
    /// let reactor = Reactor::new()?;
    /// let d = reactor.defer_to_thread(|| (1..=10u64).product::<u64>()); // blocking work
    /// assert_eq!(reactor.run_until_complete(d).unwrap(), 3_628_800);
    /// # Ok::<(), torsion::Error>(())
    /// ```
    #[doc(alias = "deferToThread")]
    pub fn defer_to_thread<T, F>(&self, f: F) -> Deferred<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (d, fire) = Deferred::<T>::new();
        let refused_fire = fire.clone();
        let handle = self.handle();
        let refused = self.with_pool(move |pool| {
            let id = pool.next_id;
            pool.next_id += 1;
            pool.pending.insert(
                id,
                Box::new(move |done: Done| {
                    let r = match done.downcast::<Result<T, Box<dyn Any + Send>>>() {
                        Ok(r) => *r,
                        Err(_) => unreachable!("torsion: a pool job's result of another type"),
                    };
                    let _ = fire.fire(r.map_err(Failure::from_panic));
                }),
            );
            let submitted = pool.submit(Box::new(move || {
                let r: Result<T, Box<dyn Any + Send>> = catch_unwind(AssertUnwindSafe(f));
                let done: Done = Box::new(r);
                // A reactor that is gone has no Deferred to fire.
                let _ = handle.call_from_thread(move |r: &Reactor| {
                    let job = r
                        .inner
                        .executor
                        .pool
                        .borrow_mut()
                        .as_mut()
                        .and_then(|p| p.pending.remove(&id));
                    if let Some(job) = job {
                        job(done);
                    }
                });
            }));
            submitted.err().inspect(|_| {
                pool.pending.remove(&id);
            })
        });
        if let Some(e) = refused {
            // No thread to run it: the Deferred fails now (no pool borrow held).
            let _ = refused_fire.errback(Failure::new(e));
        }
        d
    }

    /// Runs `f` on the reactor's thread pool, for its side effects (Twisted's `callInThread`).
    /// A panic in `f` is logged.
    #[doc(alias = "callInThread")]
    pub fn call_in_thread<F: FnOnce() + Send + 'static>(&self, f: F) {
        let refused = self.with_pool(move |pool| {
            pool.submit(Box::new(move || {
                if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
                    tracing::error!(
                        message = %crate::error::panic_message(&*payload),
                        "a call_in_thread function panicked"
                    );
                }
            }))
        });
        if let Err(e) = refused {
            tracing::error!(error = %e, "call_in_thread: no thread can be started; the call is dropped");
        }
    }
}

/// The failure of a Deferred waited on from another thread with
/// [`Handle::blocking_call_from_thread`], as text: a [`Failure`] cannot cross threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFailure {
    /// The failure's [`type_name`](Failure::type_name).
    pub type_name: &'static str,
    /// Its [`message`](Failure::message).
    pub message: String,
}

impl RemoteFailure {
    fn of(f: &Failure) -> RemoteFailure {
        RemoteFailure {
            type_name: f.type_name(),
            message: f.message(),
        }
    }

    fn local(why: &str) -> RemoteFailure {
        RemoteFailure {
            type_name: "torsion::Error",
            message: why.to_string(),
        }
    }
}

impl fmt::Display for RemoteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.type_name, self.message)
    }
}

impl std::error::Error for RemoteFailure {}

impl Handle {
    /// From a thread other than the reactor's (typically a pool worker), runs `f` on the
    /// reactor thread and blocks until the Deferred it returns has a result (Twisted's
    /// `blockingCallFromThread`).
    ///
    /// # Errors
    /// The Deferred's failure, as a [`RemoteFailure`]; also one when the Deferred is dropped
    /// before it has a result, when the reactor is gone or shuts its thread pool down while
    /// waiting, or when called on the reactor's own thread (where it could only deadlock).
    ///
    /// ```
    /// use torsion::{defer::succeed, Reactor};
    ///
    /// let reactor = Reactor::new()?;
    /// let handle = reactor.handle();
    /// let d = reactor.defer_to_thread(move || {
    ///     // On a worker: ask the reactor thread for something, and wait for it.
    ///     handle.blocking_call_from_thread(|_r| succeed(20)).unwrap() + 1
    /// });
    /// assert_eq!(reactor.run_until_complete(d).unwrap(), 21);
    /// # Ok::<(), torsion::Error>(())
    /// ```
    #[doc(alias = "blockingCallFromThread")]
    pub fn blocking_call_from_thread<T, F>(&self, f: F) -> Result<T, RemoteFailure>
    where
        T: Send + 'static,
        F: FnOnce(&Reactor) -> Deferred<T> + Send + 'static,
    {
        if self.shared.is_reactor_thread() {
            return Err(RemoteFailure::local(
                "blocking_call_from_thread on the reactor thread would deadlock",
            ));
        }
        let (tx, rx) = mpsc::channel::<Result<T, RemoteFailure>>();
        self.call_from_thread(move |r: &Reactor| {
            let _ = f(r).add_both(move |res| {
                let _ = tx.send(res.map_err(|f| RemoteFailure::of(&f)));
                Ok(())
            });
        })
        .map_err(|e| RemoteFailure::local(&e.to_string()))?;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => return r,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(RemoteFailure::local(
                        "the Deferred was dropped before it had a result, or the reactor is gone",
                    ))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.shared.threads_stopping.load(Ordering::Acquire) {
                        return Err(RemoteFailure::local(
                            "the reactor is shutting its thread pool down",
                        ));
                    }
                }
            }
        }
    }
}
