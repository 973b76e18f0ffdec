//! Outgoing connections: resolution on the reactor's thread pool, non-blocking connect,
//! timeout.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::connection::{Connection, Limits, Setup};
use crate::error::{panic_message, ConnectError, Panicked, TimedOut};
use crate::interfaces::{Address, ClientFactory, Connector, ConnectorImpl, Transport};
use crate::reactor::Inner;
use crate::{sys, Deferred, DelayedCall, FileDescriptor, Reactor, Reason};

/// A name lookup in flight on the thread pool.
struct Lookup {
    /// Fires once the answer was handed on (cancelled with the attempt).
    done: Deferred<()>,
    /// Set when the attempt no longer wants the answer: a lookup still queued then skips the
    /// resolver, so abandoned lookups do not hold up the others behind them.
    abandoned: Arc<AtomicBool>,
}

enum State {
    Disconnected,
    /// Waiting for the name lookup (`task`), or for the next iteration (an IP literal).
    Resolving {
        lookup: Option<Lookup>,
        timer: DelayedCall,
    },
    /// `connect(2)` in progress; `rest` holds the addresses still to try, next one last.
    Connecting {
        attempt: Rc<Attempt>,
        timer: DelayedCall,
        rest: Vec<SocketAddr>,
    },
    Connected(Transport),
}

pub(crate) struct ConnectorInner {
    me: Weak<ConnectorInner>,
    reactor: Weak<Inner>,
    host: String,
    port: u16,
    timeout: Duration,
    /// The local address to bind before connecting (Twisted's `bindAddress`).
    bind: Option<SocketAddr>,
    factory: Rc<dyn ClientFactory>,
    state: RefCell<State>,
    factory_started: Cell<bool>,
    /// Counts name lookups: a lookup's answer is used only while it is the current one (a
    /// cancelled or timed-out lookup's answer, arriving later, is dropped).
    lookups: Cell<u64>,
}

/// The reason a failed `connect(2)` gives.
fn connect_reason(e: io::Error) -> ConnectError {
    if sys::is_refused(&e) {
        ConnectError::Refused
    } else {
        ConnectError::io(e)
    }
}

/// Why an attempt ended when the reactor dropped its registration.
fn attempt_reason(reason: Reason) -> ConnectError {
    match reason {
        Reason::ReactorShutdown => ConnectError::ReactorShutdown,
        Reason::Panicked(p) => ConnectError::Panicked(p),
        Reason::ConnectionLost(Some(e)) => ConnectError::Io(e),
        other => ConnectError::io(io::Error::other(other.to_string())),
    }
}

/// A new connector (not started).
pub(crate) fn new(
    r: &Reactor,
    host: &str,
    port: u16,
    factory: Rc<dyn ClientFactory>,
    timeout: Duration,
) -> Connector {
    new_bound(r, host, port, factory, timeout, None)
}

/// A new connector (not started) that binds its socket to `bind` before connecting.
pub(crate) fn new_bound(
    r: &Reactor,
    host: &str,
    port: u16,
    factory: Rc<dyn ClientFactory>,
    timeout: Duration,
    bind: Option<SocketAddr>,
) -> Connector {
    Connector::new(Rc::new_cyclic(|me| ConnectorInner {
        me: me.clone(),
        reactor: Rc::downgrade(&r.inner),
        host: host.to_string(),
        port,
        timeout,
        bind,
        factory,
        state: RefCell::new(State::Disconnected),
        factory_started: Cell::new(false),
        lookups: Cell::new(0),
    }))
}

