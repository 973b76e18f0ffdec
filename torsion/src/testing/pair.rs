//! An in-memory connected pair driven by a pump: [`IoPump`] and [`connected_pair`] (Twisted's
//! `iosim.connectedServerAndClient` and `IOPump`).
//!
//! Two protocols, a server and a client, each on a transport that behaves as a TCP connection's
//! does (write buffer, high- and low-water marks, push and pull producers, pausing reads,
//! half-close, abort, `connection_lost` exactly once), talk through memory. Nothing moves until
//! the test calls [`IoPump::pump`] (one round each way) or [`IoPump::flush`] (until quiet):
//! every protocol callback is delivered from there, never from inside a transport method a
//! protocol called, so no callback ever nests in another.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

use crate::error::{panic_message, Panicked};
use crate::flow::ProducerSlot;
use crate::interfaces::{
    Address, Context, HalfClose, Producer, Protocol, ProtocolFactory, Transport, TransportImpl,
};
use crate::{Error, Reactor, Reason};

/// Rounds [`IoPump::flush`] and [`flush_all`] run at most before deciding that the
/// protocols never go quiet.
pub const FLUSH_ROUNDS: usize = 100_000;

/// A buffer that drained is given back when it grew past this.
const KEEP_CAPACITY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteShut {
    Open,
    Requested,
    Done,
}

/// How an end closed, as its peer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// FIN: the peer reads the end of the stream after the bytes still in flight.
    Clean,
    /// RST: the peer's connection is lost.
    Reset,
}

/// One end's state. Never borrowed while user code runs.
struct State {
    /// Written by this end's protocol, not yet received by the peer's.
    buf: VecDeque<u8>,
    /// Reading (not paused, not closing, not at the end of the stream).
    reading: bool,
    /// The peer's end of stream was delivered and the protocol chose to keep writing.
    read_closed: bool,
    /// `lose_connection` was called.
    disconnecting: bool,
    /// Bytes arrived after `lose_connection` and were thrown away unread: the close resets the
    /// peer, as a TCP close with unread data does.
    discarded: bool,
    write_shut: WriteShut,
    /// Closes on the next round with this reason (abort, panic).
    doomed: Option<(Reason, Ended)>,
    /// `connection_lost` was delivered (or is being delivered).
    ended: Option<Ended>,
    /// The registered producer and the water marks.
    flow: ProducerSlot,
    /// TCP's "watching for writability": the pump runs this end's write step (ask a pull
    /// producer, resume a streaming one, finish a close or a half-close).
    want_write: bool,
}

impl State {
    /// Closed, or closing at the next round: nothing but the close happens any more.
    fn gone(&self) -> bool {
        self.ended.is_some() || self.doomed.is_some()
    }
}

/// One side of the pair: the [`TransportImpl`] its protocol writes to.
struct End {
    /// "server" or "client", for logs.
    role: &'static str,
    host: Address,
    peer: Address,
    st: RefCell<State>,
    protocol: RefCell<Option<Box<dyn Protocol>>>,
    /// Bytes of this end's protocol received by the peer's.
    delivered: Cell<u64>,
}

impl End {
    fn new(role: &'static str, host: Address, peer: Address, p: Box<dyn Protocol>) -> Rc<End> {
        Rc::new(End {
            role,
            host,
            peer,
            st: RefCell::new(State {
                buf: VecDeque::new(),
                reading: true,
                read_closed: false,
                disconnecting: false,
                discarded: false,
                write_shut: WriteShut::Open,
                doomed: None,
                ended: None,
                flow: ProducerSlot::default(),
                want_write: false,
            }),
            protocol: RefCell::new(Some(p)),
            delivered: Cell::new(0),
        })
    }

    /// Closes on the next round with `reason`; the buffer is dropped now.
    fn doom(&self, reason: Reason) {
        let mut st = self.st.borrow_mut();
        if st.gone() {
            return;
        }
        st.doomed = Some((reason, Ended::Reset));
        st.buf = VecDeque::new();
        st.reading = false;
        st.want_write = false;
    }
}

