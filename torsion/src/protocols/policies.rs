//! Protocol policies (Twisted's `twisted.protocols.policies`): idle timeouts, bandwidth
//! throttling and connection limits, as protocol wrappers on the transport contract. The
//! wrapped protocol does not know it is wrapped, and every policy works the same over TCP, the
//! testing kit's in-memory transports, and any other [`Transport`].
//!
//! * [`IdleTimeout`]: a timer a protocol embeds (Twisted's `TimeoutMixin`): set, reset on
//!   traffic, cancel; on expiry a hook, by default an abort whose reason the protocol reads as
//!   [`Reason::TimedOut`].
//! * [`TimeoutFactory`]: times out any protocol after a period with no traffic in either
//!   direction (Twisted's `TimeoutFactory` and `TimeoutProtocol`).
//! * [`ThrottlingFactory`]: read and write bandwidth limits shared by all the connections of a
//!   factory, and a maximum connection count (Twisted's `ThrottlingFactory`).
//! * [`LimitTotalConnectionsFactory`] and [`LimitConnectionsByPeer`]: refuse connections past
//!   a total, or past a number per peer address (Twisted's factories of the same names). A
//!   refused connection is closed at once (its protocol is never built) and the refusal is
//!   logged through `tracing` at `WARN` with the peer and the limit.
//!
//! Settings are range-checked: a zero limit or period is refused with a [`PolicyError`].
//!
//! # Examples
//! A server whose clients are cut after five idle minutes, at most 100 at once and 4 per
//! address, reading at most 1 MB/s in all:
//! ```
//! use std::time::Duration;
//! use torsion::protocols::policies::{
//!     LimitConnectionsByPeer, ThrottlingFactory, TimeoutFactory,
//! };
//! use torsion::{Context, Factory, Protocol};
//!
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
//!         cx.transport().write(data);
//!     }
//! }
//!
//! let factory = TimeoutFactory::new(Factory::for_protocol(|| Echo), Duration::from_secs(300))?;
//! let factory = LimitConnectionsByPeer::new(factory, 4)?;
//! let factory = ThrottlingFactory::new(factory).max_connections(100)?.read_limit(1_000_000)?;
//! // reactor.listen_tcp("0.0.0.0:8000", factory)?;
//! # let _ = factory;
//! # Ok::<(), torsion::protocols::policies::PolicyError>(())
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::defer::TimedOut;
use crate::interfaces::{
    Address, ClientFactory, Connector, Context, HalfClose, Producer, Protocol, ProtocolFactory,
    Transport,
};
use crate::protocol::wrap::ForwardingTransport;
use crate::protocol::IntoFactory;
use crate::time::DelayedCall;
use crate::{ConnectError, Error, Reactor, Reason};

/// A policy setting was out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyError {
    /// A limit or period was zero: it would refuse, stall or time out every connection.
    Zero {
        /// The setting.
        setting: &'static str,
    },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::Zero { setting } => write!(f, "{setting} must be greater than zero"),
        }
    }
}

impl std::error::Error for PolicyError {}

fn nonzero<T: Default + PartialEq>(setting: &'static str, v: T) -> Result<T, PolicyError> {
    if v == T::default() {
        Err(PolicyError::Zero { setting })
    } else {
        Ok(v)
    }
}

/// Forwards the client callbacks of a wrapping factory to its `wrapped` field.
macro_rules! forward_client_factory {
    ($name:ident) => {
        impl<F: ClientFactory> ClientFactory for $name<F> {
            fn started_connecting(&self, connector: &Connector) {
                self.wrapped.started_connecting(connector);
            }

            fn client_connection_failed(&self, connector: &Connector, reason: ConnectError) {
                self.wrapped.client_connection_failed(connector, reason);
            }

            fn client_connection_lost(&self, connector: &Connector, reason: Reason) {
                self.wrapped.client_connection_lost(connector, reason);
            }
        }
    };
}

// ----------------------------------------------------------------------------- idle timeout

type ExpiryHook = Box<dyn FnMut(&Reactor, &Transport, &IdleTimeout)>;

struct IdleInner {
    period: Cell<Option<Duration>>,
    call: RefCell<Option<DelayedCall>>,
    expired: Cell<bool>,
    hook: RefCell<Option<ExpiryHook>>,
}

impl IdleInner {
    fn cancel(&self) {
        let call = self.call.borrow_mut().take();
        if let Some(c) = call {
            let _ = c.cancel();
        }
    }
}

