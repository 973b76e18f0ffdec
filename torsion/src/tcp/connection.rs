//! A connected stream socket: its state machine and its reactor registration.
//!
//! One implementation for every kind of stream socket: [`StreamConnection`] is generic over a
//! [`Kind`] (TCP here, Unix sockets in [`crate::unix`]), which says how a read is done (a
//! Unix socket's bytes may carry descriptors) and which extra options the transport offers.
//! Each kind gets its own monomorphised copy: nothing is dispatched at run time.
//!
//! The [`TransportImpl`](crate::TransportImpl) side (what protocols call) is in `transport.rs`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::Duration;

use super::buffer::{Flush, WriteBuffer};
use super::completion::Uring;
use crate::error::{panic_message, Panicked, TimedOut};
use crate::flow::ProducerSlot;
use crate::interfaces::{
    Address, Context, HalfClose, Protocol, TcpOptions, Transport, UnixTransport,
};
use crate::poller::{Event, Interest, Trigger};
use crate::reactor::{Inner, Readiness, Registration};
use crate::{sys, DelayedCall, FileDescriptor, Reactor, Reason};

/// Reads per readiness event at most (see `do_read_event`).
const READS_PER_EVENT: usize = 4;

/// Size of the read buffer that connections read into. One per thread (a reactor is one
/// thread), not per connection: 256 KiB lets one `recv` drain a busy stream's socket buffer
/// (streaming through one connection costs about 1.4x less CPU per byte than with 64 KiB; see
/// bench/RESULTS.md).
pub(crate) const READ_BUFFER_SIZE: usize = 256 * 1024;

thread_local! {
    /// The shared read buffer (taken out while in use: a nested read gets a fresh one).
    static READ_BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// Its size: [`READ_BUFFER_SIZE`] (smaller in some unit tests).
    static READ_BUF_SIZE: Cell<usize> = const { Cell::new(READ_BUFFER_SIZE) };
}

/// Runs `f` with this thread's read buffer, so that reads allocate nothing.
fn with_read_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = READ_BUF.with(Cell::take);
    buf.resize(READ_BUF_SIZE.with(Cell::get), 0);
    let r = f(&mut buf);
    READ_BUF.with(|b| b.set(buf));
    r
}

/// Shrinks this thread's read buffer, so that a test can exhaust a connection's per-event
/// read budget with little data.
#[cfg(test)]
pub(crate) fn set_read_buffer_size(size: usize) {
    READ_BUF_SIZE.with(|s| s.set(size.max(1)));
}

/// How long a connection whose peer half-closed goes on sending what was already written
/// before it closes, by default (see
/// [`ListenOptions::close_flush_timeout`](super::ListenOptions::close_flush_timeout)).
pub const DEFAULT_CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Descriptors one message may carry by default (see [`FdLimits::per_message`]).
pub(crate) const DEFAULT_FDS_PER_MESSAGE: usize = 32;

/// Descriptors that may wait in a write buffer by default (see [`FdLimits::queued`]).
pub(crate) const DEFAULT_MAX_QUEUED_FDS: usize = 256;

/// Descriptor passing limits of a connection (Unix sockets; unused by TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FdLimits {
    /// At most this many descriptors per message, sent or received.
    pub(crate) per_message: usize,
    /// At most this many descriptors waiting in the write buffer.
    pub(crate) queued: usize,
}

impl Default for FdLimits {
    fn default() -> Self {
        FdLimits {
            per_message: DEFAULT_FDS_PER_MESSAGE,
            queued: DEFAULT_MAX_QUEUED_FDS,
        }
    }
}

/// Per-connection limits, set for the connections of a listening port by
/// [`ListenOptions`](super::ListenOptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// When the peer half-closes and the protocol lets the connection close
    /// ([`HalfClose::Close`]), what was already written is still sent, for at most this long;
    /// then the connection is reset with [`Reason::TimedOut`].
    pub(crate) close_flush_timeout: Duration,
    /// A write that leaves more than this in the write buffer resets the connection with
    /// [`Reason::WriteBufferFull`] (`None`: no limit).
    pub(crate) max_write_buffer: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            close_flush_timeout: DEFAULT_CLOSE_FLUSH_TIMEOUT,
            max_write_buffer: None,
        }
    }
}

/// What one read got: bytes, and the descriptors that came with them.
pub(crate) struct Read<R> {
    /// Bytes read (0: the end of the stream).
    pub(crate) len: usize,
    /// Descriptors passed with the bytes.
    pub(crate) fds: R,
    /// A short read may not have drained the socket (a Unix socket stops a read after bytes
    /// that carried descriptors).
    pub(crate) maybe_more: bool,
}

