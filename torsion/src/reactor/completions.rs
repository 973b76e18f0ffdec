//! The io_uring completion port's side of the loop: queuing the sends written during an
//! iteration just before the reactor waits (one submission for all of them, in the wait's own
//! `io_uring_enter`), and dispatching the completions of socket operations after the readiness
//! events.
//!
//! Transports reach the port through [`Reactor::port`]; only the io_uring backend has one (and
//! only when the kernel offers provided-buffer rings).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use super::Reactor;
use crate::error::panic_message;
use crate::poller::uring::{OpTarget, Port};

/// Rounds of `before_poll` calls per iteration: a target's `before_poll` may run user code
/// that writes to other transports, which ask in turn; the rest waits for the next iteration
/// (the wait then does not block).
const SEND_ROUNDS: usize = 4;

impl Reactor {
    /// The io_uring completion port, on the io_uring backend.
    pub(crate) fn port(&self) -> Option<&Port> {
        self.inner.port.as_ref()
    }

    /// Asks for `target.before_poll` before the next wait (the caller asks once per need).
    pub(crate) fn want_before_poll(&self, target: Rc<dyn OpTarget>) {
        self.inner.sends.borrow_mut().push(target);
    }

    /// Phase 4's first step: lets the transports that wrote queue their sends.
    pub(super) fn queue_sends(&self) {
        if self.inner.port.is_none() {
            return;
        }
        let mut batch = self.inner.sending.take();
        for _ in 0..SEND_ROUNDS {
            std::mem::swap(&mut batch, &mut *self.inner.sends.borrow_mut());
            if batch.is_empty() {
                break;
            }
            for t in batch.drain(..) {
                self.guard("queueing a send", || t.before_poll(self));
            }
        }
        self.inner.sending.set(batch);
    }

    /// Phase 6's last step: the completions the wait brought, in the order the kernel posted
    /// them.
    pub(super) fn dispatch_completions(&self) {
        let Some(port) = self.port() else { return };
        let mut done = self.inner.done.take();
        port.take_done(&mut done);
        self.inner.stats.completed(done.len());
        for d in done.iter_mut() {
            let Some(target) = d.target() else {
                continue; // its owner is gone: the buffer goes back to the ring as `d` drops
            };
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| target.complete(self, d))) {
                tracing::error!(message = %panic_message(&*payload), "an io_uring completion handler panicked; the reactor carries on");
            }
        }
        // What the handlers left (a buffer, a SEND's bytes, a descriptor) is released here.
        done.clear();
        self.inner.done.set(done);
    }

    /// Counts a multishot receive armed again after the buffer ring ran dry.
    pub(crate) fn note_buffer_ring_exhausted(&self) {
        self.inner.stats.buffer_ring_exhausted();
    }
}
