//! Listening sockets: accept with a per-wakeup budget, survive descriptor exhaustion.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::Duration;

use super::connection::{Connection, Limits, Setup};
use super::shed::Shedder;
use crate::interfaces::{Address, ListeningPort, ListeningPortImpl, ProtocolFactory};
use crate::poller::uring::{Done, OpTarget, Port};
use crate::poller::{Interest, Trigger};
use crate::protocol::{factory_port_closed, factory_port_opened};
use crate::reactor::{Inner, Registration};
use crate::{sys, DelayedCall, Error, FileDescriptor, Reactor, Reason};

/// Connections accepted per readiness event at most, so that a flood of connects cannot starve
/// the other descriptors.
const ACCEPT_BUDGET: usize = 64;

/// How long the listener stops accepting when the process is out of descriptors and it has no
/// spare one to shed pending clients with.
const EXHAUSTED_PAUSE: Duration = Duration::from_millis(100);

/// Options for [`Reactor::listen_tcp_with`].
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use torsion::tcp::ListenOptions;
///
/// let opts = ListenOptions {
///     max_write_buffer: Some(4 << 20), // reset a peer that leaves 4 MiB unread
///     close_flush_timeout: Duration::from_secs(5),
///     ..ListenOptions::default()
/// };
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ListenOptions {
    /// The accept queue's length (default 1024).
    pub backlog: i32,
    /// SO_REUSEADDR (default on, so a restarted server can bind at once).
    pub reuse_addr: bool,
    /// SO_REUSEPORT (default off): several sockets, each with it set, listen on the same
    /// address and the kernel spreads the incoming connections among them (one reactor per
    /// core, [`reactor::multi`](crate::reactor::multi)).
    pub reuse_port: bool,
    /// For IPv6 addresses: accept IPv6 only. Default false: the system's dual-stack default,
    /// as std, tokio and Twisted (`[::]` then accepts IPv4 clients too).
    pub v6_only: bool,
    /// A hard limit on each connection's write buffer: a write that leaves more than this
    /// waiting resets the connection with [`Reason::WriteBufferFull`] and logs a warning.
    /// Default `None` (no limit: bound the buffer with flow control, see
    /// [`Transport::write`](crate::Transport::write)).
    pub max_write_buffer: Option<usize>,
    /// When a peer half-closes and the protocol lets the connection close, what it already
    /// wrote is still sent for at most this long (default 30 s), then the connection is reset
    /// with [`Reason::TimedOut`].
    pub close_flush_timeout: Duration,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: 1024,
            reuse_addr: true,
            reuse_port: false,
            v6_only: false,
            max_write_buffer: None,
            close_flush_timeout: super::connection::DEFAULT_CLOSE_FLUSH_TIMEOUT,
        }
    }
}

impl ListenOptions {
    fn limits(&self) -> Rc<Limits> {
        Rc::new(Limits {
            close_flush_timeout: self.close_flush_timeout,
            max_write_buffer: self.max_write_buffer,
        })
    }
}

pub(crate) struct Listener {
    me: Weak<Listener>,
    fd: RawFd,
    sock: RefCell<Option<OwnedFd>>,
    reactor: Weak<Inner>,
    factory: Rc<dyn ProtocolFactory>,
    addr: SocketAddr,
    limits: Rc<Limits>,
    /// What it does when the process is out of descriptors.
    shedder: Shedder,
    paused: RefCell<Option<DelayedCall>>,
    /// From `listen` until `stop_listening` (or the reactor's shutdown, which stops it even
    /// while its accepts are paused).
    reg: Cell<Option<Registration>>,
    accepted: Cell<u64>,
    /// On io_uring: accepts are one multishot ACCEPT on the ring (see `OpTarget`).
    port: Option<Port>,
    /// The multishot ACCEPT in flight.
    accept_op: Cell<Option<u64>>,
    /// On io_uring, once the ring's ACCEPT failed for want of descriptors: accepts wait for
    /// readiness instead, until one succeeds. (The ring's ACCEPT takes a descriptor number
    /// before it looks for a client, so while the table is full it fails at once, client or
    /// not: re-armed, it would spin.)
    at_limit: Cell<bool>,
}

impl ListeningPortImpl for Listener {
    fn address(&self) -> Address {
        Address::Tcp(self.addr)
    }