/// An idle timer a protocol embeds (Twisted's `TimeoutMixin`): [`set_timeout`] starts it,
/// [`reset_timeout`] (call it on traffic) starts the period again, [`cancel_timeout`] stops it.
/// When the period passes with no reset, the expiry hook runs; the default aborts the
/// connection, and [`reason`](Self::reason) then turns the `connection_lost` reason into
/// [`Reason::TimedOut`]. A clone is the same timer (give one to a transport wrapper to reset it
/// on writes).
///
/// The timer holds the transport until it fires or is cancelled: cancel it in
/// `connection_lost` (dropping the last clone cancels it too).
///
/// [`set_timeout`]: Self::set_timeout
/// [`reset_timeout`]: Self::reset_timeout
/// [`cancel_timeout`]: Self::cancel_timeout
///
/// # Examples
/// A protocol that gives its peer ten seconds between messages, tested on the fake clock:
/// ```
/// use std::time::Duration;
/// use torsion::protocols::policies::IdleTimeout;
/// use torsion::testing::StringTransport;
/// use torsion::{Context, Protocol, Reason};
///
/// struct Chatty { idle: IdleTimeout, lost: Option<Reason> }
/// impl Protocol for Chatty {
///     fn connection_made(&mut self, cx: &mut Context<'_>) {
///         self.idle.set_timeout(cx, Some(Duration::from_secs(10)));
///     }
///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {
///         self.idle.reset_timeout();
///     }
///     fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
///         self.idle.cancel_timeout();
///         self.lost = Some(self.idle.reason(reason));
///     }
/// }
///
/// let t = StringTransport::new()?;
/// let clock = t.memory_reactor().unwrap();
/// let mut p = Chatty { idle: IdleTimeout::new(), lost: None };
/// t.connect(&mut p);
/// clock.advance(Duration::from_secs(9));
/// t.receive(&mut p, b"still here");
/// clock.advance(Duration::from_secs(9));
/// assert!(!t.aborted());
/// clock.advance(Duration::from_secs(1));
/// assert!(t.aborted()); // ten seconds of silence
/// t.lose(&mut p, Reason::ConnectionAborted);
/// assert!(matches!(p.lost, Some(Reason::TimedOut(_))));
/// # Ok::<(), torsion::Error>(())
/// ```
#[derive(Clone)]
#[doc(alias = "TimeoutMixin")]
pub struct IdleTimeout {
    inner: Rc<IdleInner>,
}

impl fmt::Debug for IdleTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleTimeout")
            .field("period", &self.inner.period.get())
            .field("active", &self.active())
            .field("expired", &self.inner.expired.get())
            .finish()
    }
}

impl Default for IdleTimeout {
    fn default() -> Self {
        IdleTimeout::new()
    }
}

impl IdleTimeout {
    /// A timer with no period set and the default hook (abort the connection).
    pub fn new() -> IdleTimeout {
        IdleTimeout {
            inner: Rc::new(IdleInner {
                period: Cell::new(None),
                call: RefCell::new(None),
                expired: Cell::new(false),
                hook: RefCell::new(None),
            }),
        }
    }

    /// Runs `hook(reactor, transport, timer)` on expiry instead of aborting the connection
    /// (Twisted's `timeoutConnection` override): say goodbye and `lose_connection`, or send a
    /// ping and give the peer another period with `timer.set_timeout_on(...)`.
    /// [`expired`](Self::expired) is true when it runs. (Use the `timer` given rather than
    /// capturing a clone: a clone held by its own hook would never be dropped.)
    pub fn on_expiry(self, hook: impl FnMut(&Reactor, &Transport, &IdleTimeout) + 'static) -> Self {
        *self.inner.hook.borrow_mut() = Some(Box::new(hook));
        self
    }

    /// Sets the period (`None` turns the timer off) and starts it again from now, on
    /// `cx`'s reactor, for `cx`'s transport. Returns the previous period (Twisted's
    /// `setTimeout`). A zero period expires at the reactor's next timer pass.
    pub fn set_timeout(&self, cx: &Context<'_>, period: Option<Duration>) -> Option<Duration> {
        self.set_timeout_on(cx.reactor(), cx.transport(), period)
    }

    /// As [`set_timeout`](Self::set_timeout), with the reactor and transport given apart.
    pub fn set_timeout_on(
        &self,
        reactor: &Reactor,
        transport: &Transport,
        period: Option<Duration>,
    ) -> Option<Duration> {
        let old = self.inner.period.replace(period);
        self.inner.cancel();
        if let Some(p) = period {
            self.inner.expired.set(false);
            let weak = Rc::downgrade(&self.inner);
            let t = transport.clone();
            let call = reactor.call_later(p, move |r| {
                let Some(inner) = weak.upgrade() else { return };
                inner.call.borrow_mut().take();
                inner.expired.set(true);
                tracing::debug!(peer = %t.peer(), after = ?p, "idle timeout expired");
                let hook = inner.hook.borrow_mut().take();
                match hook {
                    Some(mut h) => {
                        h(
                            r,
                            &t,
                            &IdleTimeout {
                                inner: inner.clone(),
                            },
                        );
                        let mut slot = inner.hook.borrow_mut();
                        if slot.is_none() {
                            *slot = Some(h);
                        }
                    }
                    None => t.abort_connection(),
                }
            });
            *self.inner.call.borrow_mut() = Some(call);
        }
        old
    }

    /// Starts the period again from now (call it on traffic; Twisted's `resetTimeout`). Does
    /// nothing when no timer runs (none set, cancelled, or already expired).
    pub fn reset_timeout(&self) {
        let call = self.inner.call.borrow().clone();
        if let (Some(c), Some(p)) = (call, self.inner.period.get()) {
            let _ = c.reset(p);
        }
    }

    /// Stops the timer: its delayed call is cancelled. The period is kept (a later
    /// `set_timeout` replaces it).
    pub fn cancel_timeout(&self) {
        self.inner.cancel();
    }

