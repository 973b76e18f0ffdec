//! Reconnecting clients (Twisted's `ReconnectingClientFactory`): a client factory that connects
//! again, with an exponential back-off, whenever its connection attempt fails or its connection
//! is lost.
//!
//! [`ReconnectingClientFactory`] wraps the user's [`ClientFactory`]: the user's protocol is
//! unchanged, the user's factory still gets every client callback, and the wrapper schedules the
//! next attempt on the reactor's clock (or any [`ReactorTime`], such as the testing kit's
//! [`Clock`](crate::testing::Clock)).
//!
//! # The delay sequence
//! As Twisted's: the delay starts at [`initial_delay`](ReconnectingClientFactory::initial_delay)
//! (1 s) and is multiplied by [`factor`](ReconnectingClientFactory::factor) (e) *before* each
//! retry, capped at [`max_delay`](ReconnectingClientFactory::max_delay) (3600 s); the first retry
//! therefore waits e ≈ 2.718 s, the second e² ≈ 7.39 s, and so on. Then, with a non-zero
//! [`jitter`](ReconnectingClientFactory::jitter) (0.11962656472), the delay is replaced by a
//! normal variate of mean `delay` and standard deviation `delay * jitter` (drawn from an
//! injectable [`random source`](ReconnectingClientFactory::random_source), a small seeded
//! generator by default), and that jittered value is what the next multiplication starts from.
//! A jittered delay below zero is taken as zero. After
//! [`max_retries`](ReconnectingClientFactory::max_retries) consecutive retries the factory gives
//! up (logged with `tracing`). A connection that is made resets the delay and the retry count
//! ([`reset_delay`](ReconnectingClientFactory::reset_delay), which Twisted leaves to the user's
//! protocol).
//!
//! # Examples
//! The delays of the first retries, with the jitter off, on the testing kit's fake clock:
//! ```
//! use std::rc::Rc;
//! use std::time::Duration;
//! use torsion::protocol::reconnect::ReconnectingClientFactory;
//! use torsion::testing::MemoryReactor;
//! use torsion::{ClientFactory, ConnectError, Context, Factory, Protocol, ReactorTcp};
//!
//! struct Quiet;
//! impl Protocol for Quiet {
//!     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
//! }
//!
//! let mr = MemoryReactor::new()?;
//! let factory = Rc::new(
//!     ReconnectingClientFactory::new(mr.reactor(), Factory::for_protocol(|| Quiet))
//!         .jitter(0.0)?,
//! );
//! let connector = mr.connect_tcp_to("example.com", 79, factory.clone(), Duration::from_secs(30));
//!
//! // The attempt fails (played through the memory reactor's record of it): the next one is
//! // due e seconds later.
//! mr.tcp_clients()[0].fail(ConnectError::Refused);
//! assert!((factory.delay() - std::f64::consts::E).abs() < 1e-12);
//! mr.advance(Duration::from_millis(2718));
//! assert!(!connector.connecting());
//! mr.advance(Duration::from_millis(1));
//! assert!(connector.connecting()); // retried
//!
//! // It fails too: the next is due e² seconds later, unless we stop trying.
//! mr.tcp_clients()[0].fail(ConnectError::Refused);
//! let retry = factory.pending_retry().unwrap();
//! factory.stop_trying(); // cancels the pending retry (or the attempt in progress)
//! assert!(retry.cancelled());
//! mr.advance(Duration::from_secs(3600));
//! assert!(!connector.connecting());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::interfaces::{
    Address, ClientFactory, Connector, Context, HalfClose, Protocol, ProtocolFactory,
};
use crate::reactor::Inner;
use crate::time::{DelayedCall, ReactorTime};
use crate::{ConnectError, Reactor, Reason};

use super::IntoFactory;