impl TransportImpl for End {
    fn write_sequence(&self, data: &[&[u8]]) {
        let pause = {
            let mut st = self.st.borrow_mut();
            // As over TCP: writes are accepted until the write side is actually shut.
            if st.gone() || st.write_shut == WriteShut::Done {
                return;
            }
            for d in data {
                st.buf.extend(d.iter());
            }
            // A pull producer is asked for more after every write (once the buffer drained).
            if !st.buf.is_empty() || st.flow.wants_pull() {
                st.want_write = true;
            }
            let buffered = st.buf.len();
            st.flow.pause_if_over(buffered)
        };
        if let Some(p) = pause {
            p.pause_producing();
        }
    }

    fn lose_connection(&self) {
        let mut st = self.st.borrow_mut();
        if st.gone() || st.disconnecting {
            return;
        }
        st.disconnecting = true;
        st.reading = false;
        st.want_write = true;
    }

    fn abort_connection(&self) {
        self.doom(Reason::ConnectionAborted);
    }

    fn lose_write_connection(&self) {
        let mut st = self.st.borrow_mut();
        if st.gone() || st.write_shut != WriteShut::Open {
            return;
        }
        st.write_shut = WriteShut::Requested;
        st.want_write = true;
    }

    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool) -> Result<(), Error> {
        let what = {
            let mut st = self.st.borrow_mut();
            let (closed, buffered) = (st.gone(), st.buf.len());
            st.flow
                .register(producer.clone(), streaming, closed, buffered)?
        };
        crate::flow::tell(&producer, what);
        Ok(())
    }

    fn unregister_producer(&self) {
        let old = {
            let mut st = self.st.borrow_mut();
            if st.disconnecting && st.ended.is_none() {
                st.want_write = true;
            }
            st.flow.take()
        };
        drop(old);
    }

    fn pause_producing(&self) {
        self.st.borrow_mut().reading = false;
    }

    fn resume_producing(&self) {
        let mut st = self.st.borrow_mut();
        if !(st.gone() || st.disconnecting || st.read_closed) {
            st.reading = true;
        }
    }

    fn peer(&self) -> Address {
        self.peer.clone()
    }

    fn host(&self) -> Address {
        self.host.clone()
    }

    fn buffered(&self) -> usize {
        self.st.borrow().buf.len()
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.st.borrow_mut().flow.set_limits(high, low);
    }

    fn connected(&self) -> bool {
        !self.st.borrow().gone()
    }

    fn disconnecting(&self) -> bool {
        self.st.borrow().disconnecting
    }
}

/// One end and the handle its protocol sees.
struct Side {
    end: Rc<End>,
    t: Transport,
}

impl Side {
    fn new(end: Rc<End>) -> Side {
        let t = Transport::new(end.clone());
        Side { end, t }
    }
}

/// What the peer's state means for an end.
enum Consequence {
    Reset,
    EndOfStream,
}