    /// The period set, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.inner.period.get()
    }

    /// True while the timer runs.
    pub fn active(&self) -> bool {
        self.inner
            .call
            .borrow()
            .as_ref()
            .is_some_and(DelayedCall::active)
    }

    /// True once the timer expired (until the next `set_timeout`).
    pub fn expired(&self) -> bool {
        self.inner.expired.get()
    }

    /// `reason`, or [`Reason::TimedOut`] when the timer expired: what to tell a protocol whose
    /// connection the expiry ended.
    pub fn reason(&self, reason: Reason) -> Reason {
        match (self.expired(), self.inner.period.get()) {
            (true, Some(after)) => Reason::TimedOut(TimedOut { after }),
            _ => reason,
        }
    }
}

impl Drop for IdleInner {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// The transport a timed-out protocol sees: its writes count as traffic.
struct TimeoutTransport {
    outer: Transport,
    idle: IdleTimeout,
}

impl ForwardingTransport for TimeoutTransport {
    fn wrapped(&self) -> &Transport {
        &self.outer
    }

    fn write_sequence(&self, data: &[&[u8]]) {
        self.idle.reset_timeout();
        self.outer.write_sequence(data);
    }

    fn write_shared(&self, data: Rc<[u8]>) {
        self.idle.reset_timeout();
        self.outer.write_shared(data);
    }
}

/// A protocol wrapper that times its protocol out after `period` with no traffic: bytes read
/// and bytes written both count (Twisted's `TimeoutProtocol`). On expiry the connection is
/// aborted and the wrapped protocol's `connection_lost` gets [`Reason::TimedOut`].
pub struct TimeoutProtocol {
    inner: Box<dyn Protocol>,
    idle: IdleTimeout,
    period: Duration,
    transport: Option<Transport>,
}

impl fmt::Debug for TimeoutProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutProtocol")
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl TimeoutProtocol {
    /// Wraps `inner` with an idle timeout of `period`.
    ///
    /// # Errors
    /// [`PolicyError::Zero`] for a zero period.
    pub fn new(inner: Box<dyn Protocol>, period: Duration) -> Result<TimeoutProtocol, PolicyError> {
        Ok(TimeoutProtocol {
            inner,
            idle: IdleTimeout::new(),
            period: nonzero("timeout period", period)?,
            transport: None,
        })
    }

    /// The timer (to change or cancel it, or see whether it expired).
    pub fn idle_timeout(&self) -> &IdleTimeout {
        &self.idle
    }

    fn forward<R>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut dyn Protocol, &mut Context<'_>) -> R,
    ) -> R {
        let t = self.transport.clone();
        let t = t.as_ref().unwrap_or(cx.transport());
        f(&mut *self.inner, &mut Context::new(cx.reactor(), t))
    }
}

impl Protocol for TimeoutProtocol {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        self.idle.set_timeout(cx, Some(self.period));
        self.transport = Some(Transport::new(Rc::new(TimeoutTransport {
            outer: cx.transport().clone(),
            idle: self.idle.clone(),
        })));
        self.forward(cx, |p, cx| p.connection_made(cx));
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        if self.idle.expired() {
            return; // aborted: nothing more reaches the protocol
        }
        self.idle.reset_timeout();
        self.forward(cx, |p, cx| p.data_received(cx, data));
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        self.idle.cancel_timeout();
        let reason = self.idle.reason(reason);
        self.forward(cx, |p, cx| p.connection_lost(cx, reason));
        self.transport = None;
    }

    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        self.forward(cx, |p, cx| p.read_connection_lost(cx))
    }

    fn write_connection_lost(&mut self, cx: &mut Context<'_>) {
        self.forward(cx, |p, cx| p.write_connection_lost(cx));
    }
}

/// Wraps every protocol of a factory in a [`TimeoutProtocol`] (Twisted's `TimeoutFactory`):
/// any connection idle for `period`, reading and writing nothing, is aborted.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use torsion::protocols::policies::TimeoutFactory;
/// use torsion::testing::{connected_pair, MemoryReactor};
/// use torsion::{Context, Factory, Protocol};
///
/// struct Silent;
/// impl Protocol for Silent {
///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
/// }
///
/// let mr = MemoryReactor::new()?;
/// let server = TimeoutFactory::new(Factory::for_protocol(|| Silent), Duration::from_secs(30))?;
/// let pump = connected_pair(mr.reactor(), &server, &Factory::for_protocol(|| Silent)).unwrap();
/// mr.advance(Duration::from_secs(30));
/// pump.flush();
/// assert!(pump.closed());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TimeoutFactory<F> {
    wrapped: Rc<F>,
    period: Duration,
}

impl<F> fmt::Debug for TimeoutFactory<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutFactory")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl<F: ProtocolFactory> TimeoutFactory<F> {
    /// Times out the protocols of `factory` after `period` idle (Twisted's default is 30
    /// minutes).
    ///
    /// # Errors
    /// [`PolicyError::Zero`] for a zero period.
    pub fn new(factory: impl IntoFactory<F>, period: Duration) -> Result<Self, PolicyError> {
        Ok(TimeoutFactory {
            wrapped: factory.into_factory(),
            period: nonzero("timeout period", period)?,
        })
    }

    /// The wrapped factory.
    pub fn wrapped(&self) -> &Rc<F> {
        &self.wrapped
    }

    /// The idle period.
    pub fn period(&self) -> Duration {
        self.period
    }
}

