//! Signals as reactor events (Twisted's `installSignalHandlers` and the signal handling of
//! `_SignalReactorMixin`, plus a general `add_signal_handler`).
//!
//! One mechanism serves everything: torsion's handler records the signal and writes to a
//! process-wide eventfd (the self-pipe trick); the reactor that owns signal handling watches
//! that eventfd and, on its loop, runs the callbacks added with
//! [`Reactor::add_signal_handler`], or stops itself for SIGINT and SIGTERM while
//! [`run`](Reactor::run) handles them. Callbacks never run in signal context, so they may do
//! anything a callback may do. Child processes are reaped through pidfds
//! ([`process`](crate::process)), not SIGCHLD, so SIGCHLD stays free for the program.
//!
//! Signal dispositions belong to the whole process: one reactor at a time owns signal handling
//! (the first to add a handler, or to run with stop signals on); another reactor's
//! `add_signal_handler` fails with `EBUSY` until the owner has removed its handlers (or stopped
//! running, or been dropped). When the last handler of a signal goes, the action that was in
//! place before torsion caught it is put back.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::registry::SIGNAL_TOKEN;
use super::Reactor;
use crate::poller::{Interest, Trigger};
use crate::{sys, Error};

/// A signal number, checked to be one Linux has (1 to 64).
///
/// # Examples
/// ```
/// use torsion::reactor::Signal;
///
/// assert_eq!(Signal::TERM.number(), 15);
/// assert_eq!(Signal::new(10)?, Signal::USR1);
/// assert_eq!(Signal::USR1.to_string(), "SIGUSR1");
/// assert!(Signal::new(0).is_err() && Signal::new(65).is_err());
/// # Ok::<(), torsion::reactor::InvalidSignal>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal(i32);

/// A number that is no signal (outside 1 to 64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidSignal(pub i32);

impl fmt::Display for InvalidSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not a signal number (1 to 64)", self.0)
    }
}

impl std::error::Error for InvalidSignal {}

impl Signal {
    /// SIGHUP (1).
    pub const HUP: Signal = Signal(libc::SIGHUP);
    /// SIGINT (2), Ctrl-C.
    pub const INT: Signal = Signal(libc::SIGINT);
    /// SIGQUIT (3).
    pub const QUIT: Signal = Signal(libc::SIGQUIT);
    /// SIGKILL (9): cannot be caught.
    pub const KILL: Signal = Signal(libc::SIGKILL);
    /// SIGUSR1 (10).
    pub const USR1: Signal = Signal(libc::SIGUSR1);
    /// SIGUSR2 (12).
    pub const USR2: Signal = Signal(libc::SIGUSR2);
    /// SIGPIPE (13).
    pub const PIPE: Signal = Signal(libc::SIGPIPE);
    /// SIGALRM (14).
    pub const ALRM: Signal = Signal(libc::SIGALRM);
    /// SIGTERM (15).
    pub const TERM: Signal = Signal(libc::SIGTERM);
    /// SIGCHLD (17).
    pub const CHLD: Signal = Signal(libc::SIGCHLD);
    /// SIGCONT (18).
    pub const CONT: Signal = Signal(libc::SIGCONT);
    /// SIGSTOP (19): cannot be caught.
    pub const STOP: Signal = Signal(libc::SIGSTOP);
    /// SIGWINCH (28).
    pub const WINCH: Signal = Signal(libc::SIGWINCH);

    /// The signal numbered `n`.
    ///
    /// # Errors
    /// [`InvalidSignal`] outside 1 to 64.
    pub fn new(n: i32) -> Result<Signal, InvalidSignal> {
        if (1..=sys::MAX_SIGNAL).contains(&n) {
            Ok(Signal(n))
        } else {
            Err(InvalidSignal(n))
        }
    }

    /// The signal's number.
    pub fn number(self) -> i32 {
        self.0
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            libc::SIGHUP => "SIGHUP",
            libc::SIGINT => "SIGINT",
            libc::SIGQUIT => "SIGQUIT",
            libc::SIGILL => "SIGILL",
            libc::SIGABRT => "SIGABRT",
            libc::SIGFPE => "SIGFPE",
            libc::SIGKILL => "SIGKILL",
            libc::SIGUSR1 => "SIGUSR1",
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGUSR2 => "SIGUSR2",
            libc::SIGPIPE => "SIGPIPE",
            libc::SIGALRM => "SIGALRM",
            libc::SIGTERM => "SIGTERM",
            libc::SIGCHLD => "SIGCHLD",
            libc::SIGCONT => "SIGCONT",
            libc::SIGSTOP => "SIGSTOP",
            libc::SIGTSTP => "SIGTSTP",
            libc::SIGWINCH => "SIGWINCH",
            n => return write!(f, "signal {n}"),
        };
        f.write_str(name)
    }
}

