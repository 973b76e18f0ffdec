//! Long-lived client connections (Twisted's `ClientService`): one connection kept up through a
//! [`ClientEndpoint`], reconnecting with exponential backoff, and handed to whoever asks.
//!
//! # Examples
//! On the memory reactor, where the test plays the connections and moves the clock:
//! ```
//! use std::time::Duration;
//! use torsion::endpoints::TcpClientEndpoint;
//! use torsion::service::ClientService;
//! use torsion::testing::MemoryReactor;
//! use torsion::{ConnectError, Context, Factory, Protocol};
//!
//! struct Quiet;
//! impl Protocol for Quiet {
//!     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
//! }
//!
//! let mr = MemoryReactor::new()?;
//! let service = ClientService::new(mr.reactor(), TcpClientEndpoint::new(&mr, "10.0.0.1", 7), |_| Quiet);
//! service.start();
//! let connected = service.when_connected();
//!
//! mr.tcp_clients()[0].fail(ConnectError::Refused); // the first attempt fails...
//! mr.advance(Duration::from_secs_f64(std::f64::consts::E)); // ...the retry comes e seconds later
//! let pump = mr.tcp_clients()[1].accept(&Factory::for_protocol(|| Quiet)).unwrap();
//! assert!(connected.try_result().unwrap().is_ok());
//!
//! let stopped = service.stop(); // closes the connection...
//! pump.flush();                 // ...which goes down
//! assert!(stopped.try_result().unwrap().is_ok());
//! # Ok::<(), torsion::Error>(())
//! ```

use std::cell::RefCell;
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::defer::Resolver;
use crate::endpoints::{ClientEndpoint, Connected, SharedProtocol};
use crate::interfaces::{Address, Context, HalfClose, Protocol, ProtocolFactory};
use crate::{Deferred, DelayedCall, Failure, Reactor, Reason};

/// How long to wait before each retry: `min(initial × factor^n, max)` after `n` failures in a
/// row (a lost connection counts as one failure). The defaults are Twisted's
/// `ReconnectingClientFactory`'s: 1 s, e, one hour; so the first retry comes after e ≈ 2.7 s.
///
/// ```
/// use std::time::Duration;
/// use torsion::service::Backoff;
///
/// let b = Backoff::new(Duration::from_secs(1), 2.0, Duration::from_secs(10)).unwrap();
/// assert_eq!(b.delay(1), Duration::from_secs(2));
/// assert_eq!(b.delay(3), Duration::from_secs(8));
/// assert_eq!(b.delay(4), Duration::from_secs(10)); // capped
/// assert!(Backoff::new(Duration::from_secs(1), 0.5, Duration::from_secs(10)).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    factor: f64,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            factor: std::f64::consts::E,
            max: Duration::from_secs(3600),
        }
    }
}

/// A [`Backoff`] that makes no sense (a factor below 1 or not finite, a maximum below the
/// initial delay, or a maximum over a day).
#[derive(Debug, Clone, PartialEq)]
pub struct BadBackoff(pub String);

impl fmt::Display for BadBackoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad backoff policy: {}", self.0)
    }
}

impl std::error::Error for BadBackoff {}

impl Backoff {
    /// A policy; `factor` at least 1, `initial <= max <= 1 day`.
    ///
    /// # Errors
    /// [`BadBackoff`] naming the bad number.
    pub fn new(initial: Duration, factor: f64, max: Duration) -> Result<Backoff, BadBackoff> {
        if !factor.is_finite() || factor < 1.0 {
            return Err(BadBackoff(format!("factor {factor} is not a number >= 1")));
        }
        if initial > max {
            return Err(BadBackoff(format!(
                "initial delay {initial:?} is above the maximum {max:?}"
            )));
        }
        if max > Duration::from_secs(86_400) {
            return Err(BadBackoff(format!("maximum delay {max:?} is over a day")));
        }
        Ok(Backoff {
            initial,
            factor,
            max,
        })
    }

    /// The delay after `failures` failures in a row.
    pub fn delay(&self, failures: u32) -> Duration {
        let secs = self.initial.as_secs_f64() * self.factor.powi(failures.min(1_000) as i32);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }
}

/// Why a [`ClientService::when_connected`] Deferred failed: the service was stopped (or
/// never started and then stopped) before a connection was up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceStopped;

impl fmt::Display for ServiceStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the client service was stopped")
    }
}

impl std::error::Error for ServiceStopped {}