/// Twisted's default initial delay, in seconds.
pub const DEFAULT_INITIAL_DELAY: f64 = 1.0;
/// Twisted's default factor (e).
pub const DEFAULT_FACTOR: f64 = std::f64::consts::E;
/// Twisted's default jitter (the standard deviation, as a fraction of the delay).
pub const DEFAULT_JITTER: f64 = 0.119_626_564_72;
/// Twisted's default maximum delay, in seconds (one hour).
pub const DEFAULT_MAX_DELAY: f64 = 3600.0;

/// The longest delay accepted anywhere (a century, in seconds): beyond it a timer deadline
/// cannot be represented.
const LONGEST: f64 = 100.0 * 365.0 * 24.0 * 3600.0;

/// A setting of a [`ReconnectingClientFactory`] was out of range.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ReconnectError {
    /// A number was NaN or infinite.
    NotFinite {
        /// The setting.
        setting: &'static str,
        /// The value refused.
        value: f64,
    },
    /// A delay or jitter was negative.
    Negative {
        /// The setting.
        setting: &'static str,
        /// The value refused.
        value: f64,
    },
    /// The factor was below 1: the delay would shrink with every retry.
    FactorBelowOne(f64),
    /// The jitter was above 1 (a standard deviation larger than the delay itself).
    JitterAboveOne(f64),
    /// A delay was longer than a century.
    TooLong {
        /// The setting.
        setting: &'static str,
        /// The value refused.
        value: f64,
    },
}

impl fmt::Display for ReconnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReconnectError::NotFinite { setting, value } => {
                write!(f, "{setting} must be a finite number, not {value}")
            }
            ReconnectError::Negative { setting, value } => {
                write!(f, "{setting} must not be negative, not {value}")
            }
            ReconnectError::FactorBelowOne(v) => {
                write!(
                    f,
                    "factor must be at least 1 (the delay must not shrink), not {v}"
                )
            }
            ReconnectError::JitterAboveOne(v) => {
                write!(f, "jitter must be between 0 and 1, not {v}")
            }
            ReconnectError::TooLong { setting, value } => {
                write!(f, "{setting} of {value} s is longer than a century")
            }
        }
    }
}

impl std::error::Error for ReconnectError {}

fn check_seconds(setting: &'static str, value: f64) -> Result<f64, ReconnectError> {
    if !value.is_finite() {
        Err(ReconnectError::NotFinite { setting, value })
    } else if value < 0.0 {
        Err(ReconnectError::Negative { setting, value })
    } else if value > LONGEST {
        Err(ReconnectError::TooLong { setting, value })
    } else {
        Ok(value)
    }
}

/// A small, fast, seedable pseudo-random generator (SplitMix64): the default random source of
/// the jitter, and a way to make a jittered sequence reproducible in tests. Not for anything
/// that must be unpredictable.
///
/// # Examples
/// ```
/// use torsion::protocol::reconnect::SplitMix64;
///
/// let mut a = SplitMix64::new(7);
/// let mut b = SplitMix64::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let u = a.next_f64();
/// assert!((0.0..1.0).contains(&u));
/// ```
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator started from `seed` (the same seed gives the same sequence).
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// A generator seeded from the clock and an address of this process: differs from run to
    /// run, so that many clients restarted together do not retry in step.
    pub fn from_entropy() -> SplitMix64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let local = 0u8;
        let addr = &local as *const u8 as usize as u64;
        SplitMix64::new(nanos ^ addr.rotate_left(32) ^ u64::from(std::process::id()))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform number in `[0, 1)` (53 random bits).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A standard normal variate from two uniform numbers in `[0, 1)` (Box–Muller). Values outside
/// `[0, 1)` (or NaN) from a user's source are folded into it.
fn standard_normal(u1: f64, u2: f64) -> f64 {
    let fold = |u: f64| {
        if u.is_finite() {
            u.rem_euclid(1.0)
        } else {
            0.0
        }
    };
    // 1 - u is in (0, 1]: its logarithm is finite.
    let r = (-2.0 * (1.0 - fold(u1)).ln()).sqrt();
    r * (std::f64::consts::TAU * fold(u2)).cos()
}