/// A server protocol and a client protocol connected through memory, and the pump that moves
/// their bytes (Twisted's `iosim.IOPump`).
///
/// # The model
/// Each end's write buffer holds the bytes its protocol wrote that the peer's protocol has not
/// received yet; there is no kernel buffer in between. So a side that stops reading
/// ([`Transport::pause_producing`]) makes the other side's buffer grow, and the other side's
/// streaming producer is paused above its high-water mark: backpressure is end to end and
/// exact, with no socket buffer sizes to guess. The rest follows TCP:
/// * `lose_connection` stops reading at once; the connection closes (`ConnectionDone`) once the
///   buffer is delivered and the producer unregistered. The peer then reads the end of the
///   stream (`read_connection_lost`). Bytes the peer sends meanwhile are thrown away unread,
///   and the close then resets the peer (`ConnectionLost`), as a TCP close with unread data
///   does.
/// * `lose_write_connection` shuts the sending side once the buffer is delivered
///   (`write_connection_lost`); the peer reads the end of the stream and may keep writing
///   ([`HalfClose::KeepWriting`]).
/// * `abort_connection` drops the buffer; the protocol gets `ConnectionAborted` on the next
///   round and its peer `ConnectionLost` (a reset). A panic in a protocol callback is logged and
///   aborts that connection the same way, with [`Reason::Panicked`].
/// * A side that closes while the other, not reading, still has bytes on their way to it
///   resets the other (`ConnectionLost`), as a TCP close with unread data does; so does
///   writing to a peer that closed after reading its end of stream. A side that reads gets the
///   end of the stream first, even with a reply of its own still buffered.
/// * A side that closes because the peer's end of stream came
///   ([`HalfClose::Close`]) still delivers what it had buffered: over TCP those bytes were
///   already in the kernel.
/// * A streaming producer is paused when its transport's buffer passes the high-water mark
///   (64 KiB by default, see [`Transport::set_write_buffer_limits`]) and resumed once it is
///   delivered down to the low-water mark (16 KiB); a pull producer is asked for more once at
///   registration and each time the buffer has been delivered. A side that does not read
///   gets no end of stream either, until it reads again.
///
/// Where TCP's outcome depends on timing, the pair picks one and always the same: bytes move
/// client to server first in each round, and a producer is paused at exactly its high-water
/// mark (over TCP the socket buffers take a few hundred KiB more first).
///
/// Each round also runs the reactor's ready work (calls queued with
/// [`call_soon`](Reactor::call_soon), delayed calls already due), as Twisted's pump advances
/// its clock by zero; time itself moves only with
/// [`MemoryReactor::advance`](super::MemoryReactor::advance).
///
/// # Examples
/// An echo server and a client that says hello, then hangs up:
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
/// use torsion::testing::{connected_pair, MemoryReactor};
/// use torsion::{Context, Factory, Protocol};
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
///         cx.transport().write(data);
///     }
/// }
///
/// struct Hello(Rc<RefCell<Vec<u8>>>);
/// impl Protocol for Hello {
///     fn connection_made(&mut self, cx: &mut Context<'_>) {
///         cx.transport().write(b"hello");
///     }
///     fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
///         self.0.borrow_mut().extend_from_slice(data);
///         cx.transport().lose_connection();
///     }
/// }
///
/// let mr = MemoryReactor::new()?;
/// let got = Rc::new(RefCell::new(Vec::new()));
/// let g = got.clone();
/// let pump = connected_pair(
///     mr.reactor(),
///     &Factory::for_protocol(|| Echo),
///     &Factory::for_protocol(move || Hello(g.clone())),
/// )
/// .unwrap();
/// pump.flush();
/// assert_eq!(*got.borrow(), b"hello");
/// assert_eq!((pump.client_to_server(), pump.server_to_client()), (5, 5));
/// assert!(pump.closed()); // the client closed, then the server read the end of the stream
/// # Ok::<(), torsion::Error>(())
/// ```
///
/// # Lifetime
/// Both protocols get `connection_made` when the pump is built (server first, as Twisted's
/// `connectedServerAndClient`); after that, nothing happens until [`pump`](Self::pump) or
/// [`flush`](Self::flush). Dropping the pump drops both protocols (and their producers)
/// without calling them, and marks both transports closed.
///
/// Unlike Twisted's pump, [`new`](Self::new) takes any [`Reactor`], not only a memory one: the
/// pump needs the reactor only to hand it to the callbacks and to run its ready work, and a
/// test that mixes a pair with real sockets (or a simulation on a fake poller) can use it too.
pub struct IoPump {
    reactor: Reactor,
    server: Side,
    client: Side,
    chunk: Cell<Option<usize>>,
    pumping: Cell<bool>,
}

impl fmt::Debug for IoPump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoPump")
            .field("server", &self.server.t)
            .field("client", &self.client.t)
            .field("client_to_server", &self.client_to_server())
            .field("server_to_client", &self.server_to_client())
            .field("chunk", &self.chunk.get())
            .finish()
    }
}

/// Clears the "pumping" flag when a round ends, even by a panic.
struct Pumping<'a>(&'a Cell<bool>);

impl Drop for Pumping<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl IoPump {
    /// Connects `server` (at `memory:server`) and `client` (at `memory:client`) and calls
    /// their `connection_made`, server first. Their callbacks get `reactor`.
    ///
    /// # Examples
    /// ```
    /// use torsion::testing::{IoPump, MemoryReactor};
    /// use torsion::{Address, Context, Protocol};
    ///
    /// struct Quiet;
    /// impl Protocol for Quiet {
    ///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    /// }
    ///
    /// let mr = MemoryReactor::new()?;
    /// let pump = IoPump::new(mr.reactor(), Box::new(Quiet), Box::new(Quiet));
    /// assert_eq!(pump.server_transport().peer(), Address::memory("client"));
    /// pump.client_transport().write(b"x");
    /// assert_eq!(pump.client_transport().buffered(), 1); // not sent until pumped
    /// assert!(pump.pump());
    /// assert_eq!(pump.client_to_server(), 1);
    /// assert!(!pump.pump()); // quiet
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn new(reactor: &Reactor, server: Box<dyn Protocol>, client: Box<dyn Protocol>) -> IoPump {
        IoPump::with_addresses(
            reactor,
            server,
            client,
            Address::memory("server"),
            Address::memory("client"),
        )
    }