enum Phase<P> {
    /// Never started: `when_connected` waits for the first connection.
    Init,
    Stopped,
    Connecting(Deferred<()>),
    Waiting(DelayedCall),
    Connected(Connected<P>),
    /// `stop` was called; waiting for the connection or the attempt to end.
    Disconnecting,
}

struct Waiter<P> {
    fire: Resolver<Connected<P>>,
    /// Fail after this many more failed attempts (Twisted's `failAfterFailures`).
    fail_after: Option<u32>,
}

struct State<P> {
    phase: Phase<P>,
    failures: u32,
    waiters: Vec<Waiter<P>>,
    stop_waiters: Vec<Resolver<()>>,
    /// `start` was called while stopping: connect again once down.
    restart: bool,
}

type Make<P> = Box<dyn Fn(&Address) -> P>;

struct Inner<P: 'static> {
    me: Weak<Inner<P>>,
    reactor: Reactor,
    endpoint: Box<dyn ClientEndpoint>,
    make: Make<P>,
    backoff: Backoff,
    st: RefCell<State<P>>,
}

/// Keeps one connection up through a [`ClientEndpoint`] (Twisted's `ClientService`).
///
/// * [`start`](Self::start) connects; a failed attempt, or a lost connection, is retried after
///   the [`Backoff`] delay (failures in a row count up; a connection resets the count).
/// * [`when_connected`](Self::when_connected) gives a Deferred of the [`Connected`] protocol:
///   at once while connected, else when the next connection is up; it fails with
///   [`ServiceStopped`] when the service stops first.
/// * [`stop`](Self::stop) cancels a pending attempt or retry, closes the connection, and
///   gives a Deferred that fires once it is down.
///
/// Clones are the same service. A started service keeps itself alive (through its retry timer
/// or its connection) until stopped.
///
/// See the [module](self) for an example.
pub struct ClientService<P: 'static> {
    inner: Rc<Inner<P>>,
}

impl<P: 'static> Clone for ClientService<P> {
    fn clone(&self) -> Self {
        ClientService {
            inner: self.inner.clone(),
        }
    }
}

impl<P: 'static> fmt::Debug for ClientService<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.inner.st.borrow().phase {
            Phase::Init => "not started",
            Phase::Stopped => "stopped",
            Phase::Connecting(_) => "connecting",
            Phase::Waiting(_) => "waiting",
            Phase::Connected(_) => "connected",
            Phase::Disconnecting => "disconnecting",
        };
        f.debug_struct("ClientService")
            .field("endpoint", &self.inner.endpoint.describe())
            .field("phase", &phase)
            .field("failures", &self.inner.st.borrow().failures)
            .finish()
    }
}