type Random = Box<dyn FnMut() -> f64>;

/// Where the retry timers go: the reactor (held weakly, so that a factory kept by the reactor's
/// connector does not keep the reactor alive) or another clock.
enum TimeSource {
    Reactor(Weak<Inner>),
    Other(Rc<dyn ReactorTime>),
}

impl TimeSource {
    fn schedule(&self, delay: Duration, f: Box<dyn FnOnce()>) -> Option<DelayedCall> {
        match self {
            TimeSource::Reactor(w) => {
                let r = Reactor::from_inner(w.upgrade()?);
                Some(r.schedule_boxed(delay, f))
            }
            TimeSource::Other(t) => Some(t.schedule_boxed(delay, f)),
        }
    }
}

/// The settings and the state, shared with the protocols the factory builds.
struct State {
    initial_delay: Cell<f64>,
    factor: Cell<f64>,
    jitter: Cell<f64>,
    max_delay: Cell<f64>,
    max_retries: Cell<Option<u32>>,
    delay: Cell<f64>,
    retries: Cell<u32>,
    continue_trying: Cell<bool>,
    /// The connector of the attempt in progress (held only while connecting: the connector
    /// holds this factory, so holding it longer would make a cycle).
    connecting: RefCell<Option<Connector>>,
    /// The pending retry (its closure holds the connector).
    call: RefCell<Option<DelayedCall>>,
    random: RefCell<Random>,
    time: TimeSource,
    connections: Cell<u64>,
    gave_up: Cell<bool>,
    on_give_up: RefCell<Option<GiveUpHook>>,
}

type GiveUpHook = Rc<dyn Fn(&Connector)>;

impl State {
    fn reset_delay(&self) {
        self.delay.set(self.initial_delay.get());
        self.retries.set(0);
        self.continue_trying.set(true);
        self.gave_up.set(false);
    }

    fn cancel_call(&self) {
        let call = self.call.borrow_mut().take();
        if let Some(c) = call {
            let _ = c.cancel();
        }
    }

    fn retry(self: &Rc<Self>, connector: &Connector) {
        if !self.continue_trying.get() {
            return;
        }
        let retries = self.retries.get().saturating_add(1);
        self.retries.set(retries);
        if let Some(max) = self.max_retries.get() {
            if retries > max {
                tracing::info!(
                    destination = %connector.destination(),
                    retries = max,
                    "abandoning the connection after {max} retries"
                );
                self.gave_up.set(true);
                let hook = self.on_give_up.borrow().clone();
                if let Some(h) = hook {
                    h(connector);
                }
                return;
            }
        }
        let mut delay = (self.delay.get() * self.factor.get()).min(self.max_delay.get());
        let jitter = self.jitter.get();
        if jitter > 0.0 {
            let (u1, u2) = {
                let mut rnd = self.random.borrow_mut();
                (rnd(), rnd())
            };
            delay += delay * jitter * standard_normal(u1, u2);
        }
        // A jittered delay can fall below zero (far in the tail) or, from a user's source that
        // returns nonsense, be NaN: neither is a time to wait.
        let delay = if delay.is_finite() {
            delay.clamp(0.0, LONGEST)
        } else {
            self.max_delay.get()
        };
        self.delay.set(delay);
        tracing::info!(
            destination = %connector.destination(),
            retry = retries,
            "will retry in {delay:.3} s"
        );
        let weak = Rc::downgrade(self);
        let c = connector.clone();
        let call = self.time.schedule(
            Duration::from_secs_f64(delay),
            Box::new(move || {
                if let Some(st) = weak.upgrade() {
                    st.call.borrow_mut().take();
                }
                c.connect();
            }),
        );
        self.cancel_call();
        *self.call.borrow_mut() = call;
    }
}