    /// As [`new`](Self::new), with the server's and the client's addresses (what each side's
    /// [`host`](Transport::host) returns, and the other's [`peer`](Transport::peer)).
    ///
    /// # Examples
    /// A pair that looks like TCP to a protocol that logs its peer (its
    /// [`tcp`](Transport::tcp) options are still `None`: there is no socket):
    /// ```
    /// use torsion::testing::{IoPump, MemoryReactor};
    /// use torsion::{Address, Context, Protocol};
    ///
    /// struct Quiet;
    /// impl Protocol for Quiet {
    ///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    /// }
    ///
    /// let mr = MemoryReactor::new()?;
    /// let server: Address = "10.0.0.1:80".parse::<std::net::SocketAddr>().unwrap().into();
    /// let client: Address = "10.0.0.2:50000".parse::<std::net::SocketAddr>().unwrap().into();
    /// let pump = IoPump::with_addresses(mr.reactor(), Box::new(Quiet), Box::new(Quiet), server.clone(), client);
    /// assert_eq!(pump.client_transport().peer(), server);
    /// assert!(pump.client_transport().tcp().is_none());
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn with_addresses(
        reactor: &Reactor,
        server: Box<dyn Protocol>,
        client: Box<dyn Protocol>,
        server_addr: Address,
        client_addr: Address,
    ) -> IoPump {
        let s = End::new("server", server_addr.clone(), client_addr.clone(), server);
        let c = End::new("client", client_addr, server_addr, client);
        let pump = IoPump {
            reactor: reactor.clone(),
            server: Side::new(s),
            client: Side::new(c),
            chunk: Cell::new(None),
            pumping: Cell::new(false),
        };
        pump.call(&pump.server, |p, cx| p.connection_made(cx));
        pump.call(&pump.client, |p, cx| p.connection_made(cx));
        pump
    }

    /// The server's transport.
    pub fn server_transport(&self) -> &Transport {
        &self.server.t
    }

    /// The client's transport.
    pub fn client_transport(&self) -> &Transport {
        &self.client.t
    }

    /// The reactor the callbacks get.
    pub fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    /// Bytes the client wrote that the server received so far.
    pub fn client_to_server(&self) -> u64 {
        self.client.end.delivered.get()
    }

    /// Bytes the server wrote that the client received so far.
    pub fn server_to_client(&self) -> u64 {
        self.server.end.delivered.get()
    }

    /// Splits delivery: at most `bytes` per `data_received` call and per round in each
    /// direction (`None`, the default: everything buffered at once). A protocol must reassemble
    /// what arrives in pieces; this is how a test shows that it does.
    ///
    /// # Panics
    /// When `bytes` is `Some(0)`.
    ///
    /// # Examples
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// use torsion::testing::{IoPump, MemoryReactor};
    /// use torsion::{Context, Protocol};
    ///
    /// struct Count(Rc<Cell<usize>>);
    /// impl Protocol for Count {
    ///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {
    ///         self.0.set(self.0.get() + 1);
    ///     }
    /// }
    ///
    /// let mr = MemoryReactor::new()?;
    /// let calls = Rc::new(Cell::new(0));
    /// let pump = IoPump::new(mr.reactor(), Box::new(Count(calls.clone())), Box::new(Count(Rc::default())));
    /// pump.set_chunk_size(Some(3));
    /// pump.client_transport().write(b"0123456789");
    /// pump.flush();
    /// assert_eq!(calls.get(), 4); // 3 + 3 + 3 + 1
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn set_chunk_size(&self, bytes: Option<usize>) {
        assert!(bytes != Some(0), "a chunk size of 0 would never deliver");
        self.chunk.set(bytes);
    }

