//! Running a Deferred or a future to completion on a reactor ([`Reactor::run_until_complete`])
//! and spawning futures whose output can be awaited ([`Reactor::spawn_task`]).

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::rc::Rc;

use super::{Failure, IntoDeferred};
use crate::reactor::Task;
use crate::Reactor;

/// The reactor stopped (by something else) before the Deferred given to
/// [`Reactor::run_until_complete`] had its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReactorStopped;

impl fmt::Display for ReactorStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the reactor stopped before the Deferred had its result")
    }
}

impl std::error::Error for ReactorStopped {}

impl Reactor {
    /// Runs the reactor until `work` (a [`Deferred`](super::Deferred), or a future of
    /// `Result<T, Failure>` run on the reactor's local executor) has its result, stops it, and
    /// returns that result: for embedding torsion in a program that is not built around the
    /// reactor, and for tests. A Deferred that already has its result is returned without
    /// running the reactor.
    ///
    /// A reactor runs once: after this, it cannot be run again.
    ///
    /// # Errors
    /// The Deferred's failure; [`ReactorStopped`] when something else stopped the reactor
    /// first; the reactor's own error (as a failure) when it could not run (already running,
    /// already run, or a poller error).
    ///
    /// ```
    /// use std::time::Duration;
    /// use torsion::{task::defer_later, Reactor};
    ///
    /// let reactor = Reactor::new()?;
    /// let d = defer_later(&reactor, Duration::from_millis(1), || Ok(42));
    /// assert_eq!(reactor.run_until_complete(d).unwrap(), 42);
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn run_until_complete<T: 'static>(&self, work: impl IntoDeferred<T>) -> Result<T, Failure> {
        let d = work.into_deferred(self);
        let slot: Rc<RefCell<Option<Result<T, Failure>>>> = Rc::default();
        let s = slot.clone();
        let stopper = self.clone();
        let _ = d.add_both(move |r| {
            *s.borrow_mut() = Some(r);
            if stopper.running() {
                let _ = stopper.stop();
            }
            Ok(())
        });
        if let Some(r) = slot.borrow_mut().take() {
            return r;
        }
        self.run().map_err(Failure::new)?;
        let result = slot.borrow_mut().take();
        result.unwrap_or_else(|| Err(Failure::new(ReactorStopped)))
    }

    /// Spawns `fut` on the reactor's local executor and returns a [`Task`] that can be awaited
    /// for its output, or cancelled (the same as [`spawn_local`](Reactor::spawn_local), for
    /// any output type). It is polled once at once, inside this call.
    pub fn spawn_task<F>(&self, fut: F) -> Task<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.inner.executor.spawn(self, fut)
    }
}