/// A client factory that reconnects with an exponential back-off (Twisted's
/// `ReconnectingClientFactory`): see the [module documentation](self) for the delay sequence.
///
/// Settings are made with the consuming builder methods, each range-checked
/// ([`ReconnectError`]); [`stop_trying`](Self::stop_trying),
/// [`continue_trying`](Self::continue_trying) and [`reset_delay`](Self::reset_delay) work on the
/// shared factory (`Rc`) while it runs.
///
/// # Examples
/// ```no_run
/// use std::rc::Rc;
/// use std::time::Duration;
/// use torsion::protocol::reconnect::ReconnectingClientFactory;
/// use torsion::{Context, Factory, Protocol, Reactor};
///
/// struct Printer;
/// impl Protocol for Printer {
///     fn data_received(&mut self, _: &mut Context<'_>, data: &[u8]) {
///         print!("{}", String::from_utf8_lossy(data));
///     }
/// }
///
/// let reactor = Reactor::new()?;
/// let factory = ReconnectingClientFactory::new(&reactor, Factory::for_protocol(|| Printer))
///     .initial_delay(0.5)?
///     .max_delay(60.0)?
///     .max_retries(Some(10));
/// reactor.connect_tcp("localhost", 8000, Rc::new(factory), Duration::from_secs(30));
/// reactor.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ReconnectingClientFactory<F> {
    wrapped: Rc<F>,
    st: Rc<State>,
}

impl<F> fmt::Debug for ReconnectingClientFactory<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectingClientFactory")
            .field("delay", &self.st.delay.get())
            .field("retries", &self.st.retries.get())
            .field("continue_trying", &self.st.continue_trying.get())
            .finish_non_exhaustive()
    }
}

impl<F: ClientFactory + 'static> ReconnectingClientFactory<F> {
    /// Wraps `factory`; retries are scheduled on `reactor` (held weakly: a factory does not
    /// keep its reactor alive). Twisted's defaults; a jitter drawn from a generator seeded from
    /// the clock.
    pub fn new(reactor: &Reactor, factory: impl IntoFactory<F>) -> ReconnectingClientFactory<F> {
        Self::build(TimeSource::Reactor(Rc::downgrade(&reactor.inner)), factory)
    }

    /// Wraps `factory`; retries are scheduled on `clock` (a [`testing::Clock`], for example).
    ///
    /// [`testing::Clock`]: crate::testing::Clock
    pub fn with_clock(
        clock: Rc<dyn ReactorTime>,
        factory: impl IntoFactory<F>,
    ) -> ReconnectingClientFactory<F> {
        Self::build(TimeSource::Other(clock), factory)
    }

    fn build(time: TimeSource, factory: impl IntoFactory<F>) -> ReconnectingClientFactory<F> {
        let mut rng = SplitMix64::from_entropy();
        ReconnectingClientFactory {
            wrapped: factory.into_factory(),
            st: Rc::new(State {
                initial_delay: Cell::new(DEFAULT_INITIAL_DELAY),
                factor: Cell::new(DEFAULT_FACTOR),
                jitter: Cell::new(DEFAULT_JITTER),
                max_delay: Cell::new(DEFAULT_MAX_DELAY),
                max_retries: Cell::new(None),
                delay: Cell::new(DEFAULT_INITIAL_DELAY),
                retries: Cell::new(0),
                continue_trying: Cell::new(true),
                connecting: RefCell::new(None),
                call: RefCell::new(None),
                random: RefCell::new(Box::new(move || rng.next_f64())),
                time,
                connections: Cell::new(0),
                gave_up: Cell::new(false),
                on_give_up: RefCell::new(None),
            }),
        }
    }
}

impl<F> ReconnectingClientFactory<F> {
    /// The delay the back-off starts from, in seconds (default 1.0; the first retry waits
    /// `initial_delay * factor`). Also sets the current delay.
    ///
    /// # Errors
    /// [`ReconnectError`] for a negative, NaN, infinite or over-a-century value.
    pub fn initial_delay(self, seconds: f64) -> Result<Self, ReconnectError> {
        let s = check_seconds("initial_delay", seconds)?;
        self.st.initial_delay.set(s);
        self.st.delay.set(s);
        Ok(self)
    }