    /// The chunk size set by [`set_chunk_size`](Self::set_chunk_size).
    pub fn chunk_size(&self) -> Option<usize> {
        self.chunk.get()
    }

    /// True once both protocols got `connection_lost`.
    ///
    /// # Examples
    /// One round delivers a clean close: the client closes, then the server reads the end of
    /// the stream and closes too.
    /// ```
    /// use torsion::testing::{IoPump, MemoryReactor};
    /// use torsion::{Context, Protocol};
    ///
    /// struct Quiet;
    /// impl Protocol for Quiet {
    ///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    /// }
    ///
    /// let mr = MemoryReactor::new()?;
    /// let pump = IoPump::new(mr.reactor(), Box::new(Quiet), Box::new(Quiet));
    /// pump.client_transport().lose_connection();
    /// assert!(pump.client_transport().connected()); // closing, not closed
    /// assert!(pump.pump());
    /// assert!(!pump.client_transport().connected() && !pump.server_transport().connected());
    /// assert!(pump.closed());
    /// assert!(!pump.pump());
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn closed(&self) -> bool {
        self.server.end.st.borrow().ended.is_some() && self.client.end.st.borrow().ended.is_some()
    }

    /// One round: runs the reactor's ready work, then moves bytes client to server, then
    /// server to client (at most one chunk each way), and delivers what follows (producers
    /// asked or resumed, closes, half-closes, ends of stream, resets). Returns whether anything
    /// moved or happened; `false` means quiet.
    ///
    /// # Panics
    /// When called from inside a callback this pump delivered (that callback's connection is
    /// then aborted with [`Reason::Panicked`]), or when the reactor's poller fails.
    pub fn pump(&self) -> bool {
        assert!(
            !self.pumping.replace(true),
            "IoPump::pump called from inside a callback it delivered"
        );
        let _pumping = Pumping(&self.pumping);
        let mut moved = self.run_reactor();
        for (s, r) in [(&self.client, &self.server), (&self.server, &self.client)] {
            moved |= self.close_doomed(s);
            moved |= self.close_doomed(r);
            moved |= self.transfer(s, r);
            moved |= self.write_step(s);
            moved |= self.after_peer(s, r);
        }
        moved
    }

    /// Pumps until a round moves nothing.
    ///
    /// # Panics
    /// When the protocols are still busy after [`FLUSH_ROUNDS`] rounds (they talk forever), or
    /// as [`pump`](Self::pump).
    pub fn flush(&self) {
        flush_all(&[self]);
    }

    /// Runs the reactor's queued calls and due delayed calls, if any.
    fn run_reactor(&self) -> bool {
        if !self.reactor.has_work_now() {
            return false;
        }
        match self.reactor.iterate(Some(Duration::ZERO)) {
            Ok(()) => true,
            // Pumped from inside one of the reactor's callbacks: its work waits for its loop.
            Err(Error::Reentrant) => false,
            Err(e) => panic!("the reactor's loop failed: {e}"),
        }
    }

