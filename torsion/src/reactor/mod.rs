//! The reactor: one event loop per thread (Twisted's `reactor`).
//!
//! A [`Reactor`] waits on file descriptors through a [`Poller`] backend
//! (select, poll or epoll, chosen at run time), and dispatches readiness events, timers
//! ([`Reactor::call_later`]), queued calls ([`Reactor::call_soon`]), calls from other threads
//! ([`Handle::call_from_thread`]) and futures ([`Reactor::spawn_local`]).
//! It is single-threaded and `!Send`; a [`Handle`] is the thread-safe way in.
//!
//! # The loop
//! Each iteration ([`Reactor::iterate`], and [`Reactor::run`] repeats it) goes through these
//! phases, in this order; the code in `run_iteration` follows the list step by step.
//!
//! 1. **Queued calls.** Run the calls queued with `call_soon` and the calls sent from other
//!    threads, each batch taken whole: calls queued while a batch runs wait for the next
//!    iteration, so a callback that queues itself forever cannot starve I/O. When this batch
//!    completed the shutdown sequence, the iteration ends here.
//! 2. **Timers.** If any delayed call is pending, read the monotonic clock once and run every
//!    delayed call due by then, in deadline order (equal deadlines in scheduling order). Calls
//!    scheduled while this phase runs wait for the next iteration even when already due.
//! 3. **Timeout.** Compute how long the poller may block: zero when calls are queued, reads
//!    are to be dispatched again (phase 5) or the reactor is stopping; until the earliest
//!    timer otherwise; forever when nothing is due (an idle reactor uses no CPU).
//!    `iterate(Some(t))` caps it at `t`.
//! 4. **Poll.** Wait for readiness (EINTR counts as a wake-up with no events).
//! 5. **Dispatch.** For each event, in the order the backend reported them: skip it when its
//!    token no longer names a live registration (the descriptor was removed earlier in the
//!    batch, or its fd number was reused); call `do_read` when readable, then `do_write` when
//!    writable and still registered for writing. A descriptor whose callback returns an error
//!    or panics is removed and its `connection_lost` is called once with the reason.
//!    Then the reads asked for again during the previous iteration run, as readable events.
//!
//! Descriptors added with [`add_reader`](Reactor::add_reader) and
//! [`add_writer`](Reactor::add_writer) are level-triggered on every backend: reported on every
//! iteration while ready, as in Twisted. torsion's TCP transports register edge-triggered on
//! epoll ([`Trigger::Edge`](crate::poller::Trigger)): one report per arrival of data, served
//! in arrival order, which brings the 99th-percentile latency of a busy echo server down to
//! tokio's (see `bench/RESULTS.md`). The reactor keeps them from missing anything:
//! * a transport reads until a short read; when its per-event read budget runs out first, it
//!   asks to be dispatched again in phase 5 of the next iteration (a poller event for it in
//!   that iteration takes the request's place, so it never reads twice in one iteration);
//! * once reported hung up, it is read again on every iteration until it stops reading, so
//!   that the end of the stream is seen even when it came with the last data;
//! * urgent (out-of-band) data, where a read stops at the urgent mark with data still queued,
//!   turns the registration level-triggered for as long as it stays registered.
//!
//! A panic in any callback is caught at the dispatch boundary and logged through `tracing`;
//! the loop carries on. No `RefCell` borrow is held while user code runs, so user code may call
//! anything on the reactor from any callback.
//!
//! # Starting and stopping (as Twisted)
//! * [`run`](Reactor::run) fires the startup triggers and the `call_when_running` calls, then
//!   loops until the reactor has stopped. Calling it while running is
//!   [`Error::ReactorAlreadyRunning`]; calling it again after it stopped is
//!   [`Error::ReactorNotRestartable`].
//! * [`stop`](Reactor::stop) may be called from any callback. It does not return to `run` at once:
//!   on the next iteration the shutdown triggers run in three phases (before, during, after);
//!   in the "during" phase every descriptor still registered is removed and told
//!   [`Reason::ReactorShutdown`]; then `run` returns. Stopping a reactor that is not running
//!   (never started, or already stopping) is [`Error::ReactorNotRunning`], as Twisted's
//!   `ReactorNotRunning`; a second `stop` therefore fails and changes nothing.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::panic_message;
use crate::poller::{Backend, Event, Interest, Poller, Token, Trigger};
use crate::time::{DelayedCall, ReactorTime, TimeSource, TimerQueue};
use crate::{Error, Reason};

mod executor;
mod handle;
mod registry;
mod triggers;

pub use executor::Task;
pub use handle::Handle;
pub use triggers::{Phase, SystemEvent, TriggerId};

