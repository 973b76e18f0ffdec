//! The thread-safe side of a reactor: its call queue, waker, and the [`Handle`].

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::Reactor;
use crate::sys;
use crate::Error;

/// A call sent from another thread.
pub(crate) type ThreadCall = Box<dyn FnOnce(&Reactor) + Send>;

/// State shared between a reactor and its handles.
///
/// Invariant: whenever `queue` is non-empty, either `notified` is true and the eventfd has been
/// (or is about to be) signalled, or the reactor is about to drain the queue.
pub(crate) struct Shared {
    queue: Mutex<Vec<ThreadCall>>,
    /// Set by the first sender after a drain; cleared by the reactor before it drains.
    notified: AtomicBool,
    /// False once the reactor is dropped.
    alive: AtomicBool,
    waker: OwnedFd,
    /// The reactor's thread (where the reactor was made; a `Reactor` never leaves it).
    thread: std::thread::ThreadId,
    /// The reactor's thread pool is being stopped: workers waiting for the reactor give up.
    pub(crate) threads_stopping: AtomicBool,
}

impl Shared {
    pub(crate) fn new() -> std::io::Result<Shared> {
        Ok(Shared {
            queue: Mutex::new(Vec::new()),
            notified: AtomicBool::new(false),
            alive: AtomicBool::new(true),
            waker: sys::eventfd()?,
            thread: std::thread::current().id(),
            threads_stopping: AtomicBool::new(false),
        })
    }

    /// True on the reactor's own thread.
    pub(crate) fn is_reactor_thread(&self) -> bool {
        std::thread::current().id() == self.thread
    }

    /// Tells workers waiting on the reactor whether its thread pool is being stopped.
    pub(crate) fn threads_stopping(&self, yes: bool) {
        self.threads_stopping.store(yes, Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<ThreadCall>> {
        // A panic while holding the lock cannot leave the Vec inconsistent: recover it.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn waker_fd(&self) -> &OwnedFd {
        &self.waker
    }

    /// Queues `call` and wakes the reactor if it may be sleeping.
    pub(crate) fn push(&self, call: ThreadCall) -> Result<(), Error> {
        if !self.alive.load(Ordering::Acquire) {
            return Err(Error::ReactorGone);
        }
        self.lock().push(call);
        if !self.notified.swap(true, Ordering::AcqRel) {
            // A full counter (EAGAIN) is already a pending wake-up: never blocks.
            sys::eventfd_signal(self.waker.as_raw_fd())?;
        }
        Ok(())
    }

    /// True when calls may be waiting (the loop must not block).
    pub(crate) fn has_pending(&self) -> bool {
        self.notified.load(Ordering::Acquire)
    }

    /// Takes every call queued so far; calls queued later wait for the next drain.
    pub(crate) fn take(&self, into: &mut Vec<ThreadCall>) {
        self.notified.store(false, Ordering::Release);
        std::mem::swap(&mut *self.lock(), into);
    }

    /// Resets the eventfd after it was reported readable.
    pub(crate) fn clear_wake(&self) {
        let _ = sys::eventfd_drain(self.waker.as_raw_fd());
    }

    /// Marks the reactor gone and drops the calls still queued.
    pub(crate) fn close(&self) {
        self.alive.store(false, Ordering::Release);
        let calls = std::mem::take(&mut *self.lock());
        drop(calls);
    }
}

/// A thread-safe handle to a reactor: `Send + Sync + Clone`.
///
/// It is the only way to reach a reactor from another thread. Calls run on the reactor's
/// thread, in FIFO order (per sender and overall), and wake an idle reactor at once.
///
/// # Examples
/// ```
/// use torsion::Reactor;
///
/// let reactor = Reactor::new()?;
/// let handle = reactor.handle();
/// let worker = std::thread::spawn(move || {
///     let answer = 6 * 7; // some blocking work
///     handle.call_from_thread(move |r| {
///         assert_eq!(answer, 42);
///         r.stop().unwrap();
///     }).unwrap();
/// });
/// reactor.run()?;
/// worker.join().unwrap();
/// # Ok::<(), torsion::Error>(())
/// ```
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl Handle {
    /// Runs `f` on the reactor thread on its next iteration (Twisted's `callFromThread`).
    ///
    /// Never blocks: the call is queued and the reactor woken through an eventfd.
    ///
    /// # Errors
    /// [`Error::ReactorGone`] when the reactor was dropped; the call is dropped.
    #[doc(alias = "callFromThread")]
    pub fn call_from_thread<F>(&self, f: F) -> Result<(), Error>
    where
        F: FnOnce(&Reactor) + Send + 'static,
    {
        self.shared.push(Box::new(f))
    }

    /// Asks the reactor to stop, from any thread. Stopping a reactor that is not running is
    /// ignored (the reactor's own [`Reactor::stop`] reports it as an error).
    ///
    /// # Errors
    /// [`Error::ReactorGone`] when the reactor was dropped.
    pub fn stop(&self) -> Result<(), Error> {
        self.call_from_thread(|r| {
            let _ = r.stop();
        })
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}