impl ConnectorImpl for ConnectorInner {
    fn destination(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn transport(&self) -> Option<Transport> {
        match &*self.state.borrow() {
            State::Connected(t) => Some(t.clone()),
            _ => None,
        }
    }

    fn connecting(&self) -> bool {
        matches!(
            *self.state.borrow(),
            State::Resolving { .. } | State::Connecting { .. }
        )
    }

    fn connect(&self) {
        let c = self;
        let Some(r) = c.reactor() else { return };
        if !matches!(*c.state.borrow(), State::Disconnected) {
            return;
        }
        if !c.factory_started.replace(true) {
            c.factory.start_factory();
        }
        let me = self.strong();
        let after = c.timeout;
        let timer = r.call_later(after, move |r| {
            me.fail(r, ConnectError::TimedOut(TimedOut { after }))
        });
        match c.host.parse::<IpAddr>() {
            Ok(ip) => {
                *c.state.borrow_mut() = State::Resolving {
                    lookup: None,
                    timer,
                };
                let me = self.strong();
                // The attempt starts on the next iteration: never inside connect().
                r.call_soon(move |r| me.attempt(r, Ok(vec![SocketAddr::new(ip, me.port)])));
            }
            Err(_) => {
                *c.state.borrow_mut() = State::Resolving {
                    lookup: None,
                    timer,
                };
                // On the reactor's bounded thread pool (Twisted's resolver uses its threads
                // too): many slow lookups never make many threads. A lookup abandoned by its
                // connect (timed out, cancelled) is skipped if it has not started, and its
                // answer dropped if it has.
                let (host, port) = (c.host.clone(), c.port);
                let me = self.strong();
                let lookup_id = c.lookups.get().wrapping_add(1);
                c.lookups.set(lookup_id);
                let abandoned = Arc::new(AtomicBool::new(false));
                let done = lookup(&r, host, port, abandoned.clone()).add_both(move |result| {
                    let result = result.unwrap_or_else(|f| Err(io::Error::other(f.to_string())));
                    // On the next iteration: a refused job fails at once, and the
                    // factory is never called from inside connect().
                    if let Some(r) = me.reactor() {
                        r.call_soon(move |r| {
                            if me.lookups.get() == lookup_id {
                                me.attempt(r, result);
                            }
                        });
                    }
                    Ok(())
                });
                if let State::Resolving { lookup: slot, .. } = &mut *c.state.borrow_mut() {
                    *slot = Some(Lookup { done, abandoned });
                }
            }
        }
        c.factory.started_connecting(&self.handle());
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
        let t = self.transport();
        match t {
            Some(t) => t.lose_connection(),
            None => self.stop_connecting(),
        }
    }
}

impl ConnectorInner {
    fn reactor(&self) -> Option<Reactor> {
        self.reactor.upgrade().map(Reactor::from_inner)
    }

    fn strong(&self) -> Rc<ConnectorInner> {
        self.me
            .upgrade()
            .expect("a connector is alive while its methods run")
    }

    fn handle(&self) -> Connector {
        Connector::new(self.strong())
    }

    /// Resolution finished: start the connect.
    fn attempt(&self, r: &Reactor, addrs: io::Result<Vec<SocketAddr>>) {
        let timer = match &*self.state.borrow() {
            State::Resolving { timer, .. } => timer.clone(),
            _ => return, // cancelled or timed out meanwhile
        };
        let mut addrs = match addrs {
            Ok(a) if !a.is_empty() => a,
            Ok(_) => {
                let reason = ConnectError::HostNotFound(format!("{}: no address", self.host));
                return self.fail(r, reason);
            }
            // Out of descriptors (or threads, or memory) is not a missing host.
            Err(e) if sys::is_fd_exhaustion(&e) || e.kind() == io::ErrorKind::Other => {
                return self.fail(r, ConnectError::io(e));
            }
            Err(e) => {
                let reason = ConnectError::HostNotFound(format!("{}: {e}", self.host));
                return self.fail(r, reason);
            }
        };
        // IPv4 first, as Twisted's connectTCP; each address is tried in turn until one
        // connects (within the one timeout). `rest` is popped from the end.
        addrs.sort_by_key(|a| a.is_ipv6());
        addrs.reverse();
        self.try_next(r, timer, addrs, ConnectError::Refused);
    }