impl<P: Protocol + 'static> ClientService<P> {
    /// A stopped service that connects through `endpoint`, building each connection's protocol
    /// with `make(peer)`, with the default [`Backoff`].
    #[doc(alias = "ClientService")]
    pub fn new<E, F>(reactor: &Reactor, endpoint: E, make: F) -> ClientService<P>
    where
        E: ClientEndpoint + 'static,
        F: Fn(&Address) -> P + 'static,
    {
        ClientService::with_backoff(reactor, endpoint, make, Backoff::default())
    }

    /// As [`new`](Self::new), with `backoff`.
    pub fn with_backoff<E, F>(
        reactor: &Reactor,
        endpoint: E,
        make: F,
        backoff: Backoff,
    ) -> ClientService<P>
    where
        E: ClientEndpoint + 'static,
        F: Fn(&Address) -> P + 'static,
    {
        ClientService {
            inner: Rc::new_cyclic(|me| Inner {
                me: me.clone(),
                reactor: reactor.clone(),
                endpoint: Box::new(endpoint),
                make: Box::new(make),
                backoff,
                st: RefCell::new(State {
                    phase: Phase::Init,
                    failures: 0,
                    waiters: Vec::new(),
                    stop_waiters: Vec::new(),
                    restart: false,
                }),
            }),
        }
    }

    /// Starts connecting (Twisted's `startService`). Does nothing when started; while
    /// stopping, connects again once the old connection is down.
    pub fn start(&self) {
        let go = {
            let mut st = self.inner.st.borrow_mut();
            match st.phase {
                Phase::Init | Phase::Stopped => true,
                Phase::Disconnecting => {
                    st.restart = true;
                    st.failures = 0;
                    false
                }
                _ => false,
            }
        };
        if go {
            self.inner.connect();
        }
    }

    /// Stops (Twisted's `stopService`): cancels the attempt or the retry, closes the
    /// connection. The Deferred fires once nothing is left; `when_connected` waiters fail with
    /// [`ServiceStopped`].
    pub fn stop(&self) -> Deferred<()> {
        let inner = &self.inner;
        let mut st = inner.st.borrow_mut();
        st.restart = false;
        match std::mem::replace(&mut st.phase, Phase::Disconnecting) {
            Phase::Stopped => {
                st.phase = Phase::Stopped;
                Deferred::succeed(())
            }
            Phase::Init => {
                st.phase = Phase::Stopped;
                drop(st);
                inner.fail_waiters();
                Deferred::succeed(())
            }
            Phase::Waiting(call) => {
                st.phase = Phase::Stopped;
                drop(st);
                let _ = call.cancel();
                inner.fail_waiters();
                Deferred::succeed(())
            }
            Phase::Connecting(attempt) => {
                let (d, fire) = Deferred::new();
                st.stop_waiters.push(fire);
                drop(st);
                attempt.cancel(); // its outcome (Cancelled) finishes the stop
                d
            }
            Phase::Connected(c) => {
                let (d, fire) = Deferred::new();
                st.stop_waiters.push(fire);
                drop(st);
                c.transport().lose_connection();
                d
            }
            Phase::Disconnecting => {
                let (d, fire) = Deferred::new();
                st.stop_waiters.push(fire);
                d
            }
        }
    }

    /// The connected protocol: at once while connected, else when a connection is up
    /// (Twisted's `whenConnected`; asked before `start`, it waits for the first connection).
    /// Fails with [`ServiceStopped`] if the service stops first (at once when it was stopped).
    pub fn when_connected(&self) -> Deferred<Connected<P>> {
        self.when_connected_within(None)
    }

    /// As [`when_connected`](Self::when_connected), but fails with the attempt's failure once
    /// `failures` more attempts in a row failed (Twisted's `failAfterFailures`; `Some(0)` is
    /// taken as 1).
    pub fn when_connected_within(&self, failures: Option<u32>) -> Deferred<Connected<P>> {
        let mut st = self.inner.st.borrow_mut();
        match &st.phase {
            Phase::Connected(c) => Deferred::succeed(c.clone()),
            Phase::Stopped => Deferred::fail(ServiceStopped),
            _ => {
                let (d, fire) = Deferred::new();
                st.waiters.push(Waiter {
                    fire,
                    fail_after: failures.map(|n| n.max(1)),
                });
                d
            }
        }
    }

    /// The current connection, if one is up.
    pub fn connection(&self) -> Option<Connected<P>> {
        match &self.inner.st.borrow().phase {
            Phase::Connected(c) => Some(c.clone()),
            _ => None,
        }
    }

    /// Failed attempts (and lost connections) in a row so far.
    pub fn failures(&self) -> u32 {
        self.inner.st.borrow().failures
    }

    /// True from `start` until `stop`.
    pub fn running(&self) -> bool {
        !matches!(
            self.inner.st.borrow().phase,
            Phase::Init | Phase::Stopped | Phase::Disconnecting
        )
    }
}