    fn stop_listening(&self) {
        if self.sock.borrow().is_none() {
            return;
        }
        if let Some(r) = self.reactor() {
            if let Some(reg) = self.reg.take() {
                r.deregister(&reg);
            }
            if let Some(p) = self.paused.borrow_mut().take() {
                let _ = p.cancel();
            }
        }
        if let (Some(port), Some(op)) = (&self.port, self.accept_op.take()) {
            // The request holds the socket: cancel it now, so that the address is free when
            // this returns.
            port.cancel(op);
            port.submit();
        }
        drop(self.sock.borrow_mut().take());
        self.shedder.release();
        factory_port_closed(&self.factory);
    }

    fn accepted(&self) -> u64 {
        self.accepted.get()
    }

    fn shed(&self) -> u64 {
        self.shedder.shed()
    }
}

impl Listener {
    fn reactor(&self) -> Option<Reactor> {
        self.reactor.upgrade().map(Reactor::from_inner)
    }

    fn accept_one(&self, r: &Reactor, sock: OwnedFd, peer: SocketAddr) {
        self.accepted.set(self.accepted.get() + 1);
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.factory.build_protocol(&Address::Tcp(peer))
        }));
        match built {
            Ok(Some(protocol)) => {
                // Bound to a specific address, the listener knows every accepted socket's local
                // address: no getsockname per connection.
                let host = (!self.addr.ip().is_unspecified()).then_some(self.addr);
                let setup = Setup {
                    protocol,
                    limits: self.limits.clone(),
                    on_lost: None,
                };
                Connection::establish(r, sock, peer, host, setup, |_| {});
            }
            Ok(None) => drop(sock), // refused by the factory
            Err(payload) => {
                let msg = crate::error::panic_message(&*payload);
                tracing::error!(%peer, message = %msg, "build_protocol panicked; connection closed");
                drop(sock);
            }
        }
    }

    /// Out of descriptors: use the spare one to accept and close pending clients, or pause.
    fn exhausted(&self, r: &Reactor) {
        let shed = self.shedder.shed_pending(&self.addr, ACCEPT_BUDGET, || {
            sys::accept(self.fd).map(|(c, _)| c)
        });
        if !shed {
            tracing::warn!(addr = %self.addr, "out of file descriptors: pausing accepts");
            self.pause(r);
        }
    }

    /// On io_uring: queues the multishot ACCEPT, unless one is in flight.
    fn arm_accept(&self) -> io::Result<()> {
        let Some(port) = &self.port else {
            return Ok(());
        };
        if self.accept_op.get().is_none() {
            let me: Weak<dyn OpTarget> = self.me.clone();
            self.accept_op.set(Some(port.accept(self.fd, me)?));
        }
        Ok(())
    }

    /// Starts or stops accepting.
    fn watch(&self, r: &Reactor, on: bool) {
        let Some(reg) = self.reg.get() else { return };
        if let Some(port) = &self.port {
            if !on {
                if let Some(op) = self.accept_op.take() {
                    port.cancel(op);
                }
            }
            if !self.at_limit.get() {
                // Accepts are the ring's multishot ACCEPT.
                if on {
                    if let Err(e) = self.arm_accept() {
                        tracing::error!(addr = %self.addr, error = %e, "cannot queue an accept; pausing accepts");
                        self.pause(r);
                    }
                }
                return;
            }
            // At the descriptor limit: readiness, as on the other backends.
        }
        let interest = if on {
            Interest::READ
        } else {
            Interest::default()
        };
        if let Err(e) = r.set_interest(&reg, interest) {
            tracing::warn!(addr = %self.addr, error = %e, "cannot change whether a listener accepts");
        }
    }

    /// Stops accepting for [`EXHAUSTED_PAUSE`], so that a listener whose accepts keep failing
    /// (no descriptors, no kernel memory) does not spin on its level-triggered readiness.
    fn pause(&self, r: &Reactor) {
        if self.paused.borrow().is_some() {
            return;
        }
        self.watch(r, false);
        let me = self.me.clone();
        let call = r.call_later(EXHAUSTED_PAUSE, move |r| {
            if let Some(l) = me.upgrade() {
                l.paused.borrow_mut().take();
                if l.sock.borrow().is_some() {
                    l.shedder.restore();
                    l.watch(r, true);
                }
            }
        });
        *self.paused.borrow_mut() = Some(call);
    }
}

impl FileDescriptor for Listener {
    fn fileno(&self) -> RawFd {
        self.fd
    }

