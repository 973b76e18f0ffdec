//! Phase 6 of the loop: one event to its descriptor (Twisted's `_doReadOrWrite`), and the
//! readiness rule for edge-triggered registrations.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use super::fdset::{FileDescriptor, Readiness};
use super::registry::{SIGNAL_TOKEN, WAKER_TOKEN};
use super::Reactor;
use crate::error::{panic_message, Panicked};
use crate::poller::{Event, Interest, Token, Trigger};
use crate::Reason;

/// Fails for a descriptor closed while registered (`fileno()` -1, Twisted's `_NO_FILEDESC`),
/// before it is read or written: poll and select report a closed number on every iteration.
fn open(d: &dyn FileDescriptor) -> Result<(), Reason> {
    if d.fileno() < 0 {
        return Err(Reason::ConnectionLost(None));
    }
    Ok(())
}

impl Reactor {
    /// The poller's events, then the reads asked for again in the previous iteration.
    pub(super) fn dispatch_all(&self, events: &[Event]) {
        let again = std::mem::take(&mut *self.inner.again.borrow_mut());
        for ev in events {
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

    /// Dispatches one event; `again` marks a read asked for by the readiness rule.
    fn dispatch(&self, ev: &Event, again: bool) {
        if ev.token == WAKER_TOKEN {
            self.inner.shared.clear_wake();
            return;
        }
        if ev.token == SIGNAL_TOKEN {
            self.dispatch_signals();
            return;
        }
        let Some((desc, interest, edge)) = self.prepare(ev, again) else {
            return;
        };
        if interest.read && (ev.readable || ev.hangup) {
            match self.call_descriptor(ev.token, &desc, |d| {
                open(d)?;
                d.do_read_event(self, ev)
            }) {
                None => return,
                Some(Readiness::MoreWaiting) if edge => self.read_again(ev.token),
                Some(_) => {}
            }
        }
        if ev.writable || (ev.hangup && !interest.read) {
            // Re-check: the read may have removed the writer or the whole registration.
            if self.live_writer(ev.token, &desc) {
                self.call_descriptor(ev.token, &desc, |d| {
                    open(d)?;
                    d.do_write(self)
                });
            }
        }
    }

    /// The descriptor, interest and trigger an event's token still refers to. A poller event
    /// takes the place of a pending read-again request; a read-again (`again`) is `None` when
    /// its request was taken over or re-made during this iteration.
    fn prepare(&self, ev: &Event, again: bool) -> Option<(Rc<dyn FileDescriptor>, Interest, bool)> {
        let mut registry = self.inner.registry.borrow_mut();
        let e = registry.lookup_mut(ev.token)?;
        if again {
            match e.again {
                Some(asked) if asked != self.inner.iteration.get() => e.again = None,
                _ => return None,
            }
        } else if e.interest.read && (ev.readable || ev.hangup) {
            e.again = None;
        }
        Some((e.desc.clone(), e.interest, e.trigger == Trigger::Edge))
    }

    fn live_writer(&self, token: Token, desc: &Rc<dyn FileDescriptor>) -> bool {
        let registry = self.inner.registry.borrow();
        registry
            .lookup(token)
            .is_some_and(|e| e.interest.write && Rc::ptr_eq(&e.desc, desc))
    }

    /// Queues an edge-triggered registration that is still reading for a read in the next
    /// iteration, once.
    fn read_again(&self, token: Token) {
        let mut registry = self.inner.registry.borrow_mut();
        if let Some(e) = registry.lookup_mut(token) {
            if e.interest.read && e.again.is_none() {
                e.again = Some(self.inner.iteration.get());
                self.inner.again.borrow_mut().push(token);
            }
        }
    }

    /// Runs a descriptor callback; on error or panic, ends its registration and tells it why.
    /// `None` when it was ended.
    fn call_descriptor<R>(
        &self,
        token: Token,
        desc: &Rc<dyn FileDescriptor>,
        f: impl FnOnce(&dyn FileDescriptor) -> Result<R, Reason>,
    ) -> Option<R> {
        let reason = match catch_unwind(AssertUnwindSafe(|| f(&**desc))) {
            Ok(Ok(r)) => return Some(r),
            Ok(Err(reason)) => reason,
            Err(payload) => {
                let msg = panic_message(&*payload);
                tracing::error!(message = %msg, "a descriptor callback panicked; disconnecting it");
                Reason::Panicked(Panicked(msg))
            }
        };
        self.disconnect(token, desc, reason);
        None
    }

    /// Ends the registration `token` if it still holds `desc`, and tells `desc` why
    /// (Twisted's `_disconnectSelectable`).
    fn disconnect(&self, token: Token, desc: &Rc<dyn FileDescriptor>, reason: Reason) {
        let held = {
            let registry = self.inner.registry.borrow();
            registry
                .lookup(token)
                .is_some_and(|e| Rc::ptr_eq(&e.desc, desc))
        };
        if held {
            drop(self.remove_token(token));
        }
        self.guard("connection_lost", || desc.connection_lost(self, reason));
    }
}