/// One kind of stream socket. Everything else about a connection is shared.
pub(crate) trait Kind: Sized + 'static {
    /// The descriptors one read may bring (none for TCP).
    type Fds: IntoIterator<Item = OwnedFd>;

    /// One read into `buf`.
    fn recv(c: &StreamConnection<Self>, buf: &mut [u8]) -> io::Result<Read<Self::Fds>>;

    /// The socket's local address (when the caller of `establish` did not know it).
    fn local_addr(fd: RawFd) -> Option<Address>;

    /// See [`Transport::tcp`].
    fn tcp(c: &StreamConnection<Self>) -> Option<&dyn TcpOptions> {
        let _ = c;
        None
    }

    /// See [`Transport::unix`].
    fn unix(c: &StreamConnection<Self>) -> Option<&dyn UnixTransport> {
        let _ = c;
        None
    }

    /// Whether connections of this kind run on io_uring completions when the reactor has a
    /// completion port (a plain byte stream: no descriptors ride with the bytes).
    const COMPLETIONS: bool = false;
}

/// TCP connections.
pub(crate) struct Tcp;

impl Kind for Tcp {
    type Fds = std::iter::Empty<OwnedFd>;

    const COMPLETIONS: bool = true;

    #[inline]
    fn recv(c: &StreamConnection<Self>, buf: &mut [u8]) -> io::Result<Read<Self::Fds>> {
        sys::recv(c.fd, buf).map(|len| Read {
            len,
            fds: std::iter::empty(),
            maybe_more: false,
        })
    }

    fn local_addr(fd: RawFd) -> Option<Address> {
        sys::local_addr(fd).ok().map(Address::Tcp)
    }

    fn tcp(c: &StreamConnection<Self>) -> Option<&dyn TcpOptions> {
        Some(c)
    }
}

/// Descriptors to send with the byte `at` bytes ahead in the write buffer.
pub(super) struct FdMark {
    pub(super) at: usize,
    pub(super) fds: Vec<OwnedFd>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriteShut {
    Open,
    Requested,
    Done,
}

/// Mutable connection state. Never borrowed while user code runs.
pub(super) struct State {
    pub(super) buf: WriteBuffer,
    /// What the connection wants from its registration (the reactor's copy follows it).
    pub(super) reading: bool,
    pub(super) writing: bool,
    /// The peer sent FIN and the protocol chose to keep writing.
    pub(super) read_closed: bool,
    /// A hangup or the peer's FIN was reported: a short read no longer proves the socket
    /// drained (the end of the stream may be next), so reads go on until it is seen.
    peer_closed: bool,
    /// Urgent data was reported: a read stops at the urgent mark with data still queued, so
    /// reads go on until one would block.
    urgent: bool,
    /// `lose_connection` was called: close once the buffer is flushed and the producer gone.
    pub(super) disconnecting: bool,
    /// The peer half-closed and the protocol chose to close: close once the buffer is flushed,
    /// producer or not (bounded by `Limits::close_flush_timeout`).
    pub(super) closing_after_eof: bool,
    pub(super) write_shut: WriteShut,
    /// The connection will close on the next iteration (abort, or a failed write): every
    /// operation but the close itself is ignored.
    pub(super) doomed: bool,
    /// `connection_lost` has been delivered (or is being delivered).
    pub(super) closed: bool,
    /// The registered producer and the water marks.
    pub(super) flow: ProducerSlot,
    /// The limit on flushing after the peer's FIN (see `Limits::close_flush_timeout`).
    flush_timer: Option<DelayedCall>,
    /// Run after the protocol's `connection_lost` (the connector's bookkeeping).
    pub(super) on_lost: Option<OnLost>,
    /// Descriptors waiting to be sent with bytes of `buf`, in stream order (Unix sockets;
    /// always empty for TCP).
    pub(super) marks: VecDeque<FdMark>,
}

impl State {
    /// Closed, or closing at once: nothing but the close happens any more.
    pub(super) fn gone(&self) -> bool {
        self.closed || self.doomed
    }

    /// Discards the write buffer and the descriptors waiting in it (closing them).
    pub(super) fn discard_output(&mut self) {
        self.buf.clear();
        self.marks.clear();
    }

    /// Descriptors waiting to be sent.
    pub(super) fn queued_fds(&self) -> usize {
        self.marks.iter().map(|m| m.fds.len()).sum()
    }

