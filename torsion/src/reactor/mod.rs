//! The reactor: one event loop per thread (Twisted's `reactor`).
//!
//! A [`Reactor`] waits on file descriptors through a [`Poller`] backend
//! (select, poll or epoll, chosen at run time, or any [`Poller`] given to
//! [`Reactor::with_poller`]), and dispatches readiness events, timers
//! ([`Reactor::call_later`]), queued calls ([`Reactor::call_soon`]), calls from other threads
//! ([`Handle::call_from_thread`]) and futures ([`Reactor::spawn_local`]).
//! It is single-threaded and `!Send`; a [`Handle`] is the thread-safe way in.
//!
//! The reactor knows registrations, readiness, timers, calls and shutdown; it does not know
//! what a connection is. Transports (TCP in [`tcp`](crate::tcp), and every later kind) own a
//! [`Registration`] from [`register`](Reactor::register) until they close, and say what they
//! wait for with [`set_interest`](Reactor::set_interest).
//!
//! # The loop
//! Each iteration ([`Reactor::iterate`], and [`Reactor::run`] repeats it) goes through these
//! phases, in this order; the code in `run_iteration` follows the list step by step.
//!
//! 1. **Queued calls.** Run the calls queued with `call_soon` and the calls sent from other
//!    threads, each batch taken whole: calls queued while a batch runs wait for the next
//!    iteration, so a callback that queues itself forever cannot starve I/O.
//! 2. **Shutdown, if requested.** After [`stop`](Reactor::stop): the shutdown triggers run in
//!    three phases (before, during, after); in the "during" phase every registration still
//!    open is ended and told [`Reason::ReactorShutdown`]; the calls this queued run; then the
//!    iteration, and `run`, end here.
//! 3. **Timers.** If any delayed call is pending, read the monotonic clock once and run every
//!    delayed call due by then, in deadline order (equal deadlines in scheduling order). Calls
//!    scheduled while this phase runs wait for the next iteration even when already due.
//! 4. **Timeout.** Compute how long the poller may block: zero when calls are queued or reads
//!    are to be dispatched again (phase 6); until the earliest timer otherwise; forever when
//!    nothing is due (an idle reactor uses no CPU). `iterate(Some(t))` caps it at `t`.
//! 5. **Poll.** Wait for readiness (EINTR counts as a wake-up with no events).
//! 6. **Dispatch.** For each event, in the order the backend reported them: skip it when its
//!    token no longer names a live registration (it ended earlier in the batch, or its fd
//!    number was reused); end the registration with [`Reason::ConnectionLost`] when its
//!    `fileno()` is now -1 (closed); call `do_read_event` when readable, then `do_write` when
//!    writable and still registered for writing. A descriptor whose callback returns an error
//!    or panics is removed and its `connection_lost` is called once with the reason.
//!    Then the reads asked for again in the previous iteration run, as readable events.
//!
//! # The readiness rule
//! Descriptors added with [`add_reader`](Reactor::add_reader) and
//! [`add_writer`](Reactor::add_writer) are level-triggered on every backend: reported on every
//! iteration while ready, as in Twisted. A registration may ask for
//! [`Trigger::Edge`](crate::poller::Trigger) (torsion's TCP transports do, on epoll: one report
//! per arrival of data, served in arrival order, which brings the 99th-percentile latency of a
//! busy echo server down to tokio's; see `bench/RESULTS.md`). It then gets no new report for
//! data that was already waiting, and one rule keeps it from missing anything: its read says
//! whether it drained the descriptor ([`Readiness`]); when it says
//! [`MoreWaiting`](Readiness::MoreWaiting), the reactor dispatches it as readable again in
//! phase 6 of the next iteration, at most once per iteration (a poller event for it in that
//! iteration takes the request's place). What "drained" means (a short read, a hangup, urgent
//! data) is the transport's knowledge, not the reactor's.
//!
//! # Re-entrancy
//! A panic in any callback, `fileno()` included, is caught at the boundary and logged through
//! `tracing`; the loop carries on. No `RefCell` borrow is held while user code runs, so user
//! code may call anything on the reactor from any callback, except running the loop itself:
//! [`iterate`](Reactor::iterate) or [`run`](Reactor::run) called from inside a callback of the
//! same reactor return [`Error::Reentrant`] (as libuv forbids a nested `uv_run`).
//!
//! # Starting and stopping (as Twisted)
//! * [`run`](Reactor::run) fires the startup triggers and the `call_when_running` calls, then
//!   loops until the reactor has stopped. Calling it while running is
//!   [`Error::ReactorAlreadyRunning`]; calling it again after it stopped is
//!   [`Error::ReactorNotRestartable`].
//! * [`stop`](Reactor::stop) may be called from any callback. It does not return to `run` at
//!   once: the shutdown is phase 2 of the next iteration. Stopping a reactor that is not
//!   running (never started, or already stopping) is [`Error::ReactorNotRunning`], as Twisted's
//!   `ReactorNotRunning`; a second `stop` therefore fails and changes nothing.
//! * While it runs, a reactor stops gracefully on SIGINT (Ctrl-C) and SIGTERM, as Twisted's:
//!   the shutdown runs as for `stop`; a second signal during a slow shutdown ends the process
//!   at once. [`handle_stop_signals`](Reactor::handle_stop_signals) turns this off.
//! * Dropping the handle a constructor returned (the owner; or else the last handle) of a
//!   reactor that still has registrations (never run, or run with `iterate` only) ends each
//!   of them with [`Reason::ReactorShutdown`] first (`iterate` and `run` are refused from
//!   those callbacks too), then drops the calls, timers, triggers and tasks still queued, so
//!   that no transport, and no descriptor, outlives the reactor, even when a protocol or a
//!   timer kept a clone of it (see [`Reactor`]'s "Who owns it").

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::panic_message;
use crate::poller::uring::{Done, OpTarget, Port};
use crate::poller::{Backend, Event, Interest, Poller, Token, Trigger};
use crate::time::{DelayedCall, ReactorTime, TimeSource, TimerQueue};
use crate::{Error, Reason};

