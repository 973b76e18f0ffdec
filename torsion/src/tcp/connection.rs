//! A connected stream socket: the [`Transport`] handed to protocols.

use std::cell::RefCell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};

use super::buffer::{Flush, WriteBuffer};
use crate::protocol::{HalfClose, Producer, Protocol};
use crate::reactor::Inner;
use crate::{sys, Error, FileDescriptor, Reactor, Reason};

/// Reads per readiness event at most (see `do_read`).
const READS_PER_EVENT: usize = 4;

/// Default high-water mark of the write buffer: a streaming producer is paused above it.
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;
/// Default low-water mark: a paused streaming producer is resumed at or below it.
pub const DEFAULT_LOW_WATER: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteShut {
    Open,
    Requested,
    Done,
}

/// Mutable connection state. Never borrowed while user code runs.
struct State {
    buf: WriteBuffer,
    /// Registered for reading / writing with the reactor.
    reading: bool,
    writing: bool,
    /// `pause_producing` was called on the transport.
    read_paused: bool,
    /// The peer sent FIN and the protocol chose to keep writing.
    read_closed: bool,
    /// `lose_connection` was called: close once the buffer is flushed and the producer gone.
    disconnecting: bool,
    write_shut: WriteShut,
    /// The connection will close on the next iteration (abort, or a failed write): every
    /// operation but the close itself is ignored.
    doomed: bool,
    /// `connection_lost` has been delivered (or is being delivered).
    closed: bool,
    producer: Option<Rc<dyn Producer>>,
    streaming: bool,
    producer_paused: bool,
    high: usize,
    low: usize,
}

pub(crate) type OnLost = Box<dyn FnOnce(&Reactor, Reason)>;

pub(crate) struct Connection {
    me: Weak<Connection>,
    fd: RawFd,
    sock: RefCell<Option<OwnedFd>>,
    reactor: Weak<Inner>,
    protocol: RefCell<Option<Box<dyn Protocol>>>,
    st: RefCell<State>,
    peer: SocketAddr,
    host: SocketAddr,
    /// Run after the protocol's `connection_lost` (the connector's bookkeeping).
    on_lost: RefCell<Option<OnLost>>,
}

/// The write side of a connection, handed to every [`Protocol`] callback (Twisted's
/// `ITransport`, `ITCPTransport`, `IConsumer` and `IPushProducer`).
///
/// Cheap to clone; clones are the same connection, and compare equal. A clone may be stored
/// (a chat server keeps its clients' transports) and written to from any callback on the reactor
/// thread. Writes after the connection closed are dropped, as in Twisted.
#[derive(Clone)]
pub struct Transport {
    pub(crate) conn: Rc<Connection>,
}

impl PartialEq for Transport {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.conn, &other.conn)
    }
}
impl Eq for Transport {}
impl Hash for Transport {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Rc::as_ptr(&self.conn) as *const u8 as usize).hash(state);
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("peer", &self.conn.peer)
            .field("host", &self.conn.host)
            .field("connected", &self.connected())
            .finish()
    }
}