    /// Starts `connect(2)` to the last address of `rest`; with none left, fails with `last`.
    fn try_next(
        &self,
        r: &Reactor,
        timer: DelayedCall,
        mut rest: Vec<SocketAddr>,
        last: ConnectError,
    ) {
        let Some(addr) = rest.pop() else {
            *self.state.borrow_mut() = State::Resolving {
                lookup: None,
                timer,
            };
            return self.fail(r, last);
        };
        let sock = match sys::tcp_socket(&addr) {
            Ok(s) => s,
            Err(e) => return self.try_next(r, timer, rest, ConnectError::io(e)),
        };
        if let Some(local) = self.bind {
            if let Err(e) = sys::bind(sock.as_raw_fd(), &local) {
                return self.try_next(r, timer, rest, ConnectError::io(e));
            }
        }
        let attempt = Rc::new(Attempt {
            fd: sock.as_raw_fd(),
            sock: RefCell::new(Some(sock)),
            connector: self.strong(),
        });
        *self.state.borrow_mut() = State::Connecting {
            attempt: attempt.clone(),
            timer,
            rest,
        };
        let result = sys::connect(attempt.fd, &addr)
            .map_err(connect_reason)
            .and_then(|_| {
                r.add_writer(attempt)
                    .map_err(|e| ConnectError::io(io::Error::other(e.to_string())))
            });
        if let Err(reason) = result {
            self.attempt_failed(r, reason);
        }
    }

    /// The current address failed: try the next one, or report the failure.
    fn attempt_failed(&self, r: &Reactor, reason: ConnectError) {
        let next = match &mut *self.state.borrow_mut() {
            State::Connecting {
                attempt,
                timer,
                rest,
            } if !rest.is_empty() => Some((attempt.clone(), timer.clone(), std::mem::take(rest))),
            _ => None,
        };
        match next {
            Some((attempt, timer, rest)) => {
                r.remove_writer(&*attempt);
                drop(attempt.sock.borrow_mut().take());
                self.try_next(r, timer, rest, reason);
            }
            None => self.fail(r, reason),
        }
    }

    /// Leaves the current state, cleaning up its attempt, timer or resolution.
    fn reset(&self, r: &Reactor) -> State {
        let old = std::mem::replace(&mut *self.state.borrow_mut(), State::Disconnected);
        match &old {
            State::Resolving { lookup, timer } => {
                self.lookups.set(self.lookups.get().wrapping_add(1));
                if let Some(l) = lookup {
                    l.abandoned.store(true, Ordering::Relaxed);
                    l.done.cancel(); // its callback then finds this lookup stale
                }
                let _ = timer.cancel();
            }
            State::Connecting { attempt, timer, .. } => {
                r.remove_writer(&**attempt);
                drop(attempt.sock.borrow_mut().take());
                let _ = timer.cancel();
            }
            _ => {}
        }
        old
    }

    fn fail(&self, r: &Reactor, reason: ConnectError) {
        if !matches!(
            self.reset(r),
            State::Resolving { .. } | State::Connecting { .. }
        ) {
            return;
        }
        let me = self.handle();
        self.factory.client_connection_failed(&me, reason);
        self.maybe_stop_factory();
    }

    fn maybe_stop_factory(&self) {
        if matches!(*self.state.borrow(), State::Disconnected)
            && self.factory_started.replace(false)
        {
            self.factory.stop_factory();
        }
    }