/// Names a handler added with [`Reactor::add_signal_handler`], to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignalHandlerId(u64);

type Callback = Rc<RefCell<dyn FnMut(&Reactor, Signal)>>;

/// The reactor that owns signal handling (its `SignalState::id`; 0: none).
static OWNER: AtomicU64 = AtomicU64::new(0);
static NEXT_STATE: AtomicU64 = AtomicU64::new(1);

/// A reactor's signal handlers and what it has asked of the process-wide machinery.
pub(crate) struct SignalState {
    id: u64,
    handlers: RefCell<Vec<(SignalHandlerId, Signal, Callback)>>,
    next: Cell<u64>,
    /// `run` handles SIGINT and SIGTERM right now.
    pub(super) stop_active: Cell<bool>,
    /// The signals this reactor has caught (bit `n - 1`).
    caught: Cell<u64>,
    /// The signal eventfd is registered with this reactor's poller.
    watching: Cell<bool>,
}

impl SignalState {
    pub(crate) fn new() -> SignalState {
        SignalState {
            id: NEXT_STATE.fetch_add(1, Ordering::Relaxed),
            handlers: RefCell::default(),
            next: Cell::new(0),
            stop_active: Cell::new(false),
            caught: Cell::new(0),
            watching: Cell::new(false),
        }
    }

    fn owns(&self) -> bool {
        OWNER.load(Ordering::SeqCst) == self.id
    }