mod completions;
mod dispatch;
mod executor;
mod fdset;
mod handle;
mod lifecycle;
pub mod multi;
mod registry;
mod signals;
mod stats;
mod triggers;

pub use executor::Task;
pub use fdset::{FileDescriptor, Readiness, Registration};
pub use handle::Handle;
pub use signals::{raise, InvalidSignal, Signal, SignalHandlerId};
pub use stats::Stats;
pub use triggers::{Phase, SystemEvent, TriggerId};

use handle::{Shared, ThreadCall};
use registry::{Registry, WAKER_TOKEN};
use triggers::Triggers;

type LocalCall = Box<dyn FnOnce(&Reactor)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    /// `run` has not been called.
    NotStarted,
    /// `run` is looping (`stopping` tells whether `stop` was called).
    Running,
    /// `run` returned.
    Stopped,
}

/// The reactor's state. Every field is reached through the one `Rc`; borrows of the cells
/// never span user code ("take, release, then call").
pub(crate) struct Inner {
    /// The backend it was built with (`None` for a poller given to `with_poller`).
    backend: Option<Backend>,
    /// The poller; registrations with empty interest are not in it.
    poller: RefCell<Box<dyn Poller>>,
    /// Every registration, by token; see `registry`.
    registry: RefCell<Registry>,
    /// Delayed calls.
    timers: Rc<TimerQueue<Reactor>>,
    /// Calls queued with `call_soon`, run in phase 1.
    soon: RefCell<VecDeque<LocalCall>>,
    /// The thread-safe side: calls from other threads and the waker.
    pub(crate) shared: Arc<Shared>,
    /// Futures spawned with `spawn_local`.
    pub(crate) executor: executor::Executor,
    /// System event triggers (startup, shutdown).
    triggers: RefCell<Triggers>,
    /// Where `run` is.
    state: Cell<RunState>,
    /// `stop` was called and the shutdown (phase 2) has not run yet.
    stopping: Cell<bool>,
    /// The shutdown sequence has completed: `run` returns.
    finished: Cell<bool>,
    /// An iteration (or `run`) is in progress: `iterate` and `run` refuse to nest.
    looping: Cell<bool>,
    /// `run` handles SIGINT and SIGTERM (see `Reactor::handle_stop_signals`).
    stop_signals: Cell<bool>,
    /// Reused buffers (taken out while in use, so no borrow spans user code).
    events: Cell<Vec<Event>>,
    thread_calls: Cell<Vec<ThreadCall>>,
    /// Edge-triggered registrations to dispatch for reading again in the next iteration
    /// (their read said [`Readiness::MoreWaiting`]).
    again: RefCell<Vec<Token>>,
    /// Iterations run so far (tells a request made in this iteration from an older one).
    iteration: Cell<u64>,
    /// Statistics counters (see `stats`).
    stats: stats::Counters,
    /// Signal handlers and the stop signals (see `signals`).
    pub(crate) signals: signals::SignalState,
    /// The io_uring completion port, on the io_uring backend (see `completions`).
    port: Option<Port>,
    /// Transports that asked to queue their sends before the next wait, and the batch being
    /// served (kept, so that queuing allocates nothing once warm).
    sends: RefCell<Vec<Rc<dyn OpTarget>>>,
    sending: Cell<Vec<Rc<dyn OpTarget>>>,
    /// Reused buffer of completions (taken out while in use).
    done: Cell<Vec<Done>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.close();
        self.timers.clear();
        self.executor.clear();
        // Registrations were ended by the last `Reactor`'s drop; deregister anything a
        // callback added since, without calling it (there is no reactor to give it any more).
        let registry = std::mem::take(self.registry.get_mut());
        let poller = self.poller.get_mut();
        for t in registry.tokens() {
            if let Some(e) = registry.lookup(t).filter(|e| e.polled) {
                let _ = poller.deregister(e.fd);
            }
        }
    }
}