    fn connected(&self, r: &Reactor) {
        let attempt = match &*self.state.borrow() {
            State::Connecting { attempt, .. } => attempt.clone(),
            _ => return,
        };
        r.remove_writer(&*attempt);
        let sock = attempt.sock.borrow_mut().take();
        self.reset(r);
        let Some(sock) = sock else { return };
        let peer = match sys::peer_addr(sock.as_raw_fd()) {
            Ok(p) => p,
            Err(e) => return self.fail_after_reset(connect_reason(e)),
        };
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.factory.build_protocol(&Address::Tcp(peer))
        }));
        let protocol = match built {
            Ok(Some(p)) => p,
            Ok(None) => return self.fail_after_reset(ConnectError::NoProtocol),
            Err(payload) => {
                let msg = panic_message(&*payload);
                tracing::error!(%peer, message = %msg, "build_protocol panicked; connection closed");
                return self.fail_after_reset(ConnectError::Panicked(Panicked(msg)));
            }
        };
        // A strong reference: the connector must outlive the connection even when the user
        // dropped its handle (the cycle ends when the connection closes and this runs).
        let me = self.strong();
        let on_lost = Box::new(move |_: &Reactor, reason: Reason| me.lost(reason));
        // Connected before connection_made runs, so the protocol may already use the connector
        // (disconnect, transport), as in Twisted.
        let on_ready = |t: &Transport| *self.state.borrow_mut() = State::Connected(t.clone());
        let setup = Setup {
            protocol,
            limits: Rc::new(Limits::default()),
            on_lost: Some(on_lost),
        };
        if Connection::establish(r, sock, peer, None, setup, on_ready).is_none() {
            let refused = io::Error::other("the reactor cannot watch the connection");
            self.fail_after_reset(ConnectError::io(refused));
        }
    }

    fn fail_after_reset(&self, reason: ConnectError) {
        let me = self.handle();
        self.factory.client_connection_failed(&me, reason);
        self.maybe_stop_factory();
    }

    fn lost(&self, reason: Reason) {
        // The old state (the transport) is dropped with no borrow held.
        let old = std::mem::replace(&mut *self.state.borrow_mut(), State::Disconnected);
        drop(old);
        let me = self.handle();
        self.factory.client_connection_lost(&me, reason);
        self.maybe_stop_factory();
    }
}

/// A connection attempt waiting for writability. It holds its connector strongly, so that an
/// attempt whose `Connector` handle was dropped still reports to the factory (the cycle ends
/// when the attempt leaves the connector's state).
struct Attempt {
    fd: RawFd,
    sock: RefCell<Option<OwnedFd>>,
    connector: Rc<ConnectorInner>,
}

impl FileDescriptor for Attempt {
    fn fileno(&self) -> RawFd {
        self.fd
    }

    fn do_write(&self, r: &Reactor) -> Result<(), Reason> {
        let c = &self.connector;
        match sys::take_socket_error(self.fd) {
            Ok(None) => c.connected(r),
            Ok(Some(e)) | Err(e) => c.attempt_failed(r, connect_reason(e)),
        }
        Ok(())
    }

    fn connection_lost(&self, r: &Reactor, reason: Reason) {
        self.connector.fail(r, attempt_reason(reason));
    }
}

/// Resolves `host:port` on the reactor's bounded thread pool (the resolver of connectors and
/// of [`HostnameEndpoint`](crate::endpoints::HostnameEndpoint)). Set `abandoned` when the
/// answer is no longer wanted: a lookup still queued then skips the resolver. The Deferred
/// never fails: a refused or dropped job is an `Other` error.
pub(crate) fn lookup(
    r: &Reactor,
    host: String,
    port: u16,
    abandoned: Arc<AtomicBool>,
) -> Deferred<io::Result<Vec<SocketAddr>>> {
    r.defer_to_thread(move || {
        if abandoned.load(Ordering::Relaxed) {
            return Err(io::Error::other("lookup abandoned"));
        }
        (host.as_str(), port)
            .to_socket_addrs()
            .map(|a| a.collect::<Vec<_>>())
            .map_err(out_of_descriptors_or)
    })
    .add_both(|result| {
        // The pool refused or dropped the job (shut down, cancelled).
        Ok(result.unwrap_or_else(|failure| Err(io::Error::other(failure.to_string()))))
    })
}

/// A failed lookup's error, or the process's descriptor exhaustion when that is why it failed:
/// the resolver cannot open its files then, and reports the name as unknown.
fn out_of_descriptors_or(lookup: io::Error) -> io::Error {
    match std::fs::File::open("/dev/null") {
        Err(e) if sys::is_fd_exhaustion(&e) => e,
        _ => lookup,
    }
}
