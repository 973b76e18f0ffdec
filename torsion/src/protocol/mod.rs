//! Factories: the ready-made [`Factory`], and the per-thread count of ports per factory that
//! drives `start_factory`/`stop_factory`. The traits they implement are the contract in
//! [`interfaces`](crate::interfaces), re-exported here.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use crate::interfaces::Address;
pub use crate::interfaces::{
    ClientFactory, Connector, Consumer, Context, HalfClose, Producer, Protocol, ProtocolFactory,
};
use crate::{ConnectError, Reason};

pub mod reconnect;
pub mod wrap;

/// Anything that can be turned into a shared factory: a factory by value, or an `Rc` of one
/// (keep the `Rc` to reach the factory later).
pub trait IntoFactory<F: ?Sized> {
    /// The shared factory.
    fn into_factory(self) -> Rc<F>;
}

impl<T: ProtocolFactory + 'static> IntoFactory<T> for T {
    fn into_factory(self) -> Rc<T> {
        Rc::new(self)
    }
}

impl<T: ProtocolFactory + 'static> IntoFactory<T> for Rc<T> {
    fn into_factory(self) -> Rc<T> {
        self
    }
}

thread_local! {
    /// Listening ports (and started connectors) per factory on this thread, keyed by the
    /// factory's address: a factory is `!Send`, so it lives on one thread, and the count there
    /// is its count.
    static FACTORY_PORTS: RefCell<HashMap<usize, usize>> = RefCell::default();
}

fn factory_key(f: &Rc<dyn ProtocolFactory>) -> usize {
    Rc::as_ptr(f) as *const u8 as usize
}

/// A port of `factory` opened: `start_factory` runs for its first (Twisted's `doStart`).
pub(crate) fn factory_port_opened(factory: &Rc<dyn ProtocolFactory>) {
    let key = factory_key(factory);
    let n = FACTORY_PORTS.with(|m| {
        let mut m = m.borrow_mut();
        let n = m.entry(key).or_insert(0);
        *n += 1;
        *n
    });
    if n == 1 {
        factory.start_factory();
    }
}

/// A port of `factory` closed: `stop_factory` runs after its last (Twisted's `doStop`).
pub(crate) fn factory_port_closed(factory: &Rc<dyn ProtocolFactory>) {
    let key = factory_key(factory);
    let last = FACTORY_PORTS.with(|m| {
        let mut m = m.borrow_mut();
        match m.get_mut(&key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                m.remove(&key);
                true
            }
            None => false,
        }
    });
    if last {
        factory.stop_factory();
    }
}

type Build<S> = Box<dyn Fn(&Rc<S>, &Address) -> Option<Box<dyn Protocol>>>;
type Hook<S> = Box<dyn Fn(&Rc<S>)>;
type FailedHook<S> = Box<dyn Fn(&Rc<S>, &Connector, ConnectError)>;
type LostHook<S> = Box<dyn Fn(&Rc<S>, &Connector, Reason)>;

/// A ready-made factory with shared state `S` that every protocol it builds can reach.
///
/// # Examples
/// A chat server's factory keeps the set of connected transports:
/// ```
/// use std::{cell::RefCell, collections::HashSet, rc::Rc};
/// use torsion::{Context, Factory, Protocol, Reason, Transport};
///
/// type Clients = RefCell<HashSet<Transport>>;
/// struct Chat { clients: Rc<Clients> }
///
/// impl Protocol for Chat {
///     fn connection_made(&mut self, cx: &mut Context<'_>) {
///         self.clients.borrow_mut().insert(cx.transport().clone());
///     }
///     fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
///         for other in self.clients.borrow().iter().filter(|c| *c != cx.transport()) {
///             other.write(data);
///         }
///     }
///     fn connection_lost(&mut self, cx: &mut Context<'_>, _: Reason) {
///         self.clients.borrow_mut().remove(cx.transport());
///     }
/// }
///
/// let factory = Factory::with_state(Clients::default(), |clients, _addr| Chat {
///     clients: clients.clone(),
/// });
/// assert!(factory.state().borrow().is_empty());
/// ```
pub struct Factory<S: 'static = ()> {
    state: Rc<S>,
    build: Build<S>,
    on_start: Option<Hook<S>>,
    on_stop: Option<Hook<S>>,
    on_failed: Option<FailedHook<S>>,
    on_lost: Option<LostHook<S>>,
    built: Cell<u64>,
}

impl Factory<()> {
    /// A factory that builds `make()` for every connection (Twisted's `Factory.forProtocol`).
    pub fn for_protocol<P, F>(make: F) -> Factory<()>
    where
        P: Protocol + 'static,
        F: Fn() -> P + 'static,
    {
        Factory::with_state((), move |_, _| make())
    }
}

impl<S: 'static> Factory<S> {
    /// A factory holding `state`; `make(state, peer)` builds each protocol.
    pub fn with_state<P, F>(state: S, make: F) -> Factory<S>
    where
        P: Protocol + 'static,
        F: Fn(&Rc<S>, &Address) -> P + 'static,
    {
        Factory {
            state: Rc::new(state),
            build: Box::new(move |s, a| Some(Box::new(make(s, a)) as Box<dyn Protocol>)),
            on_start: None,
            on_stop: None,
            on_failed: None,
            on_lost: None,
            built: Cell::new(0),
        }
    }

    /// The shared state.
    pub fn state(&self) -> &Rc<S> {
        &self.state
    }

    /// Number of protocols built so far.
    pub fn protocols_built(&self) -> u64 {
        self.built.get()
    }

    /// Runs `f` when the first port (or connector) starts.
    pub fn on_start(mut self, f: impl Fn(&Rc<S>) + 'static) -> Self {
        self.on_start = Some(Box::new(f));
        self
    }

    /// Runs `f` when the last port stops (or the connector gives up).
    pub fn on_stop(mut self, f: impl Fn(&Rc<S>) + 'static) -> Self {
        self.on_stop = Some(Box::new(f));
        self
    }

    /// As a client factory: runs `f` when a connection attempt fails.
    pub fn on_client_connection_failed(
        mut self,
        f: impl Fn(&Rc<S>, &Connector, ConnectError) + 'static,
    ) -> Self {
        self.on_failed = Some(Box::new(f));
        self
    }

    /// As a client factory: runs `f` when an established connection ends.
    pub fn on_client_connection_lost(
        mut self,
        f: impl Fn(&Rc<S>, &Connector, Reason) + 'static,
    ) -> Self {
        self.on_lost = Some(Box::new(f));
        self
    }
}

impl<S: 'static> ProtocolFactory for Factory<S> {
    fn build_protocol(&self, addr: &Address) -> Option<Box<dyn Protocol>> {
        self.built.set(self.built.get() + 1);
        (self.build)(&self.state, addr)
    }

    fn start_factory(&self) {
        if let Some(f) = &self.on_start {
            f(&self.state);
        }
    }

    fn stop_factory(&self) {
        if let Some(f) = &self.on_stop {
            f(&self.state);
        }
    }
}

impl<S: 'static> ClientFactory for Factory<S> {
    fn client_connection_failed(&self, connector: &Connector, reason: ConnectError) {
        if let Some(f) = &self.on_failed {
            f(&self.state, connector, reason);
        }
    }

    fn client_connection_lost(&self, connector: &Connector, reason: Reason) {
        if let Some(f) = &self.on_lost {
            f(&self.state, connector, reason);
        }
    }
}