    /// Sends as much of the buffer as the socket takes, descriptors with their bytes.
    fn flush(&mut self, fd: RawFd) -> io::Result<Flush> {
        if self.marks.is_empty() {
            return self.buf.flush(fd);
        }
        while !self.buf.is_empty() {
            let Some(front) = self.marks.front() else {
                return self.buf.flush(fd);
            };
            let sent = if front.at == 0 {
                // These bytes carry descriptors: one message, up to the next mark.
                let limit = self.marks.get(1).map_or(usize::MAX, |m| m.at);
                let fds = &front.fds;
                self.buf
                    .send_some(limit, |bufs| sys::send_with_fds(fd, bufs, fds))
            } else {
                let at = front.at;
                self.buf.send_some(at, |bufs| sys::send_vectored(fd, bufs))
            };
            match sent {
                // A stream socket sends at least one byte or fails; never spin on zero.
                Ok(0) => return Ok(Flush::WouldBlock),
                Ok(n) => {
                    if self.marks.front().is_some_and(|m| m.at == 0) {
                        // Sent: the kernel holds the descriptors now; close ours.
                        drop(self.marks.pop_front());
                    }
                    for m in &mut self.marks {
                        m.at -= n.min(m.at);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Flush::Empty)
    }
}

pub(crate) type OnLost = Box<dyn FnOnce(&Reactor, Reason)>;

/// What a new connection is made with, besides its socket.
pub(crate) struct Setup {
    pub(crate) protocol: Box<dyn Protocol>,
    /// Shared by the connections of one listener.
    pub(crate) limits: Rc<Limits>,
    /// Run after the protocol's `connection_lost` (the connector's bookkeeping).
    pub(crate) on_lost: Option<OnLost>,
}

/// A TCP connection.
pub(crate) type Connection = StreamConnection<Tcp>;

pub(crate) struct StreamConnection<K: Kind> {
    pub(super) me: Weak<StreamConnection<K>>,
    pub(crate) fd: RawFd,
    pub(super) sock: RefCell<Option<OwnedFd>>,
    reactor: Weak<Inner>,
    /// From `establish` until the close.
    reg: Cell<Option<Registration>>,
    protocol: RefCell<Option<Box<dyn Protocol>>>,
    /// Its I/O on io_uring completions instead of readiness (see `completion.rs`).
    pub(super) uring: Option<Uring>,
    pub(super) st: RefCell<State>,
    pub(crate) peer: Address,
    pub(super) host: Address,
    pub(crate) limits: Rc<Limits>,
    pub(crate) fd_limits: FdLimits,
    kind: PhantomData<K>,
}

impl Connection {
    /// Wraps a connected TCP socket (see [`StreamConnection::start`]).
    pub(crate) fn establish(
        reactor: &Reactor,
        sock: OwnedFd,
        peer: SocketAddr,
        host: Option<SocketAddr>,
        setup: Setup,
        on_ready: impl FnOnce(&Transport),
    ) -> Option<Transport> {
        let host = host.map(Address::Tcp);
        let peer = Address::Tcp(peer);
        let fd_limits = FdLimits::default();
        Self::start(reactor, sock, peer, host, setup, fd_limits, on_ready)
    }
}

impl<K: Kind> StreamConnection<K> {
    /// Wraps a connected socket, registers it (edge-triggered where the backend can), starts
    /// reading and calls `connection_made`. `host` is the socket's local address when the
    /// caller knows it (else it is asked for). `None` when the reactor refused it (the socket
    /// is then closed).
    pub(crate) fn start(
        reactor: &Reactor,
        sock: OwnedFd,
        peer: Address,
        host: Option<Address>,
        setup: Setup,
        fd_limits: FdLimits,
        on_ready: impl FnOnce(&Transport),
    ) -> Option<Transport> {
        let Setup {
            protocol,
            limits,
            on_lost,
        } = setup;
        let fd = sock.as_raw_fd();
        let host = host.unwrap_or_else(|| K::local_addr(fd).unwrap_or_else(|| peer.clone()));
        let port = if K::COMPLETIONS {
            reactor.port().cloned()
        } else {
            None
        };
        let conn = Rc::new_cyclic(|me: &Weak<Self>| StreamConnection {
            me: me.clone(),
            fd,
            sock: RefCell::new(Some(sock)),
            reactor: Rc::downgrade(&reactor.inner),
            reg: Cell::new(None),
            protocol: RefCell::new(Some(protocol)),
            uring: port.map(Uring::new),
            st: RefCell::new(State {
                buf: WriteBuffer::default(),
                reading: true,
                writing: false,
                read_closed: false,
                peer_closed: false,
                urgent: false,
                disconnecting: false,
                closing_after_eof: false,
                write_shut: WriteShut::Open,
                doomed: false,
                closed: false,
                flow: ProducerSlot::default(),
                flush_timer: None,
                on_lost,
                marks: VecDeque::new(),
            }),
            peer,
            host,
            limits,
            fd_limits,
            kind: PhantomData,
        });
        let registered = reactor
            .register(conn.clone(), Trigger::Edge)
            .and_then(|reg| {
                conn.reg.set(Some(reg));
                if conn.uring.is_some() {
                    // Registered without interest (the reactor's shutdown still finds it);
                    // reads are a multishot receive on the ring.
                    return conn.arm_recv().map_err(crate::Error::from);
                }
                reactor.set_interest(&reg, Interest::READ)
            });
        if let Err(e) = registered {
            tracing::warn!(peer = %conn.peer, error = %e, "cannot watch a new connection; closing it");
            if let Some(reg) = conn.reg.take() {
                reactor.deregister(&reg);
            }
            conn.protocol.borrow_mut().take();
            return None;
        }
        let t = conn.transport();
        on_ready(&t);
        conn.with_protocol(reactor, &t, |p, cx| p.connection_made(cx));
        Some(t)
    }

    pub(super) fn reactor(&self) -> Option<Reactor> {
        self.reactor.upgrade().map(Reactor::from_inner)
    }

    pub(super) fn rc(&self) -> Rc<StreamConnection<K>> {
        self.me
            .upgrade()
            .expect("a connection is alive while its methods run")
    }

    /// The handle protocols get.
    pub(super) fn transport(&self) -> Transport {
        Transport::new(self.rc())
    }

    /// Calls into the protocol. Protocol callbacks are never nested for one connection (every
    /// closing path is deferred, and the loop cannot be re-entered from a callback), so the
    /// borrow cannot conflict.
    pub(super) fn with_protocol<R: Default>(
        &self,
        r: &Reactor,
        t: &Transport,
        f: impl FnOnce(&mut dyn Protocol, &mut Context<'_>) -> R,
    ) -> R {
        let Ok(mut slot) = self.protocol.try_borrow_mut() else {
            debug_assert!(false, "nested protocol callback");
            tracing::error!(peer = %self.peer, "nested protocol callback skipped");
            return R::default();
        };
        let Some(p) = slot.as_mut() else {
            return R::default();
        };
        let mut cx = Context::new(r, t);
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut **p, &mut cx)));
        drop(slot);
        match result {
            Ok(v) => v,
            Err(payload) => {
                // A panicking protocol loses its connection, and only its connection: the
                // listener or connector that called connection_made carries on.
                let msg = panic_message(&*payload);
                tracing::error!(peer = %self.peer, message = %msg, "a protocol callback panicked; closing its connection");
                self.doom(r, Reason::Panicked(Panicked(msg)), false);
                R::default()
            }
        }
    }

    /// Sets what the registration waits for (`None`: unchanged).
    pub(super) fn watch(&self, r: &Reactor, read: Option<bool>, write: Option<bool>) {
        let (interest, before) = {
            let mut st = self.st.borrow_mut();
            let before = (st.reading, st.writing);
            st.reading = read.unwrap_or(st.reading);
            st.writing = write.unwrap_or(st.writing);
            if (st.reading, st.writing) == before {
                return;
            }
            let interest = Interest {
                read: st.reading,
                write: st.writing,
            };
            (interest, before)
        };
        if self.uring.is_some() {
            return self.watch_completions(r, before, (interest.read, interest.write));
        }
        let Some(reg) = self.reg.get() else { return };
        if let Err(e) = r.set_interest(&reg, interest) {
            tracing::warn!(peer = %self.peer, error = %e, "cannot change what a connection waits for");
        }
    }

    /// Closes on the next iteration with `reason` (never re-entrantly).
    pub(super) fn doom(&self, r: &Reactor, reason: Reason, reset: bool) {
        {
            let mut st = self.st.borrow_mut();
            if st.gone() {
                return;
            }
            st.doomed = true;
            st.discard_output();
        }
        self.watch(r, Some(false), Some(false));
        if reset {
            let _ = sys::set_linger_zero(self.fd);
        }
        let me = self.rc();
        r.call_soon(move |r| me.close_now(r, reason));
    }

    /// Deregisters, closes the socket and delivers `connection_lost` once.
    pub(super) fn close_now(&self, r: &Reactor, reason: Reason) {
        if self.uring.is_some() {
            self.closing_completions(&reason);
        }
        let producer = {
            let mut st = self.st.borrow_mut();
            if st.closed {
                return;
            }
            st.closed = true;
            st.reading = false;
            st.writing = false;
            st.discard_output();
            st.flow.take()
        };
        let timer = self.st.borrow_mut().flush_timer.take();
        if let Some(t) = timer {
            let _ = t.cancel();
        }
        // Deregister before close.
        if let Some(reg) = self.reg.take() {
            r.deregister(&reg);
        }
        if let Reason::Panicked(_) = reason {
            // The reply may be cut anywhere: reset, so that the peer cannot take what it got
            // for a complete reply ending in a clean FIN.
            let _ = sys::set_linger_zero(self.fd);
        }
        drop(self.sock.borrow_mut().take());
        if let Some(u) = &self.uring {
            u.submit_cancellations();
        }
        // Each piece of user code on its own: a panic in one must not skip the others (the
        // connector's bookkeeping in `on_lost` above all).
        let guard = |what: &str, f: &mut dyn FnMut()| {
            if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                let msg = panic_message(&*payload);
                tracing::error!(peer = %self.peer, message = %msg, "{what} panicked");
            }
        };
        if let Some(p) = producer {
            guard("stop_producing", &mut || p.stop_producing());
        }
        // Taken out: the protocol (and the transports it holds) is dropped after this call,
        // which breaks the protocol -> transport -> connection cycle.
        let protocol = self.protocol.borrow_mut().take();
        if let Some(mut p) = protocol {
            let t = self.transport();
            guard("connection_lost", &mut || {
                p.connection_lost(&mut Context::new(r, &t), reason.clone())
            });
        }
        let on_lost = self.st.borrow_mut().on_lost.take();
        if let Some(f) = on_lost {
            let mut f = Some(f);
            guard("client_connection_lost", &mut || {
                if let Some(f) = f.take() {
                    f(r, reason.clone())
                }
            });
        }
    }