/// The event loop. Cheap to clone (all clones are the same reactor); not `Send`.
///
/// # Who owns it
/// The handle a constructor returns ([`Reactor::new`], [`Reactor::with_backend`], ...) owns
/// the reactor. Dropping it shuts the reactor down even while clones remain elsewhere (a
/// protocol that keeps `cx.reactor().clone()`, a timer's closure): every connection, listener
/// and registration is closed, their `connection_lost` getting [`Reason::ReactorShutdown`],
/// and the pending calls, timers and tasks are dropped. That lets go of the clones they held,
/// so the reactor's descriptors (its poller, its waker, an io_uring ring) are closed with the
/// last of them. Dropping a clone shuts nothing down, unless it is the last handle of all.
/// (If the owner is dropped from inside one of the reactor's own callbacks, the shutdown is
/// left to the last handle.)
///
/// ```
/// use torsion::Reactor;
///
/// let reactor = Reactor::new()?;
/// let clone = reactor.clone();
/// reactor.call_later(std::time::Duration::from_secs(3600), move |_| drop(clone));
/// assert_eq!(reactor.delayed_calls().len(), 1);
/// drop(reactor); // the timer, and the clone it held, go with the owner
/// # Ok::<(), torsion::Error>(())
/// ```
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use torsion::{Backend, Reactor};
///
/// let reactor = Reactor::with_backend(Backend::Poll)?; // Twisted's pollreactor.install()
/// reactor.call_later(Duration::from_millis(10), |r| r.stop().unwrap());
/// reactor.run()?;
/// # Ok::<(), torsion::Error>(())
/// ```
pub struct Reactor {
    pub(crate) inner: Rc<Inner>,
    /// This is the handle a constructor returned (see "Who owns it").
    owner: bool,
}