impl Connection {
    /// Wraps a connected socket, starts reading and calls `connection_made`. `host` is the
    /// socket's local address when the caller knows it (else it is asked for).
    pub(crate) fn establish(
        reactor: &Reactor,
        sock: OwnedFd,
        peer: SocketAddr,
        host: Option<SocketAddr>,
        protocol: Box<dyn Protocol>,
        on_lost: Option<OnLost>,
        on_ready: impl FnOnce(&Transport),
    ) -> Option<Transport> {
        let fd = sock.as_raw_fd();
        let host = host.unwrap_or_else(|| sys::local_addr(fd).unwrap_or(peer));
        let conn = Rc::new_cyclic(|me| Connection {
            me: me.clone(),
            fd,
            sock: RefCell::new(Some(sock)),
            reactor: Rc::downgrade(&reactor.inner),
            protocol: RefCell::new(Some(protocol)),
            st: RefCell::new(State {
                buf: WriteBuffer::default(),
                reading: true,
                writing: false,
                read_paused: false,
                read_closed: false,
                disconnecting: false,
                write_shut: WriteShut::Open,
                doomed: false,
                closed: false,
                producer: None,
                streaming: false,
                producer_paused: false,
                high: DEFAULT_HIGH_WATER,
                low: DEFAULT_LOW_WATER,
            }),
            peer,
            host,
            on_lost: RefCell::new(on_lost),
        });
        if let Err(e) = reactor.watch_edge(conn.clone(), true, false) {
            tracing::warn!(%peer, error = %e, "cannot watch a new connection; closing it");
            return None;
        }
        let weak: Weak<dyn FileDescriptor> = Rc::downgrade(&conn) as Weak<dyn FileDescriptor>;
        reactor.track(conn.key(), weak);
        let t = Transport { conn };
        on_ready(&t);
        t.conn.with_protocol(&t, |p, t| p.connection_made(t));
        Some(t)
    }

    fn reactor(&self) -> Option<Reactor> {
        self.reactor.upgrade().map(|inner| Reactor { inner })
    }

    /// This connection's key in the reactor's set of open connections.
    fn key(&self) -> usize {
        self as *const Connection as usize
    }

    fn rc(&self) -> Rc<Connection> {
        self.me
            .upgrade()
            .expect("a connection is alive while its methods run")
    }