    /// The factor the delay is multiplied by before each retry (default e).
    ///
    /// # Errors
    /// [`ReconnectError::FactorBelowOne`] below 1, [`ReconnectError::NotFinite`] for NaN or
    /// infinity.
    pub fn factor(self, factor: f64) -> Result<Self, ReconnectError> {
        if !factor.is_finite() {
            return Err(ReconnectError::NotFinite {
                setting: "factor",
                value: factor,
            });
        }
        if factor < 1.0 {
            return Err(ReconnectError::FactorBelowOne(factor));
        }
        self.st.factor.set(factor);
        Ok(self)
    }

    /// The jitter: the standard deviation of the randomised delay, as a fraction of the delay
    /// (default 0.11962656472; 0 turns it off).
    ///
    /// # Errors
    /// [`ReconnectError`] outside `[0, 1]` or for NaN.
    pub fn jitter(self, jitter: f64) -> Result<Self, ReconnectError> {
        if !jitter.is_finite() {
            return Err(ReconnectError::NotFinite {
                setting: "jitter",
                value: jitter,
            });
        }
        if jitter < 0.0 {
            return Err(ReconnectError::Negative {
                setting: "jitter",
                value: jitter,
            });
        }
        if jitter > 1.0 {
            return Err(ReconnectError::JitterAboveOne(jitter));
        }
        self.st.jitter.set(jitter);
        Ok(self)
    }

    /// The longest delay before jitter, in seconds (default 3600).
    ///
    /// # Errors
    /// [`ReconnectError`] for a negative, NaN, infinite or over-a-century value.
    pub fn max_delay(self, seconds: f64) -> Result<Self, ReconnectError> {
        let s = check_seconds("max_delay", seconds)?;
        self.st.max_delay.set(s);
        Ok(self)
    }

    /// Gives up after this many consecutive retries (`None`, the default: never).
    pub fn max_retries(self, retries: Option<u32>) -> Self {
        self.st.max_retries.set(retries);
        self
    }

    /// Where the jitter's uniform numbers in `[0, 1)` come from (default: a [`SplitMix64`]
    /// seeded from the clock). Two are drawn per retry; the normal variate is made from them
    /// with the Box–Muller transform (`sqrt(-2 ln(1 - u1)) * cos(2π u2)`).
    pub fn random_source(self, source: impl FnMut() -> f64 + 'static) -> Self {
        *self.st.random.borrow_mut() = Box::new(source);
        self
    }

    /// Runs `hook(connector)` when the factory gives up after
    /// [`max_retries`](Self::max_retries) (to stop the reactor, or report the failure).
    pub fn on_give_up(self, hook: impl Fn(&Connector) + 'static) -> Self {
        *self.st.on_give_up.borrow_mut() = Some(Rc::new(hook));
        self
    }

    /// True once the factory gave up after [`max_retries`](Self::max_retries) (until
    /// [`reset_delay`](Self::reset_delay) or [`continue_trying`](Self::continue_trying)).
    pub fn gave_up(&self) -> bool {
        self.st.gave_up.get()
    }

    /// The wrapped factory.
    pub fn wrapped(&self) -> &Rc<F> {
        &self.wrapped
    }

    /// The current delay in seconds: the one the pending retry waits, or the one the next
    /// multiplication starts from.
    pub fn delay(&self) -> f64 {
        self.st.delay.get()
    }

    /// Consecutive retries so far (0 after a connection is made).
    pub fn retries(&self) -> u32 {
        self.st.retries.get()
    }

    /// Connections made so far.
    pub fn connections(&self) -> u64 {
        self.st.connections.get()
    }

    /// False after [`stop_trying`](Self::stop_trying).
    pub fn trying(&self) -> bool {
        self.st.continue_trying.get()
    }