impl Clone for Reactor {
    /// Another handle on the same reactor; it does not own it.
    fn clone(&self) -> Reactor {
        Reactor::from_inner(self.inner.clone())
    }
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("poller", &self.poller_name())
            .field("state", &self.inner.state.get())
            .finish_non_exhaustive()
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        // The last handle: end every registration while a reactor can still be handed to
        // their `connection_lost` (this breaks the protocol -> transport cycles). Those are
        // callbacks of this reactor like any other: the loop is marked as entered, so that
        // `iterate` or `run` called from them is refused instead of running an iteration on a
        // reactor half torn down.
        // The owner does the same while other handles remain: the cycles through them
        // (reactor -> registration or timer -> protocol or closure -> handle) are broken here.
        if self.owner || Rc::strong_count(&self.inner) == 1 {
            if let Ok(_looping) = self.enter() {
                self.close_all(Reason::ReactorShutdown);
                self.drop_queued();
            }
        }
    }
}

impl Reactor {
    /// A handle on `inner` that does not own it (the reactor's own code reaching it back).
    pub(crate) fn from_inner(inner: Rc<Inner>) -> Reactor {
        Reactor {
            inner,
            owner: false,
        }
    }

    /// A reactor on the default backend: `TORSION_REACTOR` if set, else epoll. When that is
    /// io_uring and the kernel refuses it, the reactor runs on epoll instead (one log line
    /// says so; [`backend`](Reactor::backend) tells which it got).
    ///
    /// # Errors
    /// [`Error::UnknownBackend`] for a bad `TORSION_REACTOR`, or the system error.
    ///
    /// # Examples
    /// ```
    /// let reactor = torsion::Reactor::new()?;
    /// assert!(!reactor.running());
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn new() -> Result<Reactor, Error> {
        let (poller, backend, port) = Backend::from_env()?.reactor_default_poller()?;
        Reactor::build(poller, Some(backend), TimeSource::Monotonic, port)
    }

    /// A reactor on the given backend.
    ///
    /// # Errors
    /// [`Error::BackendUnavailable`] when the kernel refuses the backend (io_uring), or the
    /// system error when the poller or the waker cannot be created.
    pub fn with_backend(backend: Backend) -> Result<Reactor, Error> {
        let (poller, port) = backend.reactor_poller(None)?;
        Reactor::build(poller, Some(backend), TimeSource::Monotonic, port)
    }

    /// A reactor on io_uring whose TCP transport uses the provided-buffer ring `opts`
    /// describes ([`with_backend`](Reactor::with_backend)`(Backend::IoUring)` uses the
    /// defaults).
    ///
    /// # Errors
    /// As [`with_backend`](Reactor::with_backend): [`Error::BackendUnavailable`] when the
    /// kernel refuses io_uring.
    ///
    /// # Examples
    /// ```
    /// use torsion::poller::UringOptions;
    /// use torsion::{Error, Reactor};
    ///
    /// match Reactor::with_io_uring(UringOptions::new(256, 4096)?) {
    ///     Ok(reactor) => assert_eq!(reactor.poller_name(), "io_uring"),
    ///     Err(Error::BackendUnavailable { .. }) => {} // a kernel without io_uring
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn with_io_uring(opts: crate::poller::UringOptions) -> Result<Reactor, Error> {
        let (poller, port) = Backend::IoUring.reactor_poller(Some(opts))?;
        Reactor::build(poller, Some(Backend::IoUring), TimeSource::Monotonic, port)
    }

    /// A reactor on any [`Poller`]: a test's fake poller, or a deterministic simulation's.
    /// [`backend`](Reactor::backend) is then `None`. Every descriptor is then driven by
    /// readiness, even on an io_uring poller from [`Backend::poller`] (a reactor made with
    /// [`with_backend`](Reactor::with_backend) runs TCP connections on io_uring completions).
    ///
    /// # Errors
    /// The system error when the waker cannot be created, or the poller's error when it
    /// refuses to register the waker.
    pub fn with_poller(poller: Box<dyn Poller>) -> Result<Reactor, Error> {
        Reactor::build(poller, None, TimeSource::Monotonic, None)
    }