    /// Calls into the protocol. Protocol callbacks are never nested for one connection (every
    /// closing path is deferred), so the borrow cannot conflict; if it ever did, the call is
    /// skipped and logged rather than panicking inside the reactor.
    fn with_protocol<R: Default>(
        &self,
        t: &Transport,
        f: impl FnOnce(&mut dyn Protocol, &Transport) -> R,
    ) -> R {
        let Ok(mut slot) = self.protocol.try_borrow_mut() else {
            tracing::error!(peer = %self.peer, "nested protocol callback skipped");
            return R::default();
        };
        let Some(p) = slot.as_mut() else {
            return R::default();
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut **p, t)));
        drop(slot);
        match result {
            Ok(r) => r,
            Err(payload) => {
                // A panicking protocol loses its connection, and only its connection: the
                // listener or connector that called connection_made carries on.
                let msg = crate::error::panic_message(&*payload);
                tracing::error!(peer = %self.peer, message = %msg, "a protocol callback panicked; closing its connection");
                if let Some(r) = self.reactor() {
                    self.doom(&r, Reason::Panicked(msg), false);
                }
                R::default()
            }
        }
    }

    fn set_reading(&self, r: &Reactor, on: bool) {
        let change = {
            let mut st = self.st.borrow_mut();
            let change = st.reading != on;
            st.reading = on;
            change
        };
        if change {
            if on {
                if let Err(e) = r.watch_edge(self.rc(), true, false) {
                    tracing::warn!(peer = %self.peer, error = %e, "cannot resume reading");
                }
            } else {
                r.remove_reader(self);
            }
        }
    }

    fn set_writing(&self, r: &Reactor, on: bool) {
        let change = {
            let mut st = self.st.borrow_mut();
            let change = st.writing != on;
            st.writing = on;
            change
        };
        if change {
            if on {
                if let Err(e) = r.watch_edge(self.rc(), false, true) {
                    tracing::warn!(peer = %self.peer, error = %e, "cannot watch for writability");
                }
            } else {
                r.remove_writer(self);
            }
        }
    }

    /// Closes on the next iteration with `reason` (never re-entrantly).
    fn doom(&self, r: &Reactor, reason: Reason, reset: bool) {
        {
            let mut st = self.st.borrow_mut();
            if st.closed || st.doomed {
                return;
            }
            st.doomed = true;
            st.buf.clear();
        }
        self.set_reading(r, false);
        self.set_writing(r, false);
        if reset {
            let _ = sys::set_linger_zero(self.fd);
        }
        let me = self.rc();
        r.call_soon(move |r| me.close_now(r, reason));
    }

    /// Closes the socket and delivers `connection_lost` once.
    fn close_now(&self, r: &Reactor, reason: Reason) {
        let producer = {
            let mut st = self.st.borrow_mut();
            if st.closed {
                return;
            }
            st.closed = true;
            st.buf.clear();
            st.producer.take()
        };
        // Deregister before close.
        self.set_reading(r, false);
        self.set_writing(r, false);
        drop(self.sock.borrow_mut().take());
        r.untrack(self.key());
        // Each piece of user code on its own: a panic in one must not skip the others (the
        // connector's bookkeeping in `on_lost` above all).
        let guard = |what: &str, f: &mut dyn FnMut()| {
            if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                let msg = crate::error::panic_message(&*payload);
                tracing::error!(peer = %self.peer, message = %msg, "{what} panicked");
            }
        };
        if let Some(p) = producer {
            guard("stop_producing", &mut || p.stop_producing());
        }
        let protocol = self.protocol.borrow_mut().take();
        if let Some(mut p) = protocol {
            guard("connection_lost", &mut || p.connection_lost(reason.clone()));
        }
        let on_lost = self.on_lost.borrow_mut().take();
        if let Some(f) = on_lost {
            let mut f = Some(f);
            guard("client_connection_lost", &mut || {
                if let Some(f) = f.take() {
                    f(r, reason.clone())
                }
            });
        }
    }

    /// One `recv` into the reactor's buffer, delivered to the protocol. Returns whether more
    /// may be waiting: the buffer came back full, or the call was interrupted. A short read
    /// drains a TCP socket, which is what edge-triggered registration relies on (urgent data,
    /// the exception, is handled by the reactor).
    fn read_once(&self, r: &Reactor, t: &Transport) -> Result<bool, Reason> {
        enum Got {
            Data(bool),
            Eof,
            Nothing,
        }
        let got = r.with_read_buffer(|buf| match sys::recv(self.fd, buf) {
            Ok(0) => Ok(Got::Eof),
            Ok(n) => {
                self.with_protocol(t, |p, t| p.data_received(t, &buf[..n]));
                Ok(Got::Data(n == buf.len()))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Got::Nothing),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Got::Data(true)),
            Err(e) => Err(Reason::lost(e)),
        })?;
        match got {
            Got::Eof => self.read_eof(r, t).map(|()| false),
            Got::Data(full) => Ok(full),
            Got::Nothing => Ok(false),
        }
    }

    fn read_eof(&self, r: &Reactor, t: &Transport) -> Result<(), Reason> {
        let choice = self.with_protocol(t, |p, t| p.read_connection_lost(t));
        if choice == HalfClose::Close {
            return Err(Reason::ConnectionDone);
        }
        let write_done = {
            let mut st = self.st.borrow_mut();
            st.read_closed = true;
            st.write_shut == WriteShut::Done
        };
        if write_done {
            return Err(Reason::ConnectionDone);
        }
        self.set_reading(r, false);
        Ok(())
    }

    fn write_ready(&self, r: &Reactor, t: &Transport) -> Result<(), Reason> {
        let flushed = {
            let mut st = self.st.borrow_mut();
            if st.closed || st.doomed {
                return Ok(());
            }
            st.buf.flush(self.fd).map_err(Reason::lost)?
        };
        if let Flush::WouldBlock = flushed {
            self.maybe_resume_streaming();
            return Ok(());
        }
        // Empty: stop watching for writability first (a write re-registers), then ask a pull
        // producer for more, resume a streaming one.
        self.set_writing(r, false);
        let pull = {
            let st = self.st.borrow();
            st.producer.clone().filter(|_| !st.streaming)
        };
        if let Some(p) = pull {
            p.resume_producing();
        }
        self.maybe_resume_streaming();
        let (empty, finish, shut) = {
            let st = self.st.borrow();
            let empty = st.buf.is_empty();
            (
                empty,
                empty && st.disconnecting && st.producer.is_none(),
                empty && st.write_shut == WriteShut::Requested,
            )
        };
        if finish {
            return Err(Reason::ConnectionDone);
        }
        if shut {
            let _ = sys::shutdown(self.fd, sys::Shut::Write);
            let read_closed = {
                let mut st = self.st.borrow_mut();
                st.write_shut = WriteShut::Done;
                st.read_closed
            };
            self.with_protocol(t, |p, t| p.write_connection_lost(t));
            if read_closed {
                return Err(Reason::ConnectionDone);
            }
        }
        if !empty {
            self.set_writing(r, true);
        }
        Ok(())
    }

    fn maybe_resume_streaming(&self) {
        let p = {
            let mut st = self.st.borrow_mut();
            if st.streaming && st.producer_paused && st.buf.len() <= st.low {
                st.producer_paused = false;
                st.producer.clone()
            } else {
                None
            }
        };
        if let Some(p) = p {
            p.resume_producing();
        }
    }
}