use handle::{Shared, ThreadCall};
use registry::{Entry, Registry, WAKER_TOKEN};
use triggers::Triggers;

/// An object with a file descriptor that the reactor can watch (Twisted's `IReadDescriptor`,
/// `IWriteDescriptor` and `IFileDescriptor`).
///
/// Register it with [`Reactor::add_reader`] / [`Reactor::add_writer`]. Its methods take `&self`
/// so that the reactor can call them while user code holds other references: keep mutable state
/// in `Cell`/`RefCell` fields.
///
/// # Examples
/// ```
/// use std::cell::RefCell;
/// use std::io::Read;
/// use std::os::fd::{AsRawFd, RawFd};
/// use std::os::unix::net::UnixStream;
/// use std::rc::Rc;
/// use torsion::{FileDescriptor, Reactor, Reason};
///
/// struct Reader { sock: RefCell<UnixStream>, got: RefCell<Vec<u8>> }
///
/// impl FileDescriptor for Reader {
///     fn fileno(&self) -> RawFd { self.sock.borrow().as_raw_fd() }
///     fn do_read(&self, _: &Reactor) -> Result<(), Reason> {
///         let mut buf = [0u8; 1024];
///         match self.sock.borrow_mut().read(&mut buf) {
///             Ok(0) => Err(Reason::ConnectionDone),
///             Ok(n) => Ok(self.got.borrow_mut().extend_from_slice(&buf[..n])),
///             Err(e) => Err(Reason::lost(e)),
///         }
///     }
///     fn connection_lost(&self, reactor: &Reactor, reason: Reason) {
///         assert!(reason.is_clean());
///         reactor.stop().unwrap();
///     }
/// }
///
/// let (mut ours, theirs) = UnixStream::pair()?;
/// theirs.set_nonblocking(true)?;
/// std::io::Write::write_all(&mut ours, b"hello")?;
/// drop(ours);
/// let reader = Rc::new(Reader { sock: RefCell::new(theirs), got: RefCell::default() });
/// let reactor = Reactor::new()?;
/// reactor.add_reader(reader.clone())?;
/// reactor.run()?;
/// assert_eq!(*reader.got.borrow(), b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait FileDescriptor {
    /// The descriptor to watch. It must stay the same while registered.
    fn fileno(&self) -> RawFd;

    /// Called when the descriptor is readable (or at EOF, or in error). Return `Err(reason)` to
    /// have the reactor remove the descriptor and call [`connection_lost`](Self::connection_lost).
    fn do_read(&self, reactor: &Reactor) -> Result<(), Reason> {
        let _ = reactor;
        Ok(())
    }

    /// Called when the descriptor is writable. Errors are handled as for `do_read`.
    fn do_write(&self, reactor: &Reactor) -> Result<(), Reason> {
        let _ = reactor;
        Ok(())
    }

    /// Called once when the reactor drops the descriptor because a callback failed or panicked
    /// ([`Reason::Panicked`]) or because the reactor shut down. The descriptor is already
    /// deregistered; closing it is up to the implementation.
    fn connection_lost(&self, reactor: &Reactor, reason: Reason) {
        let _ = (reactor, reason);
    }
}

type LocalCall = Box<dyn FnOnce(&Reactor)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    /// `run` has not been called.
    NotStarted,
    /// `run` is looping; `stopping` tells whether `stop` was called.
    Running,
    /// `run` returned.
    Stopped,
}

pub(crate) struct Inner {
    backend: Backend,
    poller: RefCell<Box<dyn Poller>>,
    registry: RefCell<Registry>,
    timers: Rc<TimerQueue<Reactor>>,
    soon: RefCell<VecDeque<LocalCall>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) executor: executor::Executor,
    triggers: RefCell<Triggers>,
    state: Cell<RunState>,
    /// `stop` was called and the shutdown has not completed.
    stopping: Cell<bool>,
    /// The shutdown sequence has completed: `run` returns.
    finished: Cell<bool>,
    /// Reused buffers (taken out while in use, so no borrow spans user code).
    events: Cell<Vec<Event>>,
    thread_calls: Cell<Vec<ThreadCall>>,
    read_buf: Cell<Vec<u8>>,
    /// Its size: [`READ_BUFFER_SIZE`] (smaller in some unit tests).
    read_buf_size: Cell<usize>,
    /// Edge-triggered registrations to dispatch for reading again on the next iteration
    /// (see [`Reactor::read_again`]).
    again: RefCell<Vec<Token>>,
    /// Iterations run so far (tells a `read_again` made in this iteration from an older one).
    iteration: Cell<u64>,
    /// Open connections by address, registered or not, closed at shutdown.
    live: RefCell<std::collections::HashMap<usize, std::rc::Weak<dyn FileDescriptor>>>,
    /// Listening ports per factory (keyed by the factory's address), for start/stop hooks.
    factory_ports: RefCell<std::collections::HashMap<usize, usize>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.close();
        self.timers.clear();
        self.executor.clear();
        // Deregister what is left; the descriptors close themselves when dropped.
        let entries = self.registry.get_mut().drain();
        let poller = self.poller.get_mut();
        for e in &entries {
            let _ = poller.deregister(e.fd);
        }
    }
}