    /// A reactor on `poller` whose time is `source` (the testing kit's memory reactor runs on
    /// a fake clock), with the io_uring completion port of that poller, if any.
    pub(crate) fn build(
        mut poller: Box<dyn Poller>,
        backend: Option<Backend>,
        source: TimeSource,
        port: Option<Port>,
    ) -> Result<Reactor, Error> {
        let shared = Arc::new(Shared::new()?);
        poller.register(
            shared.waker_fd().as_raw_fd(),
            WAKER_TOKEN,
            Interest::READ,
            Trigger::Level,
        )?;
        tracing::debug!(poller = poller.name(), "reactor created");
        Ok(Reactor {
            owner: true,
            inner: Rc::new(Inner {
                backend,
                poller: RefCell::new(poller),
                registry: RefCell::default(),
                timers: TimerQueue::new(source),
                soon: RefCell::default(),
                shared,
                executor: executor::Executor::default(),
                triggers: RefCell::default(),
                state: Cell::new(RunState::NotStarted),
                stopping: Cell::new(false),
                finished: Cell::new(false),
                looping: Cell::new(false),
                stop_signals: Cell::new(true),
                events: Cell::new(Vec::with_capacity(1024)),
                thread_calls: Cell::new(Vec::new()),
                again: RefCell::default(),
                iteration: Cell::new(0),
                stats: stats::Counters::new(),
                signals: signals::SignalState::new(),
                port,
                sends: RefCell::default(),
                sending: Cell::new(Vec::new()),
                done: Cell::new(Vec::new()),
            }),
        })
    }

    /// The backend this reactor runs on (`None` for a poller given to
    /// [`with_poller`](Reactor::with_poller)).
    pub fn backend(&self) -> Option<Backend> {
        self.inner.backend
    }