impl<P: Protocol + 'static> Inner<P> {
    fn strong(&self) -> Rc<Inner<P>> {
        self.me.upgrade().expect("a service is alive while it runs")
    }

    fn connect(&self) {
        let factory = Rc::new(SvcFactory {
            svc: self.me.clone(),
            built: RefCell::new(None),
        });
        let built = factory.clone();
        let me = self.me.clone();
        // Connecting first, so that an attempt that ends at once finds the right phase.
        self.st.borrow_mut().phase = Phase::Connecting(Deferred::succeed(()));
        let attempt = self
            .endpoint
            .connect_factory(factory)
            .add_both(move |result| {
                let Some(me) = me.upgrade() else {
                    return Ok(());
                };
                let result = result.and_then(|t| {
                    let p = built.built.borrow_mut().take().ok_or_else(|| {
                        Failure::msg("the connection was made but its protocol is gone")
                    })?;
                    Ok(Connected::new(p, t))
                });
                me.attempt_done(result);
                Ok(())
            });
        let mut st = self.st.borrow_mut();
        if let Phase::Connecting(slot) = &mut st.phase {
            if !attempt.called() {
                *slot = attempt;
            }
        }
    }

    fn attempt_done(&self, result: Result<Connected<P>, Failure>) {
        let mut st = self.st.borrow_mut();
        match (&st.phase, result) {
            (Phase::Connecting(_), Ok(c)) => {
                st.phase = Phase::Connected(c.clone());
                st.failures = 0;
                let waiters = std::mem::take(&mut st.waiters);
                drop(st);
                for w in waiters {
                    let _ = w.fire.callback(c.clone());
                }
            }
            (Phase::Connecting(_), Err(f)) => {
                st.failures = st.failures.saturating_add(1);
                let delay = self.backoff.delay(st.failures);
                tracing::info!(
                    endpoint = %self.endpoint.describe(),
                    attempt = st.failures,
                    ?delay,
                    failure = %f,
                    "connection attempt failed; retrying"
                );
                let me = self.strong();
                st.phase = Phase::Waiting(self.reactor.call_later(delay, move |_| me.retry()));
                // Waiters that gave a failure budget and ran out of it get this failure.
                let mut ready = Vec::new();
                st.waiters.retain_mut(|w| match &mut w.fail_after {
                    Some(n) if *n <= 1 => {
                        ready.push(w.fire.clone());
                        false
                    }
                    Some(n) => {
                        *n -= 1;
                        true
                    }
                    None => true,
                });
                drop(st);
                for w in ready {
                    let _ = w.errback(f.clone());
                }
            }
            (Phase::Disconnecting, Ok(c)) => {
                // Connected just as it was stopped: close, and finish when it is down.
                drop(st);
                c.transport().lose_connection();
            }
            (Phase::Disconnecting, Err(_)) => {
                drop(st);
                self.down();
            }
            _ => {}
        }
    }

    fn retry(&self) {
        let go = matches!(self.st.borrow().phase, Phase::Waiting(_));
        if go {
            self.connect();
        }
    }

    /// The connection ended.
    fn lost(&self, reason: &Reason) {
        let mut st = self.st.borrow_mut();
        match st.phase {
            Phase::Connected(_) => {
                st.failures = st.failures.saturating_add(1);
                let delay = self.backoff.delay(st.failures);
                tracing::info!(
                    endpoint = %self.endpoint.describe(),
                    %reason,
                    ?delay,
                    "connection lost; reconnecting"
                );
                let me = self.strong();
                let old = std::mem::replace(
                    &mut st.phase,
                    Phase::Waiting(self.reactor.call_later(delay, move |_| me.retry())),
                );
                drop(st);
                drop(old);
            }
            Phase::Disconnecting => {
                drop(st);
                self.down();
            }
            _ => {}
        }
    }

    /// Stopping finished: fail the waiters, fire the stop Deferreds, restart if asked.
    fn down(&self) {
        let (stops, restart) = {
            let mut st = self.st.borrow_mut();
            st.phase = Phase::Stopped;
            (
                std::mem::take(&mut st.stop_waiters),
                std::mem::replace(&mut st.restart, false),
            )
        };
        if restart {
            self.connect();
        } else {
            self.fail_waiters();
        }
        for s in stops {
            let _ = s.callback(());
        }
    }

    fn fail_waiters(&self) {
        let waiters = std::mem::take(&mut self.st.borrow_mut().waiters);
        for w in waiters {
            let _ = w.fire.errback(ServiceStopped);
        }
    }
}

/// Builds the service's protocols, watching each for its end (Twisted's `_DisconnectFactory`).
struct SvcFactory<P: 'static> {
    svc: Weak<Inner<P>>,
    built: RefCell<Option<Rc<RefCell<P>>>>,
}

impl<P: Protocol + 'static> ProtocolFactory for SvcFactory<P> {
    fn build_protocol(&self, addr: &Address) -> Option<Box<dyn Protocol>> {
        let svc = self.svc.upgrade()?;
        let p = Rc::new(RefCell::new((svc.make)(addr)));
        *self.built.borrow_mut() = Some(p.clone());
        Some(Box::new(Watch {
            inner: SharedProtocol(p),
            svc: self.svc.clone(),
        }))
    }
}

/// A service's protocol: tells the service when its connection ends (Twisted's
/// `_ReconnectingProtocolProxy`).
struct Watch<P: 'static> {
    inner: SharedProtocol<P>,
    svc: Weak<Inner<P>>,
}

impl<P: Protocol + 'static> Protocol for Watch<P> {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        self.inner.connection_made(cx);
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        self.inner.data_received(cx, data);
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        self.inner.connection_lost(cx, reason.clone());
        if let Some(svc) = self.svc.upgrade() {
            svc.lost(&reason);
        }
    }

    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        self.inner.read_connection_lost(cx)
    }

    fn write_connection_lost(&mut self, cx: &mut Context<'_>) {
        self.inner.write_connection_lost(cx);
    }
}