impl FileDescriptor for Connection {
    fn fileno(&self) -> RawFd {
        self.fd
    }

    fn do_read(&self, r: &Reactor) -> Result<(), Reason> {
        if self.st.borrow().closed {
            return Ok(());
        }
        let t = Transport { conn: self.rc() };
        // A read that fills the buffer is followed by another (a busy stream then costs no
        // extra poll per buffer), as long as the protocol still wants data; a short read means
        // the socket is drained. Bounded, so that one stream cannot starve the others: when
        // the budget runs out with data still waiting, the reactor is asked to come back on
        // the next iteration (an edge-triggered registration gets no second report).
        for _ in 0..READS_PER_EVENT {
            if !self.read_once(r, &t)? {
                return Ok(());
            }
            let st = self.st.borrow();
            if !st.reading || st.closed || st.doomed {
                return Ok(());
            }
        }
        r.read_again(self.fd);
        Ok(())
    }

    fn do_write(&self, r: &Reactor) -> Result<(), Reason> {
        let t = Transport { conn: self.rc() };
        self.write_ready(r, &t)
    }

    fn connection_lost(&self, r: &Reactor, reason: Reason) {
        self.close_now(r, reason);
    }
}

impl Transport {
    /// Writes `data`: sent at once as far as the socket takes it, the rest buffered and sent
    /// when the socket is writable. Never blocks; never drops data while connected. Ignored
    /// after the connection closed (or once it is being aborted).
    pub fn write(&self, data: &[u8]) {
        self.write_sequence(&[data]);
    }

    /// Writes several buffers with one vectored system call where possible (Twisted's
    /// `writeSequence`).
    pub fn write_sequence(&self, data: &[&[u8]]) {
        let c = &*self.conn;
        let Some(r) = c.reactor() else { return };
        let (need_writer, pause, failed) = {
            let mut st = c.st.borrow_mut();
            // As Twisted: writes are accepted until the write side is actually shut.
            if st.closed || st.doomed || st.write_shut == WriteShut::Done {
                return;
            }
            let mut skip = 0;
            let mut failed = None;
            if st.buf.is_empty() {
                let sent = if data.len() == 1 {
                    sys::send(c.fd, data[0])
                } else {
                    sys::send_vectored(c.fd, data)
                };
                match sent {
                    Ok(n) => skip = n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => failed = Some(e),
                }
            }
            if failed.is_none() {
                for d in data {
                    if skip >= d.len() {
                        skip -= d.len();
                    } else {
                        st.buf.push(&d[skip..]);
                        skip = 0;
                    }
                }
            }
            // A pull producer is asked for more when the socket can take it: after any write
            // while one is registered, watch for writability even if nothing was buffered.
            let pull = st.producer.is_some() && !st.streaming;
            let need_writer = (!st.buf.is_empty() || pull) && !st.writing;
            let pause = if st.streaming && !st.producer_paused && st.buf.len() > st.high {
                st.producer_paused = true;
                st.producer.clone()
            } else {
                None
            };
            (need_writer, pause, failed)
        };
        if let Some(e) = failed {
            c.doom(&r, Reason::lost(e), false);
            return;
        }
        if need_writer {
            c.set_writing(&r, true);
        }
        if let Some(p) = pause {
            p.pause_producing();
        }
    }