    /// Calls into `side`'s protocol; a panic is logged and aborts the connection. `None` when
    /// the protocol is gone (or, which cannot happen, busy).
    fn call<R>(
        &self,
        side: &Side,
        f: impl FnOnce(&mut dyn Protocol, &mut Context<'_>) -> R,
    ) -> Option<R> {
        let Ok(mut slot) = side.end.protocol.try_borrow_mut() else {
            debug_assert!(false, "nested protocol callback");
            return None;
        };
        let p = slot.as_mut()?;
        let mut cx = Context::new(&self.reactor, &side.t);
        let result = catch_unwind(AssertUnwindSafe(|| f(&mut **p, &mut cx)));
        drop(slot);
        match result {
            Ok(v) => Some(v),
            Err(payload) => {
                let msg = panic_message(&*payload);
                tracing::error!(side = side.end.role, peer = %side.end.peer, message = %msg,
                    "a protocol callback panicked; aborting its connection");
                side.end.doom(Reason::Panicked(Panicked(msg)));
                None
            }
        }
    }

    /// Calls a producer of `side`; a panic is logged and aborts the connection.
    fn call_producer(&self, side: &Side, what: &str, f: impl FnOnce()) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
            let msg = panic_message(&*payload);
            tracing::error!(side = side.end.role, peer = %side.end.peer, message = %msg,
                "the producer's {what} panicked; aborting the connection");
            side.end.doom(Reason::Panicked(Panicked(msg)));
        }
    }

    /// Delivers `connection_lost(reason)` once. A clean close keeps the bytes in flight (they
    /// are delivered to the peer before its end of stream); a reset drops them.
    fn close_now(&self, side: &Side, reason: Reason, ended: Ended) {
        let producer = {
            let mut st = side.end.st.borrow_mut();
            if st.ended.is_some() {
                return;
            }
            st.ended = Some(ended);
            st.doomed = None;
            st.reading = false;
            st.want_write = false;
            if ended == Ended::Reset {
                st.buf = VecDeque::new();
            }
            st.flow.take()
        };
        if let Some(p) = producer {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| p.stop_producing())) {
                let msg = panic_message(&*payload);
                tracing::error!(side = side.end.role, message = %msg, "stop_producing panicked");
            }
        }
        // Taken out: the protocol (and the transports it holds) is dropped after this call,
        // which breaks the protocol -> transport -> end cycle.
        let protocol = side.end.protocol.borrow_mut().take();
        if let Some(mut p) = protocol {
            let mut cx = Context::new(&self.reactor, &side.t);
            if let Err(payload) =
                catch_unwind(AssertUnwindSafe(|| p.connection_lost(&mut cx, reason)))
            {
                let msg = panic_message(&*payload);
                tracing::error!(side = side.end.role, message = %msg, "connection_lost panicked");
            }
        }
    }

    /// Closes `side` if it was aborted (or its protocol panicked).
    fn close_doomed(&self, side: &Side) -> bool {
        let doomed = {
            let mut st = side.end.st.borrow_mut();
            if st.ended.is_some() {
                return false;
            }
            st.doomed.take()
        };
        match doomed {
            Some((reason, ended)) => {
                self.close_now(side, reason, ended);
                true
            }
            None => false,
        }
    }

    /// Moves one chunk of `s`'s buffer to `r`'s protocol, if `r` reads. A receiver that asked
    /// to close will never read: what is sent to it is thrown away (over TCP its kernel would
    /// take the bytes and drop them at the close), so that both sides closing at once cannot
    /// wait on each other forever.
    fn transfer(&self, s: &Side, r: &Side) -> bool {
        let data = {
            let mut rst = r.end.st.borrow_mut();
            if rst.gone() || !(rst.reading || rst.disconnecting) {
                return false;
            }
            let mut sst = s.end.st.borrow_mut();
            if sst.doomed.is_some() || sst.buf.is_empty() {
                return false;
            }
            if !rst.reading {
                sst.buf = VecDeque::new();
                rst.discarded = true;
                drop(sst);
                drop(rst);
                self.maybe_resume_streaming(s);
                return true;
            }
            let n = self
                .chunk
                .get()
                .map_or(sst.buf.len(), |c| c.min(sst.buf.len()));
            let data: Vec<u8> = sst.buf.drain(..n).collect();
            if sst.buf.is_empty() && sst.buf.capacity() > KEEP_CAPACITY {
                sst.buf = VecDeque::new();
            }
            data
        };
        s.end
            .delivered
            .set(s.end.delivered.get() + data.len() as u64);
        self.call(r, |p, cx| p.data_received(cx, &data));
        true
    }

    /// TCP's "socket writable" step for `s`: resume a streaming producer at the low-water
    /// mark; once the buffer is empty, ask a pull producer for more, then finish a pending
    /// close or half-close.
    fn write_step(&self, s: &Side) -> bool {
        let pull = {
            let mut st = s.end.st.borrow_mut();
            if st.gone() || !st.want_write {
                return false;
            }
            if !st.buf.is_empty() {
                drop(st);
                return self.maybe_resume_streaming(s);
            }
            st.want_write = false;
            st.flow.pull()
        };
        let mut moved = false;
        if let Some(p) = pull {
            self.call_producer(s, "resume_producing", || p.resume_producing());
            moved = true;
        }
        moved |= self.maybe_resume_streaming(s);
        let (finish, shut) = {
            let st = s.end.st.borrow();
            if st.gone() {
                return true;
            }
            let empty = st.buf.is_empty();
            (
                empty && st.disconnecting && !st.flow.is_registered(),
                empty && st.write_shut == WriteShut::Requested,
            )
        };
        if finish {
            let discarded = s.end.st.borrow().discarded;
            let ended = if discarded {
                Ended::Reset
            } else {
                Ended::Clean
            };
            self.close_now(s, Reason::ConnectionDone, ended);
            return true;
        }
        if shut {
            let read_closed = {
                let mut st = s.end.st.borrow_mut();
                st.write_shut = WriteShut::Done;
                st.read_closed
            };
            let panicked = self.call(s, |p, cx| p.write_connection_lost(cx)).is_none();
            // A panic aborted it: closed on the next round, with the panic as the reason.
            if read_closed && !panicked {
                self.close_now(s, Reason::ConnectionDone, Ended::Clean);
            }
            return true;
        }
        moved
    }

    /// Resumes `s`'s paused streaming producer once its buffer is at the low-water mark.
    fn maybe_resume_streaming(&self, s: &Side) -> bool {
        let p = {
            let mut st = s.end.st.borrow_mut();
            let buffered = st.buf.len();
            st.flow.resume_if_under(buffered)
        };
        match p {
            Some(p) => {
                self.call_producer(s, "resume_producing", || p.resume_producing());
                true
            }
            None => false,
        }
    }

    /// What `s`'s state means for `r`: a reset when `s` was aborted (or closed with unread
    /// bytes); the end of the stream when `s` shut its sending side (or closed cleanly) and
    /// everything it sent was received, if `r` reads; else a reset when `r` still has bytes
    /// for the closed `s`.
    fn after_peer(&self, s: &Side, r: &Side) -> bool {
        let (s_ended, s_write_done, s_empty) = {
            let st = s.end.st.borrow();
            (
                st.ended,
                st.write_shut == WriteShut::Done,
                st.buf.is_empty() && st.doomed.is_none(),
            )
        };
        let consequence = {
            let rst = r.end.st.borrow();
            if rst.gone() {
                return false;
            }
            let finished = s_ended == Some(Ended::Clean) || s_write_done;
            match s_ended {
                Some(Ended::Reset) => Consequence::Reset,
                // A reader sees the end of the stream before any reset its own bytes would
                // cause (over TCP the FIN is read first, the RST comes after the close).
                _ if finished && s_empty && rst.reading && !rst.read_closed => {
                    Consequence::EndOfStream
                }
                Some(Ended::Clean) if !rst.buf.is_empty() => Consequence::Reset,
                _ => return false,
            }
        };
        match consequence {
            Consequence::Reset => {
                let reset = io::Error::from(io::ErrorKind::ConnectionReset);
                self.close_now(r, Reason::lost(reset), Ended::Reset);
            }
            Consequence::EndOfStream => {
                let choice = self.call(r, |p, cx| p.read_connection_lost(cx));
                match choice {
                    Some(HalfClose::Close) => {
                        self.close_now(r, Reason::ConnectionDone, Ended::Clean);
                    }
                    Some(HalfClose::KeepWriting) => {
                        let write_done = {
                            let mut st = r.end.st.borrow_mut();
                            st.read_closed = true;
                            st.reading = false;
                            st.write_shut == WriteShut::Done
                        };
                        if write_done {
                            self.close_now(r, Reason::ConnectionDone, Ended::Clean);
                        }
                    }
                    // It panicked: aborted, closed on the next round.
                    None => {}
                }
            }
        }
        true
    }
}