impl<F: ProtocolFactory> ProtocolFactory for TimeoutFactory<F> {
    fn build_protocol(&self, addr: &Address) -> Option<Box<dyn Protocol>> {
        let inner = self.wrapped.build_protocol(addr)?;
        Some(Box::new(TimeoutProtocol {
            inner,
            idle: IdleTimeout::new(),
            period: self.period,
            transport: None,
        }))
    }

    fn start_factory(&self) {
        self.wrapped.start_factory();
    }

    fn stop_factory(&self) {
        self.wrapped.stop_factory();
    }
}

forward_client_factory!(TimeoutFactory);

// ----------------------------------------------------------------------- connection limits

type Release = Box<dyn FnOnce()>;

/// A protocol that holds one slot of a limit, given back when the connection is lost (or the
/// protocol dropped without ever connecting).
struct Counted {
    inner: Box<dyn Protocol>,
    release: Option<Release>,
}

impl Counted {
    fn release(&mut self) {
        if let Some(r) = self.release.take() {
            r();
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.release();
    }
}

impl Protocol for Counted {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        self.inner.connection_made(cx);
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        self.inner.data_received(cx, data);
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        self.release();
        self.inner.connection_lost(cx, reason);
    }

    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        self.inner.read_connection_lost(cx)
    }

    fn write_connection_lost(&mut self, cx: &mut Context<'_>) {
        self.inner.write_connection_lost(cx);
    }
}

/// Refuses connections past a total (Twisted's `LimitTotalConnectionsFactory`): with `limit`
/// connections open, the next is closed at once, its protocol never built, and the refusal
/// logged (`WARN`, with the peer and the limit).
///
/// # Examples
/// ```
/// use torsion::protocols::policies::LimitTotalConnectionsFactory;
/// use torsion::testing::{connected_pair, MemoryReactor};
/// use torsion::{Context, Factory, Protocol};
///
/// struct Quiet;
/// impl Protocol for Quiet {
///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
/// }
///
/// let mr = MemoryReactor::new()?;
/// let server = LimitTotalConnectionsFactory::new(Factory::for_protocol(|| Quiet), 1)?;
/// let client = Factory::for_protocol(|| Quiet);
/// let first = connected_pair(mr.reactor(), &server, &client).unwrap();
/// assert!(connected_pair(mr.reactor(), &server, &client).is_none()); // refused
/// assert_eq!((server.connections(), server.refused()), (1, 1));
/// first.client_transport().lose_connection();
/// first.flush();
/// assert_eq!(server.connections(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LimitTotalConnectionsFactory<F> {
    wrapped: Rc<F>,
    limit: usize,
    count: Rc<Cell<usize>>,
    refused: Cell<u64>,
}

impl<F> fmt::Debug for LimitTotalConnectionsFactory<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitTotalConnectionsFactory")
            .field("limit", &self.limit)
            .field("connections", &self.count.get())
            .finish_non_exhaustive()
    }
}

impl<F: ProtocolFactory> LimitTotalConnectionsFactory<F> {
    /// At most `limit` connections of `factory` at once.
    ///
    /// # Errors
    /// [`PolicyError::Zero`] for a zero limit.
    pub fn new(factory: impl IntoFactory<F>, limit: usize) -> Result<Self, PolicyError> {
        Ok(LimitTotalConnectionsFactory {
            wrapped: factory.into_factory(),
            limit: nonzero("connection limit", limit)?,
            count: Rc::default(),
            refused: Cell::new(0),
        })
    }

    /// The wrapped factory.
    pub fn wrapped(&self) -> &Rc<F> {
        &self.wrapped
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.count.get()
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }
}

impl<F: ProtocolFactory> ProtocolFactory for LimitTotalConnectionsFactory<F> {
    fn build_protocol(&self, addr: &Address) -> Option<Box<dyn Protocol>> {
        if self.count.get() >= self.limit {
            self.refused.set(self.refused.get() + 1);
            tracing::warn!(
                peer = %addr,
                limit = self.limit,
                "connection refused: the limit of {} connections is reached",
                self.limit
            );
            return None;
        }
        let inner = self.wrapped.build_protocol(addr)?;
        self.count.set(self.count.get() + 1);
        let count = self.count.clone();
        Some(Box::new(Counted {
            inner,
            release: Some(Box::new(move || count.set(count.get() - 1))),
        }))
    }

    fn start_factory(&self) {
        self.wrapped.start_factory();
    }

    fn stop_factory(&self) {
        self.wrapped.stop_factory();
    }
}

forward_client_factory!(LimitTotalConnectionsFactory);

/// What counts as one peer: the IP address for TCP (all ports of a host together), the whole
/// address otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PeerKey {
    Ip(IpAddr),
    Other(Address),
}

impl PeerKey {
    fn of(addr: &Address) -> PeerKey {
        match addr.as_tcp() {
            Some(a) => PeerKey::Ip(a.ip()),
            None => PeerKey::Other(addr.clone()),
        }
    }
}

