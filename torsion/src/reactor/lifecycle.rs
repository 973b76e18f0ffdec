//! Starting and stopping: `run`, `stop`, system event triggers, and the shutdown phase.

use super::triggers::{Phase, SystemEvent, TriggerId};
use super::{Reactor, RunState};
use crate::{sys, Error, Reason};

/// SIGINT and SIGTERM handled by a running reactor (through the signal machinery of
/// `signals.rs`), handed back when `run` returns.
struct StopSignals<'a> {
    reactor: &'a Reactor,
}

impl<'a> StopSignals<'a> {
    /// Catches the stop signals for this reactor, unless another reactor owns signals.
    fn take(reactor: &'a Reactor) -> Option<StopSignals<'a>> {
        if !reactor.inner.stop_signals.get() {
            return None;
        }
        let st = &reactor.inner.signals;
        st.stop_active.set(true);
        sys::reset_stops();
        match reactor.sync_signals() {
            Ok(()) => Some(StopSignals { reactor }),
            Err(e) => {
                st.stop_active.set(false);
                let _ = reactor.sync_signals();
                if !matches!(&e, Error::Io(io) if io.raw_os_error() == Some(libc::EBUSY)) {
                    tracing::warn!(error = %e, "cannot handle SIGINT and SIGTERM; Ctrl-C ends the process at once");
                }
                None
            }
        }
    }
}

impl Drop for StopSignals<'_> {
    fn drop(&mut self) {
        self.reactor.inner.signals.stop_active.set(false);
        let _ = self.reactor.sync_signals();
    }
}

/// Rounds of queued calls the shutdown runs after the triggers (calls that queue more calls
/// forever are cut off there, with a warning).
const SHUTDOWN_DRAIN_ROUNDS: usize = 64;

impl Reactor {
    /// Runs the loop until [`stop`](Reactor::stop) completes. See the module docs.
    ///
    /// # Errors
    /// [`Error::ReactorAlreadyRunning`], [`Error::ReactorNotRestartable`],
    /// [`Error::Reentrant`] from inside a callback of an `iterate`, or a poller error (after
    /// which the reactor is stopped).
    ///
    /// # Examples
    /// ```
    /// let reactor = torsion::Reactor::new()?;
    /// reactor.call_when_running(|r| r.stop().unwrap());
    /// reactor.run()?;
    /// assert!(reactor.run().is_err()); // not restartable, as in Twisted
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn run(&self) -> Result<(), Error> {
        match self.inner.state.get() {
            RunState::Running => return Err(Error::ReactorAlreadyRunning),
            RunState::Stopped => return Err(Error::ReactorNotRestartable),
            RunState::NotStarted => {}
        }
        let _looping = self.enter()?;
        let _signals = StopSignals::take(self);
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

    /// Whether [`run`](Reactor::run) stops the reactor gracefully on SIGINT (Ctrl-C) and
    /// SIGTERM (default true, as Twisted's `installSignalHandlers`): the shutdown triggers run
    /// and connections close, then `run` returns; a second signal during a slow shutdown ends
    /// the process at once (exit status 128 + the signal). One running reactor of the process
    /// handles them at a time (the first to run); the handlers that were in place before are
    /// put back when its `run` returns. Turn it off for a reactor embedded in a program that
    /// handles these signals itself.
    ///
    /// # Examples
    /// ```
    /// let reactor = torsion::Reactor::new()?;
    /// reactor.handle_stop_signals(false); // the host program owns SIGINT
    /// reactor.call_when_running(|r| r.stop().unwrap());
    /// reactor.run()?;
    /// # Ok::<(), torsion::Error>(())
    /// ```
    #[doc(alias = "installSignalHandlers")]
    pub fn handle_stop_signals(&self, on: bool) {
        self.inner.stop_signals.set(on);
    }

    /// Stops the reactor: the shutdown runs on the next iteration, then `run` returns.
    ///
    /// # Errors
    /// [`Error::ReactorNotRunning`] when the reactor is not running or already stopping.
    ///
    /// # Examples
    /// ```
    /// let reactor = torsion::Reactor::new()?;
    /// assert!(reactor.stop().is_err()); // not running yet
    /// reactor.call_when_running(|r| {
    ///     r.stop().unwrap();
    ///     assert!(r.stop().is_err()); // already stopping
    /// });
    /// reactor.run()?;
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn stop(&self) -> Result<(), Error> {
        if self.inner.state.get() != RunState::Running || self.inner.stopping.get() {
            return Err(Error::ReactorNotRunning);
        }
        self.inner.stopping.set(true);
        Ok(())
    }

    /// Phase 2: the shutdown sequence, then `finished`.
    pub(super) fn shutdown(&self) {
        self.inner.stopping.set(false);
        self.fire_event(SystemEvent::Shutdown);
        // Closes deferred by the shutdown (aborts, failed writes) complete now: after this
        // iteration nothing runs any more.
        for round in 0.. {
            let batch = std::mem::take(&mut *self.inner.soon.borrow_mut());
            if batch.is_empty() {
                break;
            }
            if round == SHUTDOWN_DRAIN_ROUNDS {
                tracing::warn!(
                    dropped = batch.len(),
                    "calls kept queueing calls during the shutdown; dropping them"
                );
                drop(batch);
                break;
            }
            for f in batch {
                self.guard("call_soon", || f(self));
            }
        }
        self.inner.finished.set(true);
    }

    /// Runs `f` once the reactor runs: at startup, or at once if it is already running.
    #[doc(alias = "callWhenRunning")]
    pub fn call_when_running<F: FnOnce(&Reactor) + 'static>(&self, f: F) {
        if self.running() {
            self.guard("call_when_running", || f(self));
        } else {
            self.add_system_event_trigger(Phase::During, SystemEvent::Startup, f);
        }
    }