    /// The pending retry, while one waits.
    pub fn pending_retry(&self) -> Option<DelayedCall> {
        self.st.call.borrow().clone().filter(DelayedCall::active)
    }

    /// Back to the initial delay and no retries, and trying again after a
    /// [`stop_trying`](Self::stop_trying) (Twisted's `resetDelay`). A connection that is made
    /// resets the delay and retries for you (but does not undo a `stop_trying`).
    pub fn reset_delay(&self) {
        self.st.reset_delay();
    }

    /// Stops reconnecting (Twisted's `stopTrying`): cancels the pending retry and the
    /// connection attempt in progress (its failure, [`ConnectError::Cancelled`], still reaches
    /// the wrapped factory). An established connection is left alone; when it ends, no retry
    /// follows.
    pub fn stop_trying(&self) {
        self.st.cancel_call();
        self.st.continue_trying.set(false);
        let connecting = self.st.connecting.borrow_mut().take();
        if let Some(c) = connecting {
            c.stop_connecting();
        }
    }

    /// Starts trying again after [`stop_trying`](Self::stop_trying): resets the delay and
    /// starts an attempt on `connector` now (it does nothing if `connector` is connected or
    /// connecting).
    pub fn continue_trying(&self, connector: &Connector) {
        self.st.reset_delay();
        connector.connect();
    }
}

/// The wrapper around each protocol: a made connection resets the back-off.
struct Connected {
    inner: Box<dyn Protocol>,
    st: Rc<State>,
}

impl Protocol for Connected {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        self.st.connecting.borrow_mut().take();
        self.st.reset_delay_if_trying();
        self.st.connections.set(self.st.connections.get() + 1);
        self.inner.connection_made(cx);
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        self.inner.data_received(cx, data);
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        self.inner.connection_lost(cx, reason);
    }

    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        self.inner.read_connection_lost(cx)
    }

    fn write_connection_lost(&mut self, cx: &mut Context<'_>) {
        self.inner.write_connection_lost(cx);
    }
}

impl State {
    /// A made connection resets the back-off, but does not undo a `stop_trying`.
    fn reset_delay_if_trying(&self) {
        let trying = self.continue_trying.get();
        self.reset_delay();
        self.continue_trying.set(trying);
    }
}

impl<F: ClientFactory> ProtocolFactory for ReconnectingClientFactory<F> {
    fn build_protocol(&self, addr: &Address) -> Option<Box<dyn Protocol>> {
        let inner = self.wrapped.build_protocol(addr)?;
        Some(Box::new(Connected {
            inner,
            st: self.st.clone(),
        }))
    }

    fn start_factory(&self) {
        self.wrapped.start_factory();
    }

    fn stop_factory(&self) {
        self.wrapped.stop_factory();
    }
}

impl<F: ClientFactory> ClientFactory for ReconnectingClientFactory<F> {
    fn started_connecting(&self, connector: &Connector) {
        if self.st.continue_trying.get() {
            *self.st.connecting.borrow_mut() = Some(connector.clone());
        }
        self.wrapped.started_connecting(connector);
    }

    fn client_connection_failed(&self, connector: &Connector, reason: ConnectError) {
        self.st.connecting.borrow_mut().take();
        let shutdown = matches!(reason, ConnectError::ReactorShutdown);
        self.wrapped.client_connection_failed(connector, reason);
        if !shutdown {
            self.st.retry(connector);
        }
    }

    fn client_connection_lost(&self, connector: &Connector, reason: Reason) {
        self.st.connecting.borrow_mut().take();
        let shutdown = matches!(reason, Reason::ReactorShutdown);
        self.wrapped.client_connection_lost(connector, reason);
        if !shutdown {
            self.st.retry(connector);
        }
    }
}

impl<F> Drop for ReconnectingClientFactory<F> {
    fn drop(&mut self) {
        self.st.cancel_call();
    }
}
