//! Outgoing Unix connections: `connect(2)` on the next iteration, retried while the server's
//! accept queue is full, within one timeout.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::time::Duration;

use super::Unix;
use crate::error::{panic_message, ConnectError, Panicked, TimedOut};
use crate::interfaces::{Address, ClientFactory, Connector, ConnectorImpl, Transport, UnixAddress};
use crate::reactor::Inner;
use crate::tcp::{FdLimits, Limits, Setup, StreamConnection};
use crate::{sys, DelayedCall, Reactor, Reason};

/// First wait before connecting again to a server whose accept queue is full; doubled up to
/// [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(1);
const MAX_RETRY: Duration = Duration::from_millis(100);

enum State {
    Disconnected,
    /// Waiting for the next attempt (`next`), within the timeout (`timer`).
    Connecting {
        timer: DelayedCall,
        next: Option<DelayedCall>,
        backoff: Duration,
    },
    Connected(Transport),
}

pub(crate) struct UnixConnector {
    me: Weak<UnixConnector>,
    reactor: Weak<Inner>,
    addr: UnixAddress,
    timeout: Duration,
    factory: Rc<dyn ClientFactory>,
    state: RefCell<State>,
    factory_started: Cell<bool>,
}

pub(crate) fn new(
    r: &Reactor,
    addr: UnixAddress,
    factory: Rc<dyn ClientFactory>,
    timeout: Duration,
) -> Connector {
    Connector::new(Rc::new_cyclic(|me| UnixConnector {
        me: me.clone(),
        reactor: Rc::downgrade(&r.inner),
        addr,
        timeout,
        factory,
        state: RefCell::new(State::Disconnected),
        factory_started: Cell::new(false),
    }))
}

impl ConnectorImpl for UnixConnector {
    fn destination(&self) -> String {
        Address::Unix(self.addr.clone()).to_string()
    }

    fn transport(&self) -> Option<Transport> {
        match &*self.state.borrow() {
            State::Connected(t) => Some(t.clone()),
            _ => None,
        }
    }

    fn connecting(&self) -> bool {
        matches!(*self.state.borrow(), State::Connecting { .. })
    }

    fn connect(&self) {
        let Some(r) = self.reactor() else { return };
        if !matches!(*self.state.borrow(), State::Disconnected) {
            return;
        }
        if !self.factory_started.replace(true) {
            self.factory.start_factory();
        }
        let me = self.strong();
        let after = self.timeout;
        let timer = r.call_later(after, move |r| {
            me.fail(r, ConnectError::TimedOut(TimedOut { after }))
        });
        // The attempt starts on the next iteration: never inside connect().
        let me = self.strong();
        let next = r.call_later(Duration::ZERO, move |r| me.attempt(r));
        *self.state.borrow_mut() = State::Connecting {
            timer,
            next: Some(next),
            backoff: FIRST_RETRY,
        };
        self.factory.started_connecting(&self.handle());
    }

    fn stop_connecting(&self) {
        if !self.connecting() {
            return;
        }
        if let Some(r) = self.reactor() {
            self.fail(&r, ConnectError::Cancelled);
        }
    }

    fn disconnect(&self) {
        match self.transport() {
            Some(t) => t.lose_connection(),
            None => self.stop_connecting(),
        }
    }
}

impl UnixConnector {
    fn reactor(&self) -> Option<Reactor> {
        self.reactor.upgrade().map(Reactor::from_inner)
    }

    fn strong(&self) -> Rc<UnixConnector> {
        self.me
            .upgrade()
            .expect("a connector is alive while its methods run")
    }

    fn handle(&self) -> Connector {
        Connector::new(self.strong())
    }

