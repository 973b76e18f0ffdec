//! [`StringTransport`]: a transport that records what a protocol writes (Twisted's
//! `proto_helpers.StringTransport`).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

use super::MemoryReactor;
use crate::interfaces::{
    Address, Context, HalfClose, Producer, Protocol, Transport, TransportImpl,
};
use crate::{Error, Reactor, Reason};

#[derive(Default)]
struct State {
    written: Vec<u8>,
    disconnecting: bool,
    aborted: bool,
    write_closed: bool,
    closed: bool,
    reading_paused: bool,
    producer: Option<(Rc<dyn Producer>, bool)>,
    high: usize,
    low: usize,
}

struct Imp {
    st: RefCell<State>,
    peer: Address,
    host: Address,
    writes: Cell<u64>,
}

/// A transport that records what the protocol does to it, for unit tests with no socket: the
/// bytes written ([`value`](Self::value)), whether it asked to close
/// ([`disconnecting`](Self::disconnecting)), to abort ([`aborted`](Self::aborted)), to
/// half-close ([`write_closed`](Self::write_closed)), to stop reading
/// ([`reading_paused`](Self::reading_paused)), and the producer it registered. The test drives
/// the protocol by hand: [`connect`](Self::connect), [`receive`](Self::receive),
/// [`read_eof`](Self::read_eof), [`lose`](Self::lose).
///
/// Nothing is buffered: every write is "sent" at once ([`buffered`](Transport::buffered) is 0).
/// Writes are recorded until the connection is lost or aborted, or the write side closed.
///
/// # Examples
/// A line protocol that answers `PING` and closes on `QUIT`, tested without a socket:
/// ```
/// use torsion::testing::StringTransport;
/// use torsion::{Context, Protocol};
///
/// #[derive(Default)]
/// struct Ping(Vec<u8>);
/// impl Protocol for Ping {
///     fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
///         self.0.extend_from_slice(data);
///         while let Some(end) = self.0.iter().position(|&b| b == b'\n') {
///             let line: Vec<u8> = self.0.drain(..=end).collect();
///             match &line[..] {
///                 b"PING\n" => cx.transport().write(b"PONG\n"),
///                 b"QUIT\n" => cx.transport().lose_connection(),
///                 _ => cx.transport().write(b"ERR\n"),
///             }
///         }
///     }
/// }
///
/// let t = StringTransport::new()?;
/// let mut p = Ping::default();
/// t.connect(&mut p);
/// t.receive(&mut p, b"PI");
/// assert_eq!(t.value(), b"");
/// t.receive(&mut p, b"NG\nPING\n");
/// assert_eq!(t.take(), b"PONG\nPONG\n");
/// t.receive(&mut p, b"QUIT\n");
/// assert!(t.disconnecting());
/// # Ok::<(), torsion::Error>(())
/// ```
pub struct StringTransport {
    imp: Rc<Imp>,
    transport: Transport,
    reactor: Reactor,
    /// The memory reactor made by [`new`](Self::new), kept alive with the transport.
    memory: Option<Rc<MemoryReactor>>,
}

impl fmt::Debug for StringTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.imp.st.borrow();
        f.debug_struct("StringTransport")
            .field("written", &st.written.len())
            .field("disconnecting", &st.disconnecting)
            .field("aborted", &st.aborted)
            .finish_non_exhaustive()
    }
}

impl StringTransport {
    /// A string transport on a new [`MemoryReactor`] (the reactor its protocol callbacks get,
    /// with a fake clock), between `memory:peer` and `memory:host`.
    ///
    /// # Errors
    /// As [`MemoryReactor::new`].
    pub fn new() -> Result<StringTransport, Error> {
        let memory = Rc::new(MemoryReactor::new()?);
        let mut t = StringTransport::on(memory.reactor());
        t.memory = Some(memory);
        Ok(t)
    }

    /// A string transport whose protocol callbacks get `reactor`.
    pub fn on(reactor: &Reactor) -> StringTransport {
        StringTransport::with_addresses(reactor, Address::memory("peer"), Address::memory("host"))
    }

    /// A string transport with the given peer and host addresses.
    pub fn with_addresses(reactor: &Reactor, peer: Address, host: Address) -> StringTransport {
        let imp = Rc::new(Imp {
            st: RefCell::new(State {
                high: crate::tcp::DEFAULT_HIGH_WATER,
                low: crate::tcp::DEFAULT_LOW_WATER,
                ..State::default()
            }),
            peer,
            host,
            writes: Cell::new(0),
        });
        StringTransport {
            transport: Transport::new(imp.clone()),
            imp,
            reactor: reactor.clone(),
            memory: None,
        }
    }