/// The event loop. Cheap to clone (all clones are the same reactor); not `Send`.
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
#[derive(Clone)]
pub struct Reactor {
    pub(crate) inner: Rc<Inner>,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("backend", &self.inner.backend)
            .field("state", &self.inner.state.get())
            .finish_non_exhaustive()
    }
}

/// Size of the shared read buffer that transports read into. One per reactor, not per
/// connection: 256 KiB lets one `recv` drain a busy stream's socket buffer (streaming through one
/// connection costs about 1.4x less CPU per byte than with 64 KiB; see bench/RESULTS.md).
pub(crate) const READ_BUFFER_SIZE: usize = 256 * 1024;

impl Reactor {
    /// A reactor on the default backend: `TORSION_REACTOR` if set, else epoll.
    ///
    /// # Errors
    /// [`Error::UnknownBackend`] for a bad `TORSION_REACTOR`, or the system error.
    pub fn new() -> Result<Reactor, Error> {
        Reactor::with_backend(Backend::from_env()?)
    }

    /// A reactor on the given backend.
    ///
    /// # Errors
    /// The system error when the poller or the waker cannot be created.
    pub fn with_backend(backend: Backend) -> Result<Reactor, Error> {
        let mut poller = backend.poller()?;
        let shared = Arc::new(Shared::new()?);
        poller.register(
            shared.waker_fd().as_raw_fd(),
            WAKER_TOKEN,
            Interest::READ,
            Trigger::Level,
        )?;
        tracing::debug!(backend = backend.name(), "reactor created");
        Ok(Reactor {
            inner: Rc::new(Inner {
                backend,
                poller: RefCell::new(poller),
                registry: RefCell::default(),
                timers: TimerQueue::new(TimeSource::Monotonic),
                soon: RefCell::default(),
                shared,
                executor: executor::Executor::default(),
                triggers: RefCell::default(),
                state: Cell::new(RunState::NotStarted),
                stopping: Cell::new(false),
                finished: Cell::new(false),
                events: Cell::new(Vec::with_capacity(1024)),
                thread_calls: Cell::new(Vec::new()),
                read_buf: Cell::new(Vec::new()),
                read_buf_size: Cell::new(READ_BUFFER_SIZE),
                again: RefCell::default(),
                iteration: Cell::new(0),
                factory_ports: RefCell::default(),
                live: RefCell::default(),
            }),
        })
    }

    /// The backend this reactor runs on.
    pub fn backend(&self) -> Backend {
        self.inner.backend
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

    // ------------------------------------------------------------------ running and stopping

    /// Runs the loop until [`stop`](Reactor::stop) completes. See the module docs.
    ///
    /// # Errors
    /// [`Error::ReactorAlreadyRunning`], [`Error::ReactorNotRestartable`], or a poller error
    /// (after which the reactor is stopped).
    pub fn run(&self) -> Result<(), Error> {
        match self.inner.state.get() {
            RunState::Running => return Err(Error::ReactorAlreadyRunning),
            RunState::Stopped => return Err(Error::ReactorNotRestartable),
            RunState::NotStarted => {}
        }
        self.inner.state.set(RunState::Running);
        self.fire_event(SystemEvent::Startup);
        let mut result = Ok(());
        while !self.inner.finished.get() {
            if let Err(e) = self.run_iteration(None) {
                tracing::error!(error = %e, "the reactor's poller failed; stopping");
                result = Err(e);
                break;
            }
        }
        self.inner.state.set(RunState::Stopped);
        result
    }

    /// Stops the reactor; `run` returns after the shutdown triggers have run.
    ///
    /// # Errors
    /// [`Error::ReactorNotRunning`] when the reactor is not running or already stopping.
    pub fn stop(&self) -> Result<(), Error> {
        if self.inner.state.get() != RunState::Running || self.inner.stopping.get() {
            return Err(Error::ReactorNotRunning);
        }
        self.inner.stopping.set(true);
        self.call_soon(|r| {
            r.fire_event(SystemEvent::Shutdown);
            // Closes deferred by the shutdown (aborts, failed writes) complete now: after this
            // iteration nothing runs any more.
            for _ in 0..64 {
                let batch = std::mem::take(&mut *r.inner.soon.borrow_mut());
                if batch.is_empty() {
                    break;
                }
                for f in batch {
                    r.guard("call_soon", || f(r));
                }
            }
            r.inner.finished.set(true);
        });
        Ok(())
    }

    /// Runs `f` once the reactor runs: at startup, or at once if it is already running.
    pub fn call_when_running<F: FnOnce(&Reactor) + 'static>(&self, f: F) {
        if self.running() {
            self.guard("call_when_running", || f(self));
        } else {
            self.add_system_event_trigger(Phase::During, SystemEvent::Startup, f);
        }
    }