    /// One read into the thread's read buffer, delivered to the protocol: the descriptors
    /// that came with the bytes first, then the bytes.
    fn read_once(&self, r: &Reactor, t: &Transport) -> Result<Got, Reason> {
        let got = with_read_buffer(|buf| match K::recv(self, buf) {
            Ok(Read {
                len: n,
                fds,
                maybe_more,
            }) => {
                let mut passed = false;
                for fd in fds {
                    passed = true;
                    if self.st.borrow().gone() {
                        break; // the rest are closed as the iterator drops
                    }
                    self.with_protocol(r, t, |p, cx| p.file_descriptor_received(cx, fd));
                }
                if passed && self.st.borrow().gone() {
                    return Ok(Got::WouldBlock); // closing: the bytes are not delivered
                }
                if n == 0 {
                    return Ok(Got::Eof);
                }
                self.with_protocol(r, t, |p, cx| p.data_received(cx, &buf[..n]));
                Ok(if n == buf.len() || maybe_more {
                    Got::Full
                } else {
                    Got::Short
                })
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Got::WouldBlock),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Got::Full),
            Err(e) => Err(Reason::lost(e)),
        })?;
        if let Got::Eof = got {
            self.read_eof(r, t)?;
        }
        Ok(got)
    }

    pub(super) fn read_eof(&self, r: &Reactor, t: &Transport) -> Result<(), Reason> {
        let choice = self.with_protocol(r, t, |p, cx| p.read_connection_lost(cx));
        if self.st.borrow().gone() {
            // It panicked (or aborted): the close already queued says why.
            return Ok(());
        }
        if choice == HalfClose::Close {
            return self.close_after_eof(r);
        }
        let write_done = {
            let mut st = self.st.borrow_mut();
            st.read_closed = true;
            st.write_shut == WriteShut::Done
        };
        if write_done {
            return Err(Reason::ConnectionDone);
        }
        self.watch(r, Some(false), None);
        Ok(())
    }