    /// Takes signal handling for this reactor (or keeps it).
    fn claim(&self) -> bool {
        self.owns()
            || OWNER
                .compare_exchange(0, self.id, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }
}

impl Drop for SignalState {
    fn drop(&mut self) {
        // The reactor is going: put every action back and let another reactor own signals.
        // (Its poller, which watched the eventfd, goes with it.)
        let caught = self.caught.get();
        for sig in 1..=sys::MAX_SIGNAL {
            if caught & (1 << (sig - 1)) != 0 {
                sys::set_stop_mode(sig, false);
                sys::release_signal(sig);
            }
        }
        let _ = OWNER.compare_exchange(self.id, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

const STOP: [i32; 2] = [libc::SIGINT, libc::SIGTERM];

impl Reactor {
    /// Runs `f` on the loop each time the process receives `signal` (Twisted has no such call;
    /// it is the reactor-level form of `signal.signal`, minus running in signal context). The
    /// callback gets the reactor and the signal; several may be added for one signal, and run
    /// in the order added. Signals that arrive together, or the same signal arriving several
    /// times before the loop gets to it, are run once (signals are not queued).
    ///
    /// A handler for SIGINT or SIGTERM takes the place of [`run`](Reactor::run)'s graceful stop
    /// for that signal while it is installed. Remove the handler with
    /// [`remove_signal_handler`](Reactor::remove_signal_handler); the reactor's drop removes
    /// them all. Either way, the action the signal had before is put back.
    ///
    /// # Errors
    /// [`Error::Io`] with `EINVAL` for SIGKILL and SIGSTOP (they cannot be caught), `EBUSY`
    /// when another reactor of the process owns signal handling, or the poller's error.
    ///
    /// # Examples
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// use torsion::reactor::Signal;
    ///
    /// let reactor = torsion::Reactor::new()?;
    /// let got = Rc::new(Cell::new(None));
    /// let g = got.clone();
    /// let id = reactor.add_signal_handler(Signal::USR2, move |r, sig| {
    ///     g.set(Some(sig));
    ///     r.stop().unwrap();
    /// })?;
    /// reactor.call_when_running(|_| torsion::reactor::raise(Signal::USR2).unwrap());
    /// reactor.run()?;
    /// assert_eq!(got.get(), Some(Signal::USR2));
    /// assert!(reactor.remove_signal_handler(id));
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn add_signal_handler<F>(&self, signal: Signal, f: F) -> Result<SignalHandlerId, Error>
    where
        F: FnMut(&Reactor, Signal) + 'static,
    {
        if signal == Signal::KILL || signal == Signal::STOP {
            return Err(Error::Io(sys::errno(libc::EINVAL)));
        }
        let st = &self.inner.signals;
        if !st.claim() {
            return Err(Error::Io(sys::errno(libc::EBUSY)));
        }
        let id = SignalHandlerId(st.next.get());
        st.next.set(st.next.get() + 1);
        st.handlers
            .borrow_mut()
            .push((id, signal, Rc::new(RefCell::new(f))));
        if let Err(e) = self.sync_signals() {
            st.handlers.borrow_mut().retain(|(i, ..)| *i != id);
            let _ = self.sync_signals();
            return Err(e);
        }
        Ok(id)
    }

    /// Removes a handler added with [`add_signal_handler`](Reactor::add_signal_handler); when
    /// it was its signal's last, the signal's previous action is put back. Returns whether it
    /// was found.
    pub fn remove_signal_handler(&self, id: SignalHandlerId) -> bool {
        let removed = {
            let mut handlers = self.inner.signals.handlers.borrow_mut();
            let before = handlers.len();
            handlers.retain(|(i, ..)| *i != id);
            handlers.len() != before
        };
        if removed {
            let _ = self.sync_signals();
        }
        removed
    }

    /// Number of signal handlers added and not removed (the testing kit's leak check wants
    /// none).
    pub fn signal_handler_count(&self) -> usize {
        self.inner.signals.handlers.borrow().len()
    }

    /// Catches exactly the signals this reactor needs now, watches the eventfd while it needs
    /// any, and gives up ownership when it needs none.
    pub(super) fn sync_signals(&self) -> Result<(), Error> {
        let st = &self.inner.signals;
        let mut want: u64 = 0;
        let mut user: u64 = 0;
        for (_, sig, _) in st.handlers.borrow().iter() {
            user |= 1 << (sig.0 - 1);
        }
        want |= user;
        if st.stop_active.get() {
            for s in STOP {
                want |= 1 << (s - 1);
            }
        }
        if want != 0 && !st.claim() {
            return Err(Error::Io(sys::errno(libc::EBUSY)));
        }
        if want != 0 && !st.watching.get() {
            let fd = sys::signal_fd()?;
            self.inner.poller.borrow_mut().register(
                fd,
                SIGNAL_TOKEN,
                Interest::READ,
                Trigger::Level,
            )?;
            st.watching.set(true);
        }
        let mut result = Ok(());
        for sig in 1..=sys::MAX_SIGNAL {
            let b = 1u64 << (sig - 1);
            let stop_mode = STOP.contains(&sig) && st.stop_active.get() && user & b == 0;
            if want & b != 0 {
                sys::set_stop_mode(sig, stop_mode);
                if st.caught.get() & b == 0 {
                    match sys::catch_signal(sig) {
                        Ok(()) => st.caught.set(st.caught.get() | b),
                        Err(e) => result = Err(Error::Io(e)),
                    }
                }
            } else if st.caught.get() & b != 0 {
                sys::set_stop_mode(sig, false);
                sys::release_signal(sig);
                st.caught.set(st.caught.get() & !b);
            }
        }
        if want == 0 {
            if st.watching.replace(false) {
                if let Ok(fd) = sys::signal_fd() {
                    let _ = self.inner.poller.borrow_mut().deregister(fd);
                }
            }
            let _ = OWNER.compare_exchange(st.id, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
        result
    }

    /// The signal eventfd is readable: run the handlers of the signals that arrived, or stop
    /// for a stop signal.
    pub(super) fn dispatch_signals(&self) {
        let pending = sys::take_pending_signals();
        if pending == 0 {
            return;
        }
        for n in 1..=sys::MAX_SIGNAL {
            if pending & (1 << (n - 1)) == 0 {
                continue;
            }
            let sig = Signal(n);
            let callbacks: Vec<Callback> = self
                .inner
                .signals
                .handlers
                .borrow()
                .iter()
                .filter(|(_, s, _)| *s == sig)
                .map(|(_, _, f)| f.clone())
                .collect();
            if callbacks.is_empty() {
                if STOP.contains(&n) && self.inner.signals.stop_active.get() {
                    tracing::info!(signal = n, "stop signal received: stopping the reactor");
                    let _ = self.stop();
                }
                continue;
            }
            for f in callbacks {
                self.guard("signal handler", || {
                    if let Ok(mut f) = f.try_borrow_mut() {
                        f(self, sig)
                    }
                });
            }
        }
    }
}

/// Sends `signal` to this process (for tests and for a program that signals itself); a
/// handler added with [`Reactor::add_signal_handler`] runs on the loop's next iteration.
///
/// # Errors
/// The system error.
pub fn raise(signal: Signal) -> std::io::Result<()> {
    sys::raise_to_process(signal.0)
}