    /// The [`Transport`] handle the protocol sees.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The reactor the protocol's callbacks get.
    pub fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    /// The memory reactor made by [`new`](Self::new) (`None` for [`on`](Self::on)): advance
    /// its clock to fire the protocol's timers.
    pub fn memory_reactor(&self) -> Option<&MemoryReactor> {
        self.memory.as_deref()
    }

    /// Everything written so far (since the last [`clear`](Self::clear)).
    pub fn value(&self) -> Vec<u8> {
        self.imp.st.borrow().written.clone()
    }

    /// Forgets what was written.
    pub fn clear(&self) {
        self.imp.st.borrow_mut().written.clear();
    }

    /// What was written, and forgets it.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.imp.st.borrow_mut().written)
    }

    /// Number of `write`/`write_sequence` calls so far.
    pub fn writes(&self) -> u64 {
        self.imp.writes.get()
    }

    /// `lose_connection` (or `stop_producing`) was called.
    pub fn disconnecting(&self) -> bool {
        self.imp.st.borrow().disconnecting
    }

    /// `abort_connection` was called.
    pub fn aborted(&self) -> bool {
        self.imp.st.borrow().aborted
    }

    /// `lose_write_connection` was called.
    pub fn write_closed(&self) -> bool {
        self.imp.st.borrow().write_closed
    }

    /// The protocol paused reading (`pause_producing` on its transport) and has not resumed.
    pub fn reading_paused(&self) -> bool {
        self.imp.st.borrow().reading_paused
    }

    /// The registered producer and whether it is streaming.
    pub fn producer(&self) -> Option<(Rc<dyn Producer>, bool)> {
        self.imp.st.borrow().producer.clone()
    }

    fn call<R>(
        &self,
        p: &mut dyn Protocol,
        f: impl FnOnce(&mut dyn Protocol, &mut Context<'_>) -> R,
    ) -> R {
        let mut cx = Context::new(&self.reactor, &self.transport);
        f(p, &mut cx)
    }

    /// Calls `p.connection_made`.
    pub fn connect(&self, p: &mut dyn Protocol) {
        self.call(p, |p, cx| p.connection_made(cx));
    }

    /// Calls `p.data_received(data)`.
    pub fn receive(&self, p: &mut dyn Protocol, data: &[u8]) {
        self.call(p, |p, cx| p.data_received(cx, data));
    }

    /// The peer closed its sending side: calls `p.read_connection_lost` and returns its choice.
    pub fn read_eof(&self, p: &mut dyn Protocol) -> HalfClose {
        self.call(p, |p, cx| p.read_connection_lost(cx))
    }

    /// The connection is gone: marks the transport closed and calls `p.connection_lost`.
    pub fn lose(&self, p: &mut dyn Protocol, reason: Reason) {
        self.imp.st.borrow_mut().closed = true;
        self.call(p, |p, cx| p.connection_lost(cx, reason));
    }
}

impl TransportImpl for Imp {
    fn write_sequence(&self, data: &[&[u8]]) {
        let mut st = self.st.borrow_mut();
        if st.closed || st.aborted || st.write_closed {
            return;
        }
        self.writes.set(self.writes.get() + 1);
        for d in data {
            st.written.extend_from_slice(d);
        }
    }

    fn lose_connection(&self) {
        self.st.borrow_mut().disconnecting = true;
    }

    fn abort_connection(&self) {
        self.st.borrow_mut().aborted = true;
    }

    fn lose_write_connection(&self) {
        self.st.borrow_mut().write_closed = true;
    }

    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool) -> Result<(), Error> {
        let mut st = self.st.borrow_mut();
        if st.producer.is_some() {
            return Err(Error::ProducerAlreadyRegistered);
        }
        st.producer = Some((producer, streaming));
        Ok(())
    }

    fn unregister_producer(&self) {
        let old = self.st.borrow_mut().producer.take();
        drop(old);
    }

    fn pause_producing(&self) {
        self.st.borrow_mut().reading_paused = true;
    }

    fn resume_producing(&self) {
        self.st.borrow_mut().reading_paused = false;
    }

    fn peer(&self) -> Address {
        self.peer.clone()
    }

    fn host(&self) -> Address {
        self.host.clone()
    }

    fn buffered(&self) -> usize {
        0
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) {
        let mut st = self.st.borrow_mut();
        st.high = high;
        st.low = low.min(high);
    }

    fn connected(&self) -> bool {
        let st = self.st.borrow();
        !st.closed && !st.aborted
    }

    fn disconnecting(&self) -> bool {
        self.st.borrow().disconnecting
    }
}