    /// Adds a trigger run when `event` fires, in `phase`. Triggers of one phase run in the order
    /// they were added; all of a phase run before the next phase. A trigger may add and remove
    /// triggers, of its own phase or another.
    ///
    /// # Examples
    /// ```
    /// use torsion::reactor::{Phase, SystemEvent};
    ///
    /// let reactor = torsion::Reactor::new()?;
    /// reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, |_| {
    ///     println!("shutting down");
    /// });
    /// reactor.call_when_running(|r| r.stop().unwrap());
    /// reactor.run()?;
    /// # Ok::<(), torsion::Error>(())
    /// ```
    #[doc(alias = "addSystemEventTrigger")]
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
    #[doc(alias = "removeSystemEventTrigger")]
    pub fn remove_system_event_trigger(&self, id: TriggerId) -> bool {
        let removed = self.inner.triggers.borrow_mut().remove(id);
        removed.is_some()
    }

    fn fire_event(&self, event: SystemEvent) {
        for phase in [Phase::Before, Phase::During, Phase::After] {
            // Triggers added while a phase runs (for a later phase) still run. The borrow ends
            // with the statement: a trigger may add or remove triggers.
            loop {
                let next = self.inner.triggers.borrow_mut().pop(phase, event);
                let Some(f) = next else { break };
                self.guard("system event trigger", || f(self));
            }
            if event == SystemEvent::Shutdown && phase == Phase::During {
                self.close_all(Reason::ReactorShutdown);
            }
        }
    }

    /// Ends every registration and tells each why (Twisted's `disconnectAll`). Registrations
    /// made by these callbacks are ended too.
    pub(super) fn close_all(&self, reason: Reason) {
        for _ in 0..SHUTDOWN_DRAIN_ROUNDS {
            let tokens = match self.inner.registry.try_borrow() {
                Ok(r) if r.len() > 0 => r.tokens(),
                _ => return,
            };
            for t in tokens {
                if let Some(e) = self.remove_token(t) {
                    let desc = e.desc.clone();
                    drop(e);
                    self.guard("connection_lost", || {
                        desc.connection_lost(self, reason.clone())
                    });
                }
            }
        }
    }
}