/// Refuses a peer's connections past a number per address (Twisted's
/// `LimitConnectionsByPeer`; its default is 5): for TCP the IP address counts, whatever the
/// port. A refused connection is closed at once, its protocol never built, and the refusal
/// logged (`WARN`). The table holds only peers with open connections.
///
/// # Examples
/// ```
/// use torsion::protocols::policies::LimitConnectionsByPeer;
/// use torsion::{Address, Context, Factory, Protocol, ProtocolFactory};
///
/// struct Quiet;
/// impl Protocol for Quiet {
///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
/// }
///
/// let f = LimitConnectionsByPeer::new(Factory::for_protocol(|| Quiet), 2)?;
/// let a = |s: &str| Address::from(s.parse::<std::net::SocketAddr>().unwrap());
/// let p1 = f.build_protocol(&a("10.0.0.1:5000"));
/// let p2 = f.build_protocol(&a("10.0.0.1:5001"));
/// assert!(p1.is_some() && p2.is_some());
/// assert!(f.build_protocol(&a("10.0.0.1:5002")).is_none()); // third from the same host
/// assert!(f.build_protocol(&a("10.0.0.2:5000")).is_some()); // another host
/// drop(p1); // a slot comes back when a connection ends
/// assert!(f.build_protocol(&a("10.0.0.1:5003")).is_some());
/// # Ok::<(), torsion::protocols::policies::PolicyError>(())
/// ```
pub struct LimitConnectionsByPeer<F> {
    wrapped: Rc<F>,
    per_peer: usize,
    peers: Rc<RefCell<HashMap<PeerKey, usize>>>,
    refused: Cell<u64>,
}

impl<F> fmt::Debug for LimitConnectionsByPeer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitConnectionsByPeer")
            .field("per_peer", &self.per_peer)
            .field("peers", &self.peers.borrow().len())
            .finish_non_exhaustive()
    }
}

impl<F: ProtocolFactory> LimitConnectionsByPeer<F> {
    /// At most `per_peer` connections of `factory` from each peer address at once.
    ///
    /// # Errors
    /// [`PolicyError::Zero`] for a zero limit.
    pub fn new(factory: impl IntoFactory<F>, per_peer: usize) -> Result<Self, PolicyError> {
        Ok(LimitConnectionsByPeer {
            wrapped: factory.into_factory(),
            per_peer: nonzero("connections per peer", per_peer)?,
            peers: Rc::default(),
            refused: Cell::new(0),
        })
    }

    /// The wrapped factory.
    pub fn wrapped(&self) -> &Rc<F> {
        &self.wrapped
    }

    /// Connections open now from the peer of `addr` (for TCP: from its IP address).
    pub fn connections_from(&self, addr: &Address) -> usize {
        self.peers
            .borrow()
            .get(&PeerKey::of(addr))
            .copied()
            .unwrap_or(0)
    }

    /// Number of peers with connections open.
    pub fn peers(&self) -> usize {
        self.peers.borrow().len()
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }
}

impl<F: ProtocolFactory> ProtocolFactory for LimitConnectionsByPeer<F> {
    fn build_protocol(&self, addr: &Address) -> Option<Box<dyn Protocol>> {
        let key = PeerKey::of(addr);
        let open = self.peers.borrow().get(&key).copied().unwrap_or(0);
        if open >= self.per_peer {
            self.refused.set(self.refused.get() + 1);
            tracing::warn!(
                peer = %addr,
                limit = self.per_peer,
                "connection refused: this peer has {} connections open, the limit",
                open
            );
            return None;
        }
        let inner = self.wrapped.build_protocol(addr)?;
        *self.peers.borrow_mut().entry(key.clone()).or_insert(0) += 1;
        let peers = self.peers.clone();
        Some(Box::new(Counted {
            inner,
            release: Some(Box::new(move || {
                let mut peers = peers.borrow_mut();
                if let Some(n) = peers.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        peers.remove(&key);
                    }
                }
            })),
        }))
    }

    fn start_factory(&self) {
        self.wrapped.start_factory();
    }

    fn stop_factory(&self) {
        self.wrapped.stop_factory();
    }
}

forward_client_factory!(LimitConnectionsByPeer);

// ------------------------------------------------------------------------------ throttling

/// A producer registered by a throttled protocol: paused while either its consumer (the
/// transport's buffer) or the write throttle wants it paused.
struct ThrottledProducer {
    inner: Rc<dyn Producer>,
    streaming: bool,
    consumer_paused: Cell<bool>,
    throttled: Cell<bool>,
    /// A pull producer asked for more while throttled: asked once the throttle lifts.
    pull_pending: Cell<bool>,
}

impl ThrottledProducer {
    fn throttle(&self) {
        if self.throttled.replace(true) {
            return;
        }
        if self.streaming && !self.consumer_paused.get() {
            self.inner.pause_producing();
        }
    }

    fn unthrottle(&self) {
        if !self.throttled.replace(false) {
            return;
        }
        if self.streaming {
            if !self.consumer_paused.get() {
                self.inner.resume_producing();
            }
        } else if self.pull_pending.replace(false) {
            self.inner.resume_producing();
        }
    }
}

impl Producer for ThrottledProducer {
    fn pause_producing(&self) {
        if !self.consumer_paused.replace(true) && !self.throttled.get() {
            self.inner.pause_producing();
        }
    }

    fn resume_producing(&self) {
        if !self.streaming {
            if self.throttled.get() {
                self.pull_pending.set(true);
            } else {
                self.inner.resume_producing();
            }
            return;
        }
        if self.consumer_paused.replace(false) && !self.throttled.get() {
            self.inner.resume_producing();
        }
    }

    fn stop_producing(&self) {
        self.inner.stop_producing();
    }
}