    /// Closes the connection once the write buffer is flushed and any registered producer has
    /// unregistered: FIN, then `connection_lost(ConnectionDone)`. Stops reading at once.
    pub fn lose_connection(&self) {
        let c = &*self.conn;
        let Some(r) = c.reactor() else { return };
        {
            let mut st = c.st.borrow_mut();
            if st.closed || st.doomed || st.disconnecting {
                return;
            }
            st.disconnecting = true;
        }
        c.set_reading(&r, false);
        c.set_writing(&r, true);
    }

    /// Closes at once: discards the buffer, sends RST, and delivers
    /// `connection_lost(ConnectionAborted)` on the next iteration (never re-entrantly).
    pub fn abort_connection(&self) {
        if let Some(r) = self.conn.reactor() {
            self.conn.doom(&r, Reason::ConnectionAborted, true);
        }
    }

    /// Half-close: once the buffer is flushed, shut down the sending side (FIN) and keep
    /// reading. The protocol's `write_connection_lost` runs then.
    pub fn lose_write_connection(&self) {
        let c = &*self.conn;
        let Some(r) = c.reactor() else { return };
        {
            let mut st = c.st.borrow_mut();
            if st.closed || st.doomed || st.write_shut != WriteShut::Open {
                return;
            }
            st.write_shut = WriteShut::Requested;
        }
        c.set_writing(&r, true);
    }

    /// Stops reading (Twisted's `pauseProducing` on a transport).
    pub fn pause_producing(&self) {
        let c = &*self.conn;
        let Some(r) = c.reactor() else { return };
        c.st.borrow_mut().read_paused = true;
        c.set_reading(&r, false);
    }

    /// Starts reading again after [`pause_producing`](Transport::pause_producing).
    pub fn resume_producing(&self) {
        let c = &*self.conn;
        let Some(r) = c.reactor() else { return };
        let can_read = {
            let mut st = c.st.borrow_mut();
            st.read_paused = false;
            !(st.closed || st.doomed || st.disconnecting || st.read_closed)
        };
        if can_read {
            c.set_reading(&r, true);
        }
    }

    /// Same as [`lose_connection`](Transport::lose_connection) (Twisted's `stopProducing`).
    pub fn stop_producing(&self) {
        self.lose_connection();
    }

    /// Registers a producer that writes into this transport. A streaming producer is paused
    /// above the high-water mark and resumed at the low-water mark; a pull producer is asked for
    /// data now and each time the buffer empties. On a closed transport the producer is told
    /// `stop_producing` at once.
    ///
    /// # Errors
    /// [`Error::ProducerAlreadyRegistered`] when one is registered.
    pub fn register_producer(
        &self,
        producer: Rc<dyn Producer>,
        streaming: bool,
    ) -> Result<(), Error> {
        let c = &*self.conn;
        let closed = {
            let mut st = c.st.borrow_mut();
            if st.producer.is_some() {
                return Err(Error::ProducerAlreadyRegistered);
            }
            let closed = st.closed || st.doomed;
            if !closed {
                st.producer = Some(producer.clone());
                st.streaming = streaming;
                st.producer_paused = false;
            }
            closed
        };
        if closed {
            producer.stop_producing();
        } else if !streaming {
            producer.resume_producing();
        }
        Ok(())
    }