    /// Adds a trigger run when `event` fires, in `phase`. Triggers of one phase run in the order
    /// they were added; all of a phase run before the next phase.
    pub fn add_system_event_trigger<F: FnOnce(&Reactor) + 'static>(
        &self,
        phase: Phase,
        event: SystemEvent,
        f: F,
    ) -> TriggerId {
        self.inner
            .triggers
            .borrow_mut()
            .add(phase, event, Box::new(f))
    }

    /// Removes a trigger that has not run yet. Returns whether it was found.
    pub fn remove_system_event_trigger(&self, id: TriggerId) -> bool {
        let removed = self.inner.triggers.borrow_mut().remove(id);
        removed.is_some()
    }

    fn fire_event(&self, event: SystemEvent) {
        for phase in [Phase::Before, Phase::During, Phase::After] {
            // Triggers added while a phase runs (for a later phase) still run.
            while let Some(f) = self.inner.triggers.borrow_mut().pop(phase, event) {
                self.guard("system event trigger", || f(self));
            }
            if event == SystemEvent::Shutdown && phase == Phase::During {
                self.disconnect_all();
            }
        }
    }

    fn disconnect_all(&self) {
        for desc in self.remove_all() {
            self.guard("connection_lost", || {
                desc.connection_lost(self, Reason::ReactorShutdown)
            });
        }
        // Connections that were not registered (paused, half-closed, idle) are closed too, so
        // that no socket outlives the reactor's run.
        let live: Vec<_> = (self.inner.live.borrow_mut().drain())
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        for desc in live {
            self.guard("connection_lost", || {
                desc.connection_lost(self, Reason::ReactorShutdown)
            });
        }
    }

    /// Tracks an open connection (closed at shutdown even when not registered).
    pub(crate) fn track(&self, key: usize, desc: std::rc::Weak<dyn FileDescriptor>) {
        self.inner.live.borrow_mut().insert(key, desc);
    }

    /// Stops tracking a closed connection.
    pub(crate) fn untrack(&self, key: usize) {
        self.inner.live.borrow_mut().remove(&key);
    }

    // ------------------------------------------------------------------ calls and timers

    /// Runs `f` on the next iteration, after the calls queued before it.
    pub fn call_soon<F: FnOnce(&Reactor) + 'static>(&self, f: F) {
        self.inner.soon.borrow_mut().push_back(Box::new(f));
    }

    /// Runs `f` once, `delay` from now (Twisted's `callLater`). Never early; `Duration::MAX`
    /// schedules a call that will not run in practice.
    pub fn call_later<F: FnOnce(&Reactor) + 'static>(&self, delay: Duration, f: F) -> DelayedCall {
        // The timer phase passes the reactor to the call: no reference to it is kept.
        self.inner.timers.schedule(delay, f)
    }

    /// The pending delayed calls, earliest first (Twisted's `getDelayedCalls`).
    pub fn delayed_calls(&self) -> Vec<DelayedCall> {
        self.inner.timers.pending()
    }

    /// The current monotonic time.
    pub fn now(&self) -> Instant {
        Instant::now()
    }

    /// Runs `fut` on this reactor's thread. It is polled once at once, then whenever its waker
    /// fires (from any thread). A panic inside it is logged and the task dropped.
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

    // ------------------------------------------------------------------ descriptors

    /// Watches `desc` for readability (Twisted's `addReader`).
    ///
    /// # Errors
    /// The poller's error, e.g. [`Error::FdOutOfRange`] on the select backend.
    pub fn add_reader(&self, desc: Rc<dyn FileDescriptor>) -> Result<(), Error> {
        self.change_interest(&*desc, Some((&desc, Trigger::Level)), |i| i.read = true)
    }

    /// Watches `desc` for writability (Twisted's `addWriter`).
    ///
    /// # Errors
    /// As [`add_reader`](Reactor::add_reader).
    pub fn add_writer(&self, desc: Rc<dyn FileDescriptor>) -> Result<(), Error> {
        self.change_interest(&*desc, Some((&desc, Trigger::Level)), |i| i.write = true)
    }

    /// Watches `desc` for readability or writability, edge-triggered where the backend can
    /// (torsion's transports, which read until a short read and call
    /// [`read_again`](Reactor::read_again) when they stop early). A descriptor keeps the trigger
    /// it was first registered with until it is removed.
    pub(crate) fn watch_edge(
        &self,
        desc: Rc<dyn FileDescriptor>,
        read: bool,
        write: bool,
    ) -> Result<(), Error> {
        self.change_interest(&*desc, Some((&desc, Trigger::Edge)), |i| {
            i.read |= read;
            i.write |= write;
        })
    }

    /// Dispatches the edge-triggered descriptor on `fd` for reading again on the next
    /// iteration, as if the poller had reported it readable: for a transport that stopped
    /// reading before the socket was drained (its per-event read budget ran out). Does nothing
    /// for a level-triggered registration (the poller reports it again anyway) or one that is
    /// not reading.
    pub(crate) fn read_again(&self, fd: RawFd) {
        if let Some((token, e)) = self.inner.registry.borrow_mut().get_mut(fd) {
            self.queue_again(token, e);
        }
    }

    fn read_again_token(&self, token: Token) {
        if let Some(e) = self.inner.registry.borrow_mut().lookup_mut(token) {
            self.queue_again(token, e);
        }
    }

    fn queue_again(&self, token: Token, e: &mut Entry) {
        if e.trigger == Trigger::Edge && e.interest.read && e.again.is_none() {
            e.again = Some(self.inner.iteration.get());
            self.inner.again.borrow_mut().push(token);
        }
    }

    /// Stops watching `desc` for readability. Does nothing if it was not watched.
    pub fn remove_reader(&self, desc: &dyn FileDescriptor) {
        let _ = self.change_interest(desc, None, |i| i.read = false);
    }

    /// Stops watching `desc` for writability. Does nothing if it was not watched.
    pub fn remove_writer(&self, desc: &dyn FileDescriptor) {
        let _ = self.change_interest(desc, None, |i| i.write = false);
    }

    /// Stops watching every descriptor and returns them (Twisted's `removeAll`; the reactor's
    /// own waker is not included).
    pub fn remove_all(&self) -> Vec<Rc<dyn FileDescriptor>> {
        let entries = self.inner.registry.borrow_mut().drain();
        let mut poller = self.inner.poller.borrow_mut();
        entries
            .into_iter()
            .map(|e| {
                let _ = poller.deregister(e.fd);
                e.desc
            })
            .collect()
    }

    /// Number of descriptors watched (the waker excluded).
    pub fn descriptor_count(&self) -> usize {
        self.inner.registry.borrow().len()
    }

    /// Number of futures spawned with [`spawn_local`](Reactor::spawn_local) that have not
    /// finished.
    pub fn task_count(&self) -> usize {
        self.inner.executor.len()
    }

    /// Applies an interest change, registering, re-registering or deregistering with the
    /// poller at once (so that deregistration always precedes a close).
    fn change_interest(
        &self,
        desc: &dyn FileDescriptor,
        new: Option<(&Rc<dyn FileDescriptor>, Trigger)>,
        change: impl FnOnce(&mut Interest),
    ) -> Result<(), Error> {
        let fd = desc.fileno();
        if fd < 0 {
            // A closed descriptor (Twisted's -1 convention): never touch the registry with it.
            return Err(Error::Io(std::io::Error::from_raw_os_error(EBADF)));
        }
        let mut registry = self.inner.registry.borrow_mut();
        let mut poller = self.inner.poller.borrow_mut();
        if let Some((token, entry)) = registry.get_mut(fd) {
            if let Some((new, _)) = new {
                if !std::ptr::addr_eq(Rc::as_ptr(new), Rc::as_ptr(&entry.desc)) {
                    // Another object claims a watched fd number: refuse rather than merge.
                    return Err(Error::Io(std::io::Error::from_raw_os_error(EEXIST)));
                }
            }
            let mut interest = entry.interest;
            change(&mut interest);
            if interest == entry.interest {
                return Ok(());
            }
            if interest.is_empty() {
                let _ = poller.deregister(fd);
                drop(poller);
                let entry = registry.remove(fd);
                drop(registry);
                drop(entry); // may drop user state: no borrow held
                return Ok(());
            }
            poller.reregister(fd, token, interest, entry.trigger)?;
            entry.interest = interest;
            return Ok(());
        }
        let Some((desc, trigger)) = new else {
            return Ok(());
        };
        let trigger = match trigger {
            Trigger::Edge if poller.edge_triggered() => Trigger::Edge,
            _ => Trigger::Level,
        };
        let mut interest = Interest::default();
        change(&mut interest);
        let token = registry.insert(Entry {
            fd,
            desc: desc.clone(),
            interest,
            hup: false,
            again: None,
            trigger,
        });
        if let Err(e) = poller.register(fd, token, interest, trigger) {
            registry.remove(fd);
            return Err(e.into());
        }
        Ok(())
    }

    /// Removes `desc` and tells it why (Twisted's `_disconnectSelectable`).
    fn disconnect(&self, desc: &Rc<dyn FileDescriptor>, reason: Reason) {
        let fd = desc.fileno();
        let entry = {
            let mut registry = self.inner.registry.borrow_mut();
            let e = registry.remove(fd);
            if e.is_some() {
                let _ = self.inner.poller.borrow_mut().deregister(fd);
            }
            e
        };
        drop(entry);
        self.guard("connection_lost", || desc.connection_lost(self, reason));
    }

    /// Adds `delta` to the number of ports open for the factory `key`; returns the new count.
    pub(crate) fn factory_ports(&self, key: usize, delta: isize) -> usize {
        let mut map = self.inner.factory_ports.borrow_mut();
        let n = map.entry(key).or_insert(0);
        *n = n.saturating_add_signed(delta);
        let n = *n;
        if n == 0 {
            map.remove(&key);
        }
        n
    }

    // ------------------------------------------------------------------ shared read buffer

    /// Runs `f` with the reactor's shared read buffer ([`READ_BUFFER_SIZE`]), so that reads
    /// allocate nothing. Re-entrant calls get a fresh buffer.
    pub(crate) fn with_read_buffer<R>(&self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let mut buf = self.inner.read_buf.take();
        buf.resize(self.inner.read_buf_size.get(), 0);
        let r = f(&mut buf);
        self.inner.read_buf.set(buf);
        r
    }

    // ------------------------------------------------------------------ the loop

    /// Runs one iteration of the loop, blocking at most `timeout` (`None`: until something
    /// happens). For embedding the reactor in another loop, and for tests.
    ///
    /// # Errors
    /// The poller's error.
    pub fn iterate(&self, timeout: Option<Duration>) -> Result<(), Error> {
        self.run_iteration(timeout)
    }

    /// One iteration; the numbered phases of the module docs.
    fn run_iteration(&self, cap: Option<Duration>) -> Result<(), Error> {
        self.inner
            .iteration
            .set(self.inner.iteration.get().wrapping_add(1));
        // 1. Queued calls: call_soon batch, then the thread batch.
        self.run_queued_calls();
        if self.inner.finished.get() {
            // The shutdown completed in this batch: no timer or event runs after it.
            return Ok(());
        }
        // 2. Timers due now (no clock read when none is pending).
        if self.inner.timers.len() > 0 {
            let now = Instant::now();
            let mark = self.inner.timers.seq_mark();
            while let Some(call) = self.inner.timers.pop_due(now, mark) {
                self.guard("delayed call", || call.run(self));
            }
        }
        // 3. Timeout.
        let timeout = if !self.inner.soon.borrow().is_empty()
            || !self.inner.again.borrow().is_empty()
            || self.inner.shared.has_pending()
            || self.inner.finished.get()
        {
            Some(Duration::ZERO)
        } else {
            let next = self.inner.timers.next_deadline();
            let until = next.map(|d| d.saturating_duration_since(Instant::now()));
            match (until, cap) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        // 4. Poll.
        let mut events = self.inner.events.take();
        events.clear();
        let polled = self.inner.poller.borrow_mut().poll(&mut events, timeout);
        // 5. Dispatch: the poller's events, then the reads asked for again.
        if polled.is_ok() {
            let again = std::mem::take(&mut *self.inner.again.borrow_mut());
            for ev in &events {
                self.dispatch(ev, false);
            }
            for token in again {
                let ev = Event {
                    token,
                    readable: true,
                    writable: false,
                    hangup: false,
                    read_closed: false,
                    priority: false,
                };
                self.dispatch(&ev, true);
            }
        }
        events.clear();
        self.inner.events.set(events);
        polled.map_err(Error::Io)
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

    /// Dispatches one event; `again` marks a read asked for with `read_again`.
    fn dispatch(&self, ev: &Event, again: bool) {
        if ev.token == WAKER_TOKEN {
            self.inner.shared.clear_wake();
            return;
        }
        let Some((desc, interest, hup)) = self.prepare(ev, again) else {
            return;
        };
        if interest.read && (ev.readable || ev.hangup) {
            if !self.call_descriptor(&desc, |d| d.do_read(self)) {
                return;
            }
            // No further report will come for a hung-up edge-triggered descriptor: read it
            // again until it has seen the end of the stream (and stopped reading).
            if hup {
                self.read_again_token(ev.token);
            }
        }
        if ev.writable || (ev.hangup && !interest.read) {
            // Re-check: do_read may have removed the writer or the whole descriptor.
            match self.live(ev) {
                Some((d, i)) if i.write && Rc::ptr_eq(&d, &desc) => {
                    self.call_descriptor(&desc, |d| d.do_write(self));
                }
                _ => {}
            }
        }
    }

    /// The descriptor and interest an event's token still refers to.
    fn live(&self, ev: &Event) -> Option<(Rc<dyn FileDescriptor>, Interest)> {
        let registry = self.inner.registry.borrow();
        let e = registry.lookup(ev.token)?;
        Some((e.desc.clone(), e.interest))
    }

    /// [`live`](Self::live), plus whether the descriptor is to be read again after this read
    /// (an edge-triggered one reported hung up), and the bookkeeping of edge-triggered
    /// registrations: a hangup is remembered; urgent data turns the registration
    /// level-triggered (a read stops at the urgent mark with data still queued, and no new edge
    /// would come for it); a poller event takes the place of a pending `read_again`. For a read
    /// asked for again (`again`), `None` when that request was taken over by a poller event or
    /// re-made during this iteration.
    fn prepare(&self, ev: &Event, again: bool) -> Option<(Rc<dyn FileDescriptor>, Interest, bool)> {
        let mut failed = None;
        let mut registry = self.inner.registry.borrow_mut();
        let e = registry.lookup_mut(ev.token)?;
        // Checked whatever the trigger: a registration turned level-triggered after its
        // request was queued must not be read twice in one iteration.
        if again {
            match e.again {
                Some(asked) if asked != self.inner.iteration.get() => e.again = None,
                _ => return None,
            }
        }
        if e.trigger == Trigger::Edge {
            if !again && e.interest.read && (ev.readable || ev.hangup) {
                e.again = None;
            }
            if ev.hangup || ev.read_closed {
                e.hup = true;
            }
            if ev.priority {
                let r = (self.inner.poller.borrow_mut()).reregister(
                    e.fd,
                    ev.token,
                    e.interest,
                    Trigger::Level,
                );
                match r {
                    Ok(()) => e.trigger = Trigger::Level,
                    Err(err) => failed = Some((e.fd, err)),
                }
            }
        }
        let found = (
            e.desc.clone(),
            e.interest,
            e.hup && e.trigger == Trigger::Edge,
        );
        drop(registry);
        if let Some((fd, err)) = failed {
            // Still edge-triggered (the kernel refused the change, in practice ENOMEM): the
            // reads this iteration and the hangup rule go on as before; urgent data may then
            // wait for the peer's next segment.
            tracing::warn!(fd, error = %err, "cannot make a descriptor level-triggered");
        }
        Some(found)
    }

    /// Runs a descriptor callback; on error or panic, disconnects it. Returns whether it may go
    /// on (no error).
    fn call_descriptor(
        &self,
        desc: &Rc<dyn FileDescriptor>,
        f: impl FnOnce(&dyn FileDescriptor) -> Result<(), Reason>,
    ) -> bool {
        let reason = match catch_unwind(AssertUnwindSafe(|| f(&**desc))) {
            Ok(Ok(())) => return true,
            Ok(Err(reason)) => reason,
            Err(payload) => {
                let msg = panic_message(&*payload);
                tracing::error!(fd = desc.fileno(), message = %msg, "a descriptor callback panicked; disconnecting it");
                Reason::Panicked(msg)
            }
        };
        self.disconnect(desc, reason);
        false
    }

    /// Runs user code, catching and logging a panic.
    fn guard(&self, what: &'static str, f: impl FnOnce()) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
            tracing::error!(callback = what, message = %panic_message(&*payload), "a callback panicked; the reactor carries on");
        }
    }
}