/// One throttled connection, shared by its protocol wrapper, its transport and the factory.
struct Conn {
    outer: Transport,
    /// The wrapped protocol paused reading itself.
    user_paused: Cell<bool>,
    /// The read throttle paused reading.
    read_throttled: Cell<bool>,
    producer: RefCell<Option<Rc<ThrottledProducer>>>,
}

impl Conn {
    fn throttle_reads(&self) {
        if !self.read_throttled.replace(true) && !self.user_paused.get() {
            self.outer.pause_producing();
        }
    }

    fn unthrottle_reads(&self) {
        if self.read_throttled.replace(false) && !self.user_paused.get() {
            self.outer.resume_producing();
        }
    }

    fn producer(&self) -> Option<Rc<ThrottledProducer>> {
        self.producer.borrow().clone()
    }
}

/// The shared state of a [`ThrottlingFactory`].
struct Throttle {
    max_connections: Cell<usize>,
    read_limit: Cell<Option<u64>>,
    write_limit: Cell<Option<u64>>,
    count: Cell<usize>,
    refused: Cell<u64>,
    read_this_second: Cell<u64>,
    written_this_second: Cell<u64>,
    conns: RefCell<HashMap<u64, Rc<Conn>>>,
    next_id: Cell<u64>,
    reads_throttled: Cell<bool>,
    writes_throttled: Cell<bool>,
    read_throttles: Cell<u64>,
    write_throttles: Cell<u64>,
    check_read: RefCell<Option<DelayedCall>>,
    check_write: RefCell<Option<DelayedCall>>,
    unthrottle_read: RefCell<Option<DelayedCall>>,
    unthrottle_write: RefCell<Option<DelayedCall>>,
}

const SECOND: Duration = Duration::from_secs(1);

fn cancel(slot: &RefCell<Option<DelayedCall>>) {
    let call = slot.borrow_mut().take();
    if let Some(c) = call {
        let _ = c.cancel();
    }
}

impl Throttle {
    fn snapshot(&self) -> Vec<Rc<Conn>> {
        self.conns.borrow().values().cloned().collect()
    }

    /// Starts the once-a-second checks if they are not running.
    fn start_checks(self: &Rc<Self>, r: &Reactor) {
        if self.read_limit.get().is_some() && self.check_read.borrow().is_none() {
            self.schedule_check(r, true);
        }
        if self.write_limit.get().is_some() && self.check_write.borrow().is_none() {
            self.schedule_check(r, false);
        }
    }

    fn schedule_check(self: &Rc<Self>, r: &Reactor, read: bool) {
        let me = self.clone();
        let call = r.call_later(SECOND, move |r| me.check(r, read));
        let slot = if read {
            &self.check_read
        } else {
            &self.check_write
        };
        *slot.borrow_mut() = Some(call);
    }

    /// The once-a-second check (Twisted's `checkReadBandwidth`/`checkWriteBandwidth`): over the
    /// limit, the direction is paused for as long as the excess takes at the limit.
    fn check(self: &Rc<Self>, r: &Reactor, read: bool) {
        let (limit, counted, unthrottle) = if read {
            (
                self.read_limit.get(),
                &self.read_this_second,
                &self.unthrottle_read,
            )
        } else {
            (
                self.write_limit.get(),
                &self.written_this_second,
                &self.unthrottle_write,
            )
        };
        let Some(limit) = limit else { return };
        let n = counted.replace(0);
        if n > limit {
            self.throttle(read);
            let pause = n as f64 / limit as f64 - 1.0;
            let me = self.clone();
            cancel(unthrottle);
            let call = r.call_later(Duration::from_secs_f64(pause), move |_| {
                let slot = if read {
                    &me.unthrottle_read
                } else {
                    &me.unthrottle_write
                };
                slot.borrow_mut().take();
                me.unthrottle(read);
            });
            *unthrottle.borrow_mut() = Some(call);
        }
        self.schedule_check(r, read);
    }

    fn throttle(&self, read: bool) {
        if read {
            self.reads_throttled.set(true);
            self.read_throttles.set(self.read_throttles.get() + 1);
            tracing::debug!("throttling reads");
            for c in self.snapshot() {
                c.throttle_reads();
            }
        } else {
            self.writes_throttled.set(true);
            self.write_throttles.set(self.write_throttles.get() + 1);
            tracing::debug!("throttling writes");
            for c in self.snapshot() {
                if let Some(p) = c.producer() {
                    p.throttle();
                }
            }
        }
    }

    fn unthrottle(&self, read: bool) {
        if read {
            self.reads_throttled.set(false);
            for c in self.snapshot() {
                c.unthrottle_reads();
            }
        } else {
            self.writes_throttled.set(false);
            for c in self.snapshot() {
                if let Some(p) = c.producer() {
                    p.unthrottle();
                }
            }
        }
    }

    fn release(&self, id: Option<u64>) {
        if let Some(id) = id {
            self.conns.borrow_mut().remove(&id);
        }
        self.count.set(self.count.get() - 1);
        if self.count.get() == 0 {
            // No connection left: no timer either (Twisted's `unregisterProtocol`).
            for slot in [
                &self.check_read,
                &self.check_write,
                &self.unthrottle_read,
                &self.unthrottle_write,
            ] {
                cancel(slot);
            }
            self.reads_throttled.set(false);
            self.writes_throttled.set(false);
            self.read_this_second.set(0);
            self.written_this_second.set(0);
        }
    }
}