    /// Unregisters the producer; a pending `lose_connection` can then complete.
    pub fn unregister_producer(&self) {
        let c = &*self.conn;
        let Some(r) = c.reactor() else { return };
        let finish = {
            let mut st = c.st.borrow_mut();
            st.producer = None;
            st.producer_paused = false;
            st.disconnecting && !st.closed
        };
        if finish {
            c.set_writing(&r, true);
        }
    }

    /// Sets the write buffer's high- and low-water marks (defaults 64 KiB and 16 KiB).
    pub fn set_write_buffer_limits(&self, high: usize, low: usize) {
        let mut st = self.conn.st.borrow_mut();
        st.high = high;
        st.low = low.min(high);
    }

    /// Bytes waiting in the write buffer.
    pub fn buffered(&self) -> usize {
        self.conn.st.borrow().buf.len()
    }

    /// True until the connection closes (or is being aborted).
    pub fn connected(&self) -> bool {
        let st = self.conn.st.borrow();
        !st.closed && !st.doomed
    }

    /// True once `lose_connection` was called.
    pub fn disconnecting(&self) -> bool {
        self.conn.st.borrow().disconnecting
    }

    /// The remote address (Twisted's `getPeer`).
    pub fn peer(&self) -> SocketAddr {
        self.conn.peer
    }

    /// The local address (Twisted's `getHost`).
    pub fn host(&self) -> SocketAddr {
        self.conn.host
    }

    /// The reactor this connection runs on (`None` once it is dropped).
    pub fn reactor(&self) -> Option<Reactor> {
        self.conn.reactor()
    }

    fn sock_opt<T>(&self, f: impl FnOnce(RawFd) -> io::Result<T>) -> io::Result<T> {
        if self.conn.sock.borrow().is_none() {
            return Err(io::Error::from(io::ErrorKind::NotConnected));
        }
        f(self.conn.fd)
    }

    /// Sets TCP_NODELAY (disables Nagle's algorithm).
    ///
    /// # Errors
    /// The system error, or `NotConnected` after close.
    pub fn set_tcp_nodelay(&self, on: bool) -> io::Result<()> {
        self.sock_opt(|fd| sys::set_nodelay(fd, on))
    }

    /// TCP_NODELAY's value.
    ///
    /// # Errors
    /// As [`set_tcp_nodelay`](Transport::set_tcp_nodelay).
    pub fn tcp_nodelay(&self) -> io::Result<bool> {
        self.sock_opt(sys::nodelay)
    }

    /// Sets SO_KEEPALIVE.
    ///
    /// # Errors
    /// As [`set_tcp_nodelay`](Transport::set_tcp_nodelay).
    pub fn set_tcp_keepalive(&self, on: bool) -> io::Result<()> {
        self.sock_opt(|fd| sys::set_keepalive(fd, on))
    }

    /// SO_KEEPALIVE's value.
    ///
    /// # Errors
    /// As [`set_tcp_nodelay`](Transport::set_tcp_nodelay).
    pub fn tcp_keepalive(&self) -> io::Result<bool> {
        self.sock_opt(sys::keepalive)
    }

    /// Sets the kernel's receive buffer size (SO_RCVBUF).
    ///
    /// # Errors
    /// As [`set_tcp_nodelay`](Transport::set_tcp_nodelay).
    pub fn set_receive_buffer_size(&self, bytes: usize) -> io::Result<()> {
        self.sock_opt(|fd| sys::set_recv_buffer(fd, bytes))
    }

    /// Sets the kernel's send buffer size (SO_SNDBUF).
    ///
    /// # Errors
    /// As [`set_tcp_nodelay`](Transport::set_tcp_nodelay).
    pub fn set_send_buffer_size(&self, bytes: usize) -> io::Result<()> {
        self.sock_opt(|fd| sys::set_send_buffer(fd, bytes))
    }
}