/// EBADF and EEXIST on Linux (the reactor module does not link libc itself).
const EBADF: i32 = 9;
const EEXIST: i32 = 17;

impl ReactorTime for Reactor {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn schedule_boxed(&self, delay: Duration, f: Box<dyn FnOnce()>) -> DelayedCall {
        self.inner.timers.schedule(delay, move |_: &Reactor| f())
    }
}

#[cfg(test)]
impl Reactor {
    /// Shrinks the shared read buffer, so that a test can exhaust a transport's per-event read
    /// budget with little data.
    pub(crate) fn set_read_buffer_size(&self, size: usize) {
        self.inner.read_buf_size.set(size.max(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::reactor_test! {
        fn a_million_timers_mostly_cancelled_keep_memory_bounded(reactor) {
            let fired = Rc::new(Cell::new(0u32));
            let mut keep = Vec::new();
            for i in 0..1_000_000u32 {
                let f = fired.clone();
                let call = reactor.call_later(Duration::from_millis(u64::from(i % 7)), move |_| {
                    f.set(f.get() + 1)
                });
                if i % 10 == 0 {
                    keep.push(call);
                } else {
                    call.cancel().unwrap();
                }
                // Stale entries never outnumber live ones by more than 2:1 (plus the floor).
                let heap = reactor.inner.timers.heap_len();
                assert!(heap <= 2 * (keep.len() + 1) + 64, "heap {heap} for {} live", keep.len());
            }
            assert_eq!(reactor.delayed_calls().len(), 100_000);
            while reactor.inner.timers.len() > 0 {
                reactor.iterate(Some(Duration::from_millis(10))).unwrap();
            }
            assert_eq!(fired.get(), 100_000);
            assert!(keep.iter().all(DelayedCall::called));
        }
    }

    /// Counts `do_read` calls; asks to be read again (as a transport whose read budget ran
    /// out) while `ask` is set. Reads nothing itself.
    struct Probe {
        fd: RawFd,
        reads: Cell<u32>,
        ask: Cell<bool>,
    }

    impl FileDescriptor for Probe {
        fn fileno(&self) -> RawFd {
            self.fd
        }
        fn do_read(&self, r: &Reactor) -> Result<(), Reason> {
            self.reads.set(self.reads.get() + 1);
            if self.ask.get() {
                r.read_again(self.fd);
            }
            Ok(())
        }
    }

    /// A connected loopback pair: (client, non-blocking server side).
    fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        (c, s)
    }

    /// Waits until `s` holds at least `n` readable bytes (loopback delivery is quick, but not
    /// guaranteed to be done when `write` returns).
    fn wait_for_bytes(s: &std::net::TcpStream, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 64];
        while s.peek(&mut buf).map_or(0, |k| k) < n {
            assert!(Instant::now() < deadline, "no data after 20 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn reads_in_one_iteration(reactor: &Reactor, p: &Probe) -> u32 {
        p.reads.set(0);
        reactor.iterate(Some(Duration::from_millis(200))).unwrap();
        p.reads.get()
    }

    crate::reactor_test! {
        fn a_poller_event_takes_over_a_pending_read_again(reactor) {
            // Asked again in N; in N+1 new data arrives and its read asks again: one read in
            // N+1 and one in N+2 (the request is carried, neither dropped nor doubled).
            use std::io::Write;
            let (mut c, s) = tcp_pair();
            let p = Rc::new(Probe { fd: s.as_raw_fd(), reads: Cell::new(0), ask: Cell::new(true) });
            reactor.watch_edge(p.clone(), true, false).unwrap();
            c.write_all(b"a").unwrap();
            wait_for_bytes(&s, 1);
            assert_eq!(reads_in_one_iteration(reactor, &p), 1, "N");
            c.write_all(b"b").unwrap();
            wait_for_bytes(&s, 2);
            assert_eq!(reads_in_one_iteration(reactor, &p), 1, "N+1");
            assert_eq!(reads_in_one_iteration(reactor, &p), 1, "N+2");
            p.ask.set(false);
            reactor.remove_reader(&*p);
        }
    }

    crate::reactor_test! {
        fn urgent_data_with_a_pending_read_again_reads_once_per_iteration(reactor) {
            // Asked again in N; in N+1 an urgent report turns the registration
            // level-triggered: the pending request must not add a second read.
            use std::io::Write;
            let (c, s) = tcp_pair();
            let p = Rc::new(Probe { fd: s.as_raw_fd(), reads: Cell::new(0), ask: Cell::new(true) });
            reactor.watch_edge(p.clone(), true, false).unwrap();
            (&c).write_all(b"a").unwrap();
            wait_for_bytes(&s, 1);
            assert_eq!(reads_in_one_iteration(reactor, &p), 1, "N");
            p.ask.set(false);
            assert_eq!(crate::sys::send_urgent(c.as_raw_fd(), b"!").unwrap(), 1);
            std::thread::sleep(Duration::from_millis(50)); // the urgent byte cannot be peeked
            assert_eq!(reads_in_one_iteration(reactor, &p), 1, "N+1");
            reactor.remove_reader(&*p);
        }
    }
}