    /// The peer half-closed and the protocol lets the connection close: what was already
    /// written is sent first (a reply is never cut behind a clean close), for at most
    /// `close_flush_timeout`. (Twisted drops the buffer here.)
    fn close_after_eof(&self, r: &Reactor) -> Result<(), Reason> {
        {
            let mut st = self.st.borrow_mut();
            if st.buf.is_empty() || st.gone() {
                return Err(Reason::ConnectionDone);
            }
            st.closing_after_eof = true;
            st.disconnecting = true;
        }
        self.watch(r, Some(false), Some(true));
        let after = self.limits.close_flush_timeout;
        let me = self.me.clone();
        let timer = r.call_later(after, move |r| {
            let Some(c) = me.upgrade() else { return };
            c.st.borrow_mut().flush_timer.take();
            tracing::warn!(peer = %c.peer, ?after, "the peer half-closed and did not read the rest of the reply in time; resetting");
            c.doom(r, Reason::TimedOut(TimedOut { after }), true);
        });
        self.st.borrow_mut().flush_timer = Some(timer);
        Ok(())
    }

    /// The socket is writable: flush, then ask producers for more, then finish a pending close
    /// or half-close.
    fn write_ready(&self, r: &Reactor) -> Result<(), Reason> {
        let flushed = {
            let mut st = self.st.borrow_mut();
            if st.gone() {
                return Ok(());
            }
            st.flush(self.fd).map_err(Reason::lost)?
        };
        if let Flush::WouldBlock = flushed {
            self.maybe_resume_streaming();
            return Ok(());
        }
        self.flushed(r)
    }