impl Drop for IoPump {
    fn drop(&mut self) {
        for side in [&self.server, &self.client] {
            let producer = {
                let mut st = side.end.st.borrow_mut();
                st.ended.get_or_insert(Ended::Reset);
                st.doomed = None;
                st.buf = VecDeque::new();
                st.flow.take()
            };
            drop(producer);
            let protocol = side
                .end
                .protocol
                .try_borrow_mut()
                .ok()
                .and_then(|mut p| p.take());
            drop(protocol);
        }
    }
}

/// Builds a server protocol with `server` and a client protocol with `client` (each given the
/// other's address: `memory:client` and `memory:server`), and connects them through an
/// [`IoPump`] (Twisted's `iosim.connectedServerAndClient`). `None` when a factory refuses.
///
/// Only `build_protocol` is called: no `start_factory`, and no client-factory callbacks (there
/// is no connector). Nothing is pumped yet: call [`IoPump::flush`].
///
/// It takes the [`Reactor`] (a [`MemoryReactor`](super::MemoryReactor)'s, usually) rather
/// than the memory reactor itself, for the reason given at [`IoPump`]. Both factories may be
/// trait objects, such as the ones a memory reactor recorded (`&*server.factory`).
///
/// # Examples
/// ```
/// use torsion::testing::{connected_pair, MemoryReactor};
/// use torsion::{Context, Factory, Protocol};
///
/// struct Greeter;
/// impl Protocol for Greeter {
///     fn connection_made(&mut self, cx: &mut Context<'_>) {
///         cx.transport().write(b"hi\n");
///     }
///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
/// }
///
/// let mr = MemoryReactor::new()?;
/// let pump = connected_pair(
///     mr.reactor(),
///     &Factory::for_protocol(|| Greeter),
///     &Factory::for_protocol(|| Greeter),
/// )
/// .unwrap();
/// pump.flush();
/// assert_eq!((pump.server_to_client(), pump.client_to_server()), (3, 3));
/// # Ok::<(), torsion::Error>(())
/// ```
pub fn connected_pair<S, C>(reactor: &Reactor, server: &S, client: &C) -> Option<IoPump>
where
    S: ProtocolFactory + ?Sized,
    C: ProtocolFactory + ?Sized,
{
    connected_pair_with(
        reactor,
        server,
        client,
        Address::memory("server"),
        Address::memory("client"),
    )
}