/// The transport a throttled protocol sees: writes are counted, its producer is wrapped, and
/// its own pausing of reads is kept apart from the throttle's.
struct ThrottleTransport {
    conn: Rc<Conn>,
    sh: Rc<Throttle>,
}

impl ForwardingTransport for ThrottleTransport {
    fn wrapped(&self) -> &Transport {
        &self.conn.outer
    }

    fn write_sequence(&self, data: &[&[u8]]) {
        let n: usize = data.iter().map(|d| d.len()).sum();
        let w = &self.sh.written_this_second;
        w.set(w.get().saturating_add(n as u64));
        self.conn.outer.write_sequence(data);
    }

    fn write_shared(&self, data: Rc<[u8]>) {
        let w = &self.sh.written_this_second;
        w.set(w.get().saturating_add(data.len() as u64));
        self.conn.outer.write_shared(data);
    }

    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool) -> Result<(), Error> {
        if self.conn.producer.borrow().is_some() {
            return Err(Error::ProducerAlreadyRegistered);
        }
        let p = Rc::new(ThrottledProducer {
            inner: producer,
            streaming,
            consumer_paused: Cell::new(false),
            throttled: Cell::new(false),
            pull_pending: Cell::new(false),
        });
        *self.conn.producer.borrow_mut() = Some(p.clone());
        if self.sh.writes_throttled.get() {
            p.throttle();
        }
        let r = self.conn.outer.register_producer(p, streaming);
        if r.is_err() {
            self.conn.producer.borrow_mut().take();
        }
        r
    }

    fn unregister_producer(&self) {
        self.conn.producer.borrow_mut().take();
        self.conn.outer.unregister_producer();
    }

    fn pause_producing(&self) {
        if !self.conn.user_paused.replace(true) && !self.conn.read_throttled.get() {
            self.conn.outer.pause_producing();
        }
    }

    fn resume_producing(&self) {
        if self.conn.user_paused.replace(false) && !self.conn.read_throttled.get() {
            self.conn.outer.resume_producing();
        }
    }
}

/// A throttled connection's protocol (Twisted's `ThrottlingProtocol`).
struct ThrottlingProtocol {
    inner: Box<dyn Protocol>,
    sh: Rc<Throttle>,
    /// Our place in the factory's table, once connected.
    id: Option<u64>,
    transport: Option<Transport>,
    counted: bool,
}

impl ThrottlingProtocol {
    fn release(&mut self) {
        if std::mem::replace(&mut self.counted, false) {
            self.sh.release(self.id.take());
        }
    }

    fn forward<R>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut dyn Protocol, &mut Context<'_>) -> R,
    ) -> R {
        let t = self.transport.clone();
        let t = t.as_ref().unwrap_or(cx.transport());
        f(&mut *self.inner, &mut Context::new(cx.reactor(), t))
    }
}

impl Drop for ThrottlingProtocol {
    fn drop(&mut self) {
        self.release();
    }
}

impl Protocol for ThrottlingProtocol {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        let conn = Rc::new(Conn {
            outer: cx.transport().clone(),
            user_paused: Cell::new(false),
            read_throttled: Cell::new(false),
            producer: RefCell::new(None),
        });
        let id = self.sh.next_id.get();
        self.sh.next_id.set(id + 1);
        self.sh.conns.borrow_mut().insert(id, conn.clone());
        self.id = Some(id);
        if self.sh.reads_throttled.get() {
            conn.throttle_reads();
        }
        self.sh.start_checks(cx.reactor());
        self.transport = Some(Transport::new(Rc::new(ThrottleTransport {
            conn,
            sh: self.sh.clone(),
        })));
        self.forward(cx, |p, cx| p.connection_made(cx));
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        let r = &self.sh.read_this_second;
        r.set(r.get().saturating_add(data.len() as u64));
        self.forward(cx, |p, cx| p.data_received(cx, data));
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        self.release();
        self.forward(cx, |p, cx| p.connection_lost(cx, reason));
        self.transport = None;
    }

    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        self.forward(cx, |p, cx| p.read_connection_lost(cx))
    }

    fn write_connection_lost(&mut self, cx: &mut Context<'_>) {
        self.forward(cx, |p, cx| p.write_connection_lost(cx));
    }
}