    /// One `connect(2)`: connected, failed, or (accept queue full) tried again later.
    fn attempt(&self, r: &Reactor) {
        let backoff = match &mut *self.state.borrow_mut() {
            State::Connecting { next, backoff, .. } => {
                next.take();
                *backoff
            }
            _ => return,
        };
        let sock = match sys::unix_socket() {
            Ok(s) => s,
            Err(e) => return self.fail(r, ConnectError::io(e)),
        };
        match sys::unix_connect(sock.as_raw_fd(), &self.addr) {
            Ok(true) => self.connected(r, sock),
            // EINPROGRESS (not seen on Linux) or EAGAIN (the accept queue is full): again,
            // after a while, with a new socket.
            Ok(false) => self.retry(r, backoff),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.retry(r, backoff),
            Err(e) if sys::is_refused(&e) => self.fail(r, ConnectError::Refused),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => self.fail(r, ConnectError::io(e)),
            Err(e) => self.fail(r, ConnectError::io(e)),
        }
    }

    fn retry(&self, r: &Reactor, backoff: Duration) {
        let me = self.strong();
        let call = r.call_later(backoff, move |r| me.attempt(r));
        if let State::Connecting {
            next, backoff: b, ..
        } = &mut *self.state.borrow_mut()
        {
            *next = Some(call);
            *b = (backoff * 2).min(MAX_RETRY);
        } else {
            let _ = call.cancel();
        }
    }

    /// Leaves the current state, cancelling its timers.
    fn reset(&self) -> State {
        let old = std::mem::replace(&mut *self.state.borrow_mut(), State::Disconnected);
        if let State::Connecting { timer, next, .. } = &old {
            let _ = timer.cancel();
            if let Some(n) = next {
                let _ = n.cancel();
            }
        }
        old
    }

    fn fail(&self, _r: &Reactor, reason: ConnectError) {
        if !matches!(self.reset(), State::Connecting { .. }) {
            return;
        }
        self.factory
            .client_connection_failed(&self.handle(), reason);
        self.maybe_stop_factory();
    }

    fn maybe_stop_factory(&self) {
        if matches!(*self.state.borrow(), State::Disconnected)
            && self.factory_started.replace(false)
        {
            self.factory.stop_factory();
        }
    }

    fn connected(&self, r: &Reactor, sock: std::os::fd::OwnedFd) {
        self.reset();
        let peer = Address::Unix(self.addr.clone());
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.factory.build_protocol(&peer)
        }));
        let protocol = match built {
            Ok(Some(p)) => p,
            Ok(None) => return self.failed_after_reset(ConnectError::NoProtocol),
            Err(payload) => {
                let msg = panic_message(&*payload);
                tracing::error!(%peer, message = %msg, "build_protocol panicked; connection closed");
                return self.failed_after_reset(ConnectError::Panicked(Panicked(msg)));
            }
        };
        // A strong reference: the connector outlives the connection even when the user dropped
        // its handle (the cycle ends when the connection closes and this runs).
        let me = self.strong();
        let on_lost = Box::new(move |_: &Reactor, reason: Reason| me.lost(reason));
        let on_ready = |t: &Transport| *self.state.borrow_mut() = State::Connected(t.clone());
        let setup = Setup {
            protocol,
            limits: Rc::new(Limits::default()),
            on_lost: Some(on_lost),
        };
        let fd_limits = FdLimits::default();
        let started =
            StreamConnection::<Unix>::start(r, sock, peer, None, setup, fd_limits, on_ready);
        if started.is_none() {
            let refused = io::Error::other("the reactor cannot watch the connection");
            self.failed_after_reset(ConnectError::io(refused));
        }
    }

    fn failed_after_reset(&self, reason: ConnectError) {
        self.factory
            .client_connection_failed(&self.handle(), reason);
        self.maybe_stop_factory();
    }

    fn lost(&self, reason: Reason) {
        let old = std::mem::replace(&mut *self.state.borrow_mut(), State::Disconnected);
        drop(old);
        self.factory.client_connection_lost(&self.handle(), reason);
        self.maybe_stop_factory();
    }
}