/// As [`connected_pair`], with the server's and the client's addresses (each factory is given
/// the other side's): to tell several clients of one server apart.
///
/// # Examples
/// ```
/// use torsion::testing::{connected_pair_with, MemoryReactor};
/// use torsion::{Address, Context, Factory, Protocol};
///
/// struct Quiet;
/// impl Protocol for Quiet {
///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
/// }
///
/// let mr = MemoryReactor::new()?;
/// let server = Factory::for_protocol(|| Quiet);
/// let client = Factory::for_protocol(|| Quiet);
/// let pump = connected_pair_with(mr.reactor(), &server, &client, Address::memory("chat"), Address::memory("alice")).unwrap();
/// assert_eq!(pump.server_transport().peer().to_string(), "memory:alice");
/// # Ok::<(), torsion::Error>(())
/// ```
pub fn connected_pair_with<S, C>(
    reactor: &Reactor,
    server: &S,
    client: &C,
    server_addr: Address,
    client_addr: Address,
) -> Option<IoPump>
where
    S: ProtocolFactory + ?Sized,
    C: ProtocolFactory + ?Sized,
{
    let s = server.build_protocol(&client_addr)?;
    let c = client.build_protocol(&server_addr)?;
    Some(IoPump::with_addresses(
        reactor,
        s,
        c,
        server_addr,
        client_addr,
    ))
}

/// Pumps every pair in turn until a whole pass moves nothing: for protocols that write to each
/// other's connections across pairs (a chat room, a proxy).
///
/// # Panics
/// When they are still busy after [`FLUSH_ROUNDS`] passes, or as [`IoPump::pump`].
///
/// # Examples
/// ```
/// use torsion::testing::{flush_all, IoPump, MemoryReactor};
/// use torsion::{Context, Protocol};
///
/// struct Quiet;
/// impl Protocol for Quiet {
///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
/// }
///
/// let mr = MemoryReactor::new()?;
/// let a = IoPump::new(mr.reactor(), Box::new(Quiet), Box::new(Quiet));
/// let b = IoPump::new(mr.reactor(), Box::new(Quiet), Box::new(Quiet));
/// a.server_transport().write(b"to a's client");
/// b.client_transport().write(b"to b's server");
/// flush_all(&[&a, &b]);
/// assert_eq!((a.server_to_client(), b.client_to_server()), (13, 13));
/// # Ok::<(), torsion::Error>(())
/// ```
pub fn flush_all(pumps: &[&IoPump]) {
    for _ in 0..FLUSH_ROUNDS {
        let mut moved = false;
        for p in pumps {
            moved |= p.pump();
        }
        if !moved {
            return;
        }
    }
    panic!("the pumped protocols are still talking after {FLUSH_ROUNDS} rounds");
}