    /// The poller's name (`"select"`, `"poll"`, `"epoll"`, or a custom poller's).
    pub fn poller_name(&self) -> &'static str {
        self.inner.poller.borrow().name()
    }

    /// A thread-safe handle for [`Handle::call_from_thread`] and [`Handle::stop`].
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.inner.shared.clone(),
        }
    }

    /// True while `run` is looping (including during the shutdown sequence).
    pub fn running(&self) -> bool {
        self.inner.state.get() == RunState::Running
    }

    // ------------------------------------------------------------------ calls and timers

    /// Runs `f` on the next iteration, after the calls queued before it.
    ///
    /// # Examples
    /// ```
    /// let reactor = torsion::Reactor::new()?;
    /// reactor.call_soon(|r| r.stop().unwrap());
    /// reactor.run()?;
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn call_soon<F: FnOnce(&Reactor) + 'static>(&self, f: F) {
        self.inner.soon.borrow_mut().push_back(Box::new(f));
    }

    /// Runs `f` once, `delay` from now (Twisted's `callLater`). Never early; `Duration::MAX`
    /// schedules a call that will not run in practice.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// let reactor = torsion::Reactor::new()?;
    /// let call = reactor.call_later(Duration::from_secs(3600), |_| unreachable!());
    /// call.cancel().unwrap();
    /// reactor.call_later(Duration::from_millis(1), |r| r.stop().unwrap());
    /// reactor.run()?;
    /// # Ok::<(), torsion::Error>(())
    /// ```
    #[doc(alias = "callLater")]
    pub fn call_later<F: FnOnce(&Reactor) + 'static>(&self, delay: Duration, f: F) -> DelayedCall {
        // The timer phase passes the reactor to the call: no reference to it is kept.
        self.inner.timers.schedule(delay, f)
    }

    /// The pending delayed calls, earliest first (Twisted's `getDelayedCalls`).
    #[doc(alias = "getDelayedCalls")]
    pub fn delayed_calls(&self) -> Vec<DelayedCall> {
        self.inner.timers.pending()
    }

    /// The current monotonic time (the fake clock's, for the testing kit's memory reactor).
    pub fn now(&self) -> Instant {
        self.inner.timers.now()
    }

    /// Runs `fut` on this reactor's thread. It is polled once at once, inside this call (as
    /// Twisted's `ensureDeferred`, unlike tokio's `spawn_local`), then whenever its waker fires
    /// (from any thread). A panic inside it is logged and the task dropped. Every poll, the
    /// first included, is a callback of the reactor: `iterate` and `run` are refused in it.
    ///
    /// # Examples
    /// ```
    /// use torsion::Reactor;
    ///
    /// let reactor = Reactor::new()?;
    /// reactor.call_when_running(|r| {
    ///     let r2 = r.clone();
    ///     r.spawn_local(async move { r2.stop().unwrap() });
    /// });
    /// reactor.run()?;
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn spawn_local<F: Future<Output = ()> + 'static>(&self, fut: F) -> Task {
        self.inner.executor.spawn(self, Box::pin(fut))
    }

    /// Number of futures spawned with [`spawn_local`](Reactor::spawn_local) that have not
    /// finished.
    pub fn task_count(&self) -> usize {
        self.inner.executor.len()
    }

    /// Number of calls queued with [`call_soon`](Reactor::call_soon) that have not run.
    pub fn queued_calls(&self) -> usize {
        self.inner.soon.borrow().len()
    }

    // ------------------------------------------------------------------ the loop

    /// Runs one iteration of the loop, blocking at most `timeout` (`None`: until something
    /// happens). For embedding the reactor in another loop, and for tests.
    ///
    /// # Errors
    /// [`Error::Reentrant`] when called from inside a callback of this reactor; the poller's
    /// error.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// let reactor = torsion::Reactor::new()?;
    /// reactor.call_soon(|r| assert!(r.iterate(None).is_err())); // not from a callback
    /// reactor.iterate(Some(Duration::ZERO))?;
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn iterate(&self, timeout: Option<Duration>) -> Result<(), Error> {
        let _looping = self.enter()?;
        self.run_iteration(timeout)
    }

    /// Moves a fake clock (the testing kit's memory reactor) forward by `amount`.
    pub(crate) fn advance_fake_clock(&self, amount: Duration) {
        let now = crate::time::deadline_after(self.inner.timers.now(), amount);
        self.inner.timers.set_fake_now(now);
    }

    /// Whether an iteration now would run something without waiting: queued calls, reads
    /// asked for again, or a delayed call already due.
    pub(crate) fn has_work_now(&self) -> bool {
        !self.inner.soon.borrow().is_empty()
            || !self.inner.again.borrow().is_empty()
            || self.inner.shared.has_pending()
            || (self.inner.timers.next_deadline()).is_some_and(|d| d <= self.inner.timers.now())
    }

    /// Drops the calls, timers, triggers and tasks queued, which nothing will run: the last
    /// handle is going. The `connection_lost` callbacks of its drop may have queued some
    /// holding a handle to this reactor, a cycle that would keep it, its poller and its waker
    /// open for ever. Each is dropped with no borrow held.
    fn drop_queued(&self) {
        let soon = std::mem::take(&mut *self.inner.soon.borrow_mut());
        drop(soon);
        let triggers = std::mem::take(&mut *self.inner.triggers.borrow_mut());
        drop(triggers);
        self.inner.timers.clear();
        self.inner.executor.clear();
    }

    /// Marks the loop as running until the guard drops; refuses to nest.
    fn enter(&self) -> Result<LoopGuard<'_>, Error> {
        if self.inner.looping.replace(true) {
            return Err(Error::Reentrant);
        }
        Ok(LoopGuard(&self.inner.looping))
    }

    /// One iteration; the numbered phases of the module docs.
    fn run_iteration(&self, cap: Option<Duration>) -> Result<(), Error> {
        let n = self.inner.iteration.get().wrapping_add(1);
        self.inner.iteration.set(n);
        let mut clock = self.inner.stats.iteration_started();
        // 1. Queued calls.
        self.run_queued_calls();
        // 2. Shutdown, if requested: nothing runs after it.
        if self.inner.stopping.get() {
            self.shutdown();
        }
        if self.inner.finished.get() {
            self.inner.stats.iteration_ended(clock);
            return Ok(());
        }
        // 3. Timers.
        self.run_timers();
        // 4. Timeout (after the sends written so far are queued on the ring, if any).
        self.queue_sends();
        let timeout = self.poll_timeout(cap);
        // 5. Poll.
        let mut events = self.inner.events.take();
        events.clear();
        let poll_start = clock.as_ref().map(|_| Instant::now());
        let polled = self.inner.poller.borrow_mut().poll(&mut events, timeout);
        if let (Some(c), Some(t)) = (clock.as_mut(), poll_start) {
            c.poll_ended(t);
        }
        // 6. Dispatch: the poller's events, then the reads asked for again.
        if polled.is_ok() {
            let again = self.inner.again.borrow().len();
            self.inner.stats.polled(events.len(), again);
            self.dispatch_all(&events);
            self.dispatch_completions();
        }
        events.clear();
        self.inner.events.set(events);
        self.inner.stats.iteration_ended(clock);
        polled.map_err(Error::from)
    }

    fn run_queued_calls(&self) {
        let batch = std::mem::take(&mut *self.inner.soon.borrow_mut());
        for f in batch {
            self.guard("call_soon", || f(self));
        }
        if self.inner.shared.has_pending() {
            let mut calls = self.inner.thread_calls.take();
            self.inner.shared.take(&mut calls);
            for f in calls.drain(..) {
                self.guard("call_from_thread", || f(self));
            }
            self.inner.thread_calls.set(calls);
        }
    }

    /// Runs the delayed calls due now (no clock read when none is pending).
    fn run_timers(&self) {
        if self.inner.timers.len() > 0 {
            let now = self.inner.timers.now();
            let mark = self.inner.timers.seq_mark();
            while let Some(call) = self.inner.timers.pop_due(now, mark) {
                self.guard("delayed call", || call.run(self));
            }
        }
    }

    /// How long phase 5 may block.
    fn poll_timeout(&self, cap: Option<Duration>) -> Option<Duration> {
        if !self.inner.soon.borrow().is_empty()
            || !self.inner.again.borrow().is_empty()
            || !self.inner.sends.borrow().is_empty()
            || self.inner.shared.has_pending()
            || self.inner.stopping.get()
        {
            return Some(Duration::ZERO);
        }
        let next = self.inner.timers.next_deadline();
        let until = next.map(|d| d.saturating_duration_since(self.inner.timers.now()));
        match (until, cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs user code, catching and logging a panic.
    fn guard(&self, what: &'static str, f: impl FnOnce()) {
        let _ = self.guard_value(what, f);
    }

    /// Runs user code that returns a value, catching and logging a panic (`None`).
    fn guard_value<R>(&self, what: &'static str, f: impl FnOnce() -> R) -> Option<R> {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => Some(r),
            Err(payload) => {
                tracing::error!(callback = what, message = %panic_message(&*payload), "a callback panicked; the reactor carries on");
                None
            }
        }
    }
}

/// Clears `Inner::looping` when an iteration (or `run`) ends, panicking or not.
struct LoopGuard<'a>(&'a Cell<bool>);

impl Drop for LoopGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl ReactorTime for Reactor {
    fn now(&self) -> Instant {
        self.inner.timers.now()
    }

    fn schedule_boxed(&self, delay: Duration, f: Box<dyn FnOnce()>) -> DelayedCall {
        self.inner.timers.schedule(delay, move |_: &Reactor| f())
    }
}

#[cfg(test)]
mod tests;