/// Bandwidth limits and a connection limit shared by all the connections of a factory
/// (Twisted's `ThrottlingFactory`).
///
/// Bytes read and written by all its connections together are counted; once a second (while
/// any connection is open) each count is compared with its limit. Over the read limit, every
/// connection stops reading (the transport's `pause_producing`) for as long as the excess
/// takes at the limit (`read / limit - 1` seconds), then resumes. Over the write limit, every
/// connection's registered [`Producer`] is paused the same way (a pull producer is not asked
/// for more); writes made without a producer are counted but cannot be held back, as in
/// Twisted. A protocol that pauses its own reading, or whose producer its transport's buffer
/// paused, stays paused when the throttle lifts. Past `max_connections`, connections are
/// refused (closed at once, logged at `WARN`). No timer runs while no connection is open.
///
/// # Examples
/// Reading at most 1,000 bytes a second, on the fake clock:
/// ```
/// use std::rc::Rc;
/// use std::time::Duration;
/// use torsion::protocols::policies::ThrottlingFactory;
/// use torsion::testing::StringTransport;
/// use torsion::{Address, Context, Factory, Protocol, ProtocolFactory};
///
/// struct Sink;
/// impl Protocol for Sink {
///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
/// }
///
/// let f = ThrottlingFactory::new(Factory::for_protocol(|| Sink)).read_limit(1_000)?;
/// let t = StringTransport::new()?;
/// let clock = t.memory_reactor().unwrap();
/// let mut p = f.build_protocol(&Address::memory("peer")).unwrap();
/// t.connect(&mut *p);
/// t.receive(&mut *p, &[0; 3_000]); // three times the limit
/// clock.advance(Duration::from_secs(1)); // the check: paused for 3000/1000 - 1 = 2 s
/// assert!(t.reading_paused());
/// clock.advance(Duration::from_secs(2));
/// assert!(!t.reading_paused());
/// # t.lose(&mut *p, torsion::Reason::ConnectionDone);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "ThrottlingProtocol")]
pub struct ThrottlingFactory<F> {
    wrapped: Rc<F>,
    sh: Rc<Throttle>,
}

impl<F> fmt::Debug for ThrottlingFactory<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottlingFactory")
            .field("read_limit", &self.sh.read_limit.get())
            .field("write_limit", &self.sh.write_limit.get())
            .field("max_connections", &self.sh.max_connections.get())
            .field("connections", &self.sh.count.get())
            .finish_non_exhaustive()
    }
}

impl<F: ProtocolFactory> ThrottlingFactory<F> {
    /// Wraps `factory` with no limit set.
    pub fn new(factory: impl IntoFactory<F>) -> ThrottlingFactory<F> {
        ThrottlingFactory {
            wrapped: factory.into_factory(),
            sh: Rc::new(Throttle {
                max_connections: Cell::new(usize::MAX),
                read_limit: Cell::new(None),
                write_limit: Cell::new(None),
                count: Cell::new(0),
                refused: Cell::new(0),
                read_this_second: Cell::new(0),
                written_this_second: Cell::new(0),
                conns: RefCell::default(),
                next_id: Cell::new(0),
                reads_throttled: Cell::new(false),
                writes_throttled: Cell::new(false),
                read_throttles: Cell::new(0),
                write_throttles: Cell::new(0),
                check_read: RefCell::new(None),
                check_write: RefCell::new(None),
                unthrottle_read: RefCell::new(None),
                unthrottle_write: RefCell::new(None),
            }),
        }
    }
}

impl<F> ThrottlingFactory<F> {
    /// Reads at most `bytes_per_second` over all connections (checked every second).
    ///
    /// # Errors
    /// [`PolicyError::Zero`] for zero.
    pub fn read_limit(self, bytes_per_second: u64) -> Result<Self, PolicyError> {
        self.sh
            .read_limit
            .set(Some(nonzero("read limit", bytes_per_second)?));
        Ok(self)
    }

    /// Writes at most `bytes_per_second` over all connections (checked every second; enforced
    /// through the connections' registered producers).
    ///
    /// # Errors
    /// [`PolicyError::Zero`] for zero.
    pub fn write_limit(self, bytes_per_second: u64) -> Result<Self, PolicyError> {
        self.sh
            .write_limit
            .set(Some(nonzero("write limit", bytes_per_second)?));
        Ok(self)
    }

    /// At most `limit` connections at once.
    ///
    /// # Errors
    /// [`PolicyError::Zero`] for zero.
    pub fn max_connections(self, limit: usize) -> Result<Self, PolicyError> {
        self.sh
            .max_connections
            .set(nonzero("max connections", limit)?);
        Ok(self)
    }

    /// The wrapped factory.
    pub fn wrapped(&self) -> &Rc<F> {
        &self.wrapped
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.sh.count.get()
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.sh.refused.get()
    }

    /// True while reads are paused by the read limit.
    pub fn reads_throttled(&self) -> bool {
        self.sh.reads_throttled.get()
    }

    /// True while producers are paused by the write limit.
    pub fn writes_throttled(&self) -> bool {
        self.sh.writes_throttled.get()
    }

    /// How many times reads were throttled so far.
    pub fn read_throttles(&self) -> u64 {
        self.sh.read_throttles.get()
    }

    /// How many times writes were throttled so far.
    pub fn write_throttles(&self) -> u64 {
        self.sh.write_throttles.get()
    }
}

impl<F: ProtocolFactory> ProtocolFactory for ThrottlingFactory<F> {
    fn build_protocol(&self, addr: &Address) -> Option<Box<dyn Protocol>> {
        let max = self.sh.max_connections.get();
        if self.sh.count.get() >= max {
            self.sh.refused.set(self.sh.refused.get() + 1);
            tracing::warn!(
                peer = %addr,
                limit = max,
                "connection refused: the limit of {max} connections is reached"
            );
            return None;
        }
        let inner = self.wrapped.build_protocol(addr)?;
        self.sh.count.set(self.sh.count.get() + 1);
        Some(Box::new(ThrottlingProtocol {
            inner,
            sh: self.sh.clone(),
            id: None,
            transport: None,
            counted: true,
        }))
    }

    fn start_factory(&self) {
        self.wrapped.start_factory();
    }

    fn stop_factory(&self) {
        self.wrapped.stop_factory();
    }
}

forward_client_factory!(ThrottlingFactory);