    /// Everything written was sent: ask producers for more, then finish a pending close or
    /// half-close.
    pub(super) fn flushed(&self, r: &Reactor) -> Result<(), Reason> {
        // Empty: stop watching for writability first (a write re-registers), then ask a pull
        // producer for more, resume a streaming one.
        self.watch(r, None, Some(false));
        let pull = {
            let st = self.st.borrow();
            st.flow.pull()
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
                empty && st.disconnecting && (!st.flow.is_registered() || st.closing_after_eof),
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
            let t = self.transport();
            self.with_protocol(r, &t, |p, cx| p.write_connection_lost(cx));
            if self.st.borrow().gone() {
                return Ok(()); // as in `read_eof`
            }
            if read_closed {
                return Err(Reason::ConnectionDone);
            }
        }
        if !empty {
            self.watch(r, None, Some(true));
        }
        Ok(())
    }

    pub(super) fn maybe_resume_streaming(&self) {
        let p = {
            let mut st = self.st.borrow_mut();
            let buffered = st.buf.len();
            st.flow.resume_if_under(buffered)
        };
        if let Some(p) = p {
            p.resume_producing();
        }
    }
}

/// What one `recv` got.
enum Got {
    /// The buffer came back full, or the call was interrupted: more may be waiting.
    Full,
    /// Fewer bytes than the buffer: a TCP socket is drained, unless the peer's FIN or urgent
    /// data was reported.
    Short,
    /// Nothing to read.
    WouldBlock,
    /// The end of the stream (handled: the protocol chose to keep writing).
    Eof,
}

impl<K: Kind> FileDescriptor for StreamConnection<K> {
    fn fileno(&self) -> RawFd {
        self.fd
    }

    fn do_read_event(&self, r: &Reactor, ev: &Event) -> Result<Readiness, Reason> {
        {
            let mut st = self.st.borrow_mut();
            if st.closed {
                return Ok(Readiness::Drained);
            }
            st.peer_closed |= ev.hangup || ev.read_closed;
            st.urgent |= ev.priority;
        }
        let t = self.transport();
        // A read that fills the buffer is followed by another (a busy stream then costs no
        // extra poll per buffer), as long as the protocol still wants data; a short read means
        // the socket is drained, unless a hangup or urgent data was reported. Bounded, so that
        // one stream cannot starve the others: when the budget runs out with data still
        // waiting, the reactor reads it again on the next iteration (an edge-triggered
        // registration gets no second report).
        for _ in 0..READS_PER_EVENT {
            let got = self.read_once(r, &t)?;
            let mut st = self.st.borrow_mut();
            let more = match got {
                Got::Full => true,
                Got::Short => st.peer_closed || st.urgent,
                Got::WouldBlock => {
                    st.urgent = false;
                    false
                }
                Got::Eof => false,
            };
            if !more || !st.reading || st.gone() {
                return Ok(Readiness::Drained);
            }
        }
        Ok(Readiness::MoreWaiting)
    }

    fn do_write(&self, r: &Reactor) -> Result<(), Reason> {
        self.write_ready(r)
    }

    fn connection_lost(&self, r: &Reactor, reason: Reason) {
        self.close_now(r, reason);
    }
}