    fn do_read(&self, r: &Reactor) -> Result<(), Reason> {
        let mut exhausted = false;
        for _ in 0..ACCEPT_BUDGET {
            if self.sock.borrow().is_none() {
                break;
            }
            match sys::accept(self.fd) {
                Ok((sock, peer)) => self.accept_one(r, sock, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if sys::is_fd_exhaustion(&e) => {
                    exhausted = true;
                    self.exhausted(r);
                    break;
                }
                Err(e) if sys::is_transient_accept_error(&e) => continue,
                Err(e) => {
                    tracing::error!(addr = %self.addr, error = %e, "accept failed; pausing accepts");
                    self.pause(r);
                    break;
                }
            }
        }
        // On io_uring at the descriptor limit, an accept that did not run out of descriptors
        // means there are some again: back to the ring's ACCEPT.
        if self.at_limit.get()
            && !exhausted
            && self.paused.borrow().is_none()
            && self.sock.borrow().is_some()
        {
            self.watch(r, false);
            self.at_limit.set(false);
            self.watch(r, true);
        }
        Ok(())
    }

    fn connection_lost(&self, r: &Reactor, reason: Reason) {
        tracing::debug!(addr = %self.addr, %reason, "listening port closed by the reactor");
        let _ = r;
        self.stop_listening();
    }
}

/// On io_uring: the completions of the multishot ACCEPT, one per new connection.
impl OpTarget for Listener {
    fn complete(&self, r: &Reactor, d: &mut Done) {
        let ours = self.accept_op.get() == Some(d.op);
        if ours && !d.more {
            self.accept_op.set(None);
        }
        let listening = self.sock.borrow().is_some();
        match d.result {
            fd if fd >= 0 => {
                // A connection accepted even by a request being cancelled is served while the
                // port listens (and closed otherwise).
                let Some(sock) = d.accepted.take() else {
                    return;
                };
                if !listening {
                    let _ = sys::set_linger_zero(sock.as_raw_fd());
                    return;
                }
                match sys::peer_addr(sock.as_raw_fd()) {
                    Ok(peer) => self.accept_one(r, sock, peer),
                    // Gone already (reset while queued): nothing to serve.
                    Err(_) => drop(sock),
                }
            }
            e if e == -libc::ECANCELED => return,
            e => {
                let err = io::Error::from_raw_os_error(-e);
                if !ours || !listening {
                    return;
                }
                if sys::is_fd_exhaustion(&err) {
                    self.at_limit.set(true);
                    self.exhausted(r);
                } else if !sys::is_transient_accept_error(&err) {
                    tracing::error!(addr = %self.addr, error = %err, "accept failed; pausing accepts");
                    self.pause(r);
                }
            }
        }
        // The request ended (an error, or the kernel's choice): accept on, unless paused.
        if listening
            && self.accept_op.get().is_none()
            && self.paused.borrow().is_none()
            && self.sock.borrow().is_some()
        {
            self.watch(r, true);
        }
    }

    fn before_poll(&self, _: &Reactor) {}
}

pub(crate) fn listen(
    r: &Reactor,
    addr: SocketAddr,
    factory: Rc<dyn ProtocolFactory>,
    opts: ListenOptions,
) -> Result<ListeningPort, Error> {
    let sock = sys::tcp_socket(&addr)?;
    let fd = sock.as_raw_fd();
    if opts.reuse_addr {
        sys::set_reuseaddr(fd)?;
    }
    if opts.reuse_port {
        sys::set_reuseport(fd)?;
    }
    if addr.is_ipv6() {
        sys::set_v6only(fd, opts.v6_only)?;
    }
    sys::bind(fd, &addr)?;
    sys::listen(fd, opts.backlog)?;
    let bound = sys::local_addr(fd)?;
    let listener = Rc::new_cyclic(|me| Listener {
        me: me.clone(),
        fd,
        sock: RefCell::new(Some(sock)),
        reactor: Rc::downgrade(&r.inner),
        factory,
        addr: bound,
        limits: opts.limits(),
        shedder: Shedder::new(),
        paused: RefCell::new(None),
        reg: Cell::new(None),
        accepted: Cell::new(0),
        port: r.port().cloned(),
        accept_op: Cell::new(None),
        at_limit: Cell::new(false),
    });
    let reg = r.register(listener.clone(), Trigger::Level)?;
    listener.reg.set(Some(reg));
    if listener.port.is_some() {
        // Registered without interest (the reactor's shutdown still finds it); accepts are a
        // multishot ACCEPT on the ring.
        if let Err(e) = listener.arm_accept() {
            r.deregister(&reg);
            return Err(Error::Io(e));
        }
    } else if let Err(e) = r.set_interest(&reg, Interest::READ) {
        r.deregister(&reg);
        return Err(e);
    }
    factory_port_opened(&listener.factory);
    Ok(ListeningPort::new(listener))
}
