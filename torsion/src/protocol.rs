//! The contract between the reactor and user code: [`Protocol`], [`ProtocolFactory`],
//! [`ClientFactory`], [`Producer`], and the ready-made [`Factory`].
//!
//! As in Twisted, a listening port asks its factory for one protocol instance per connection;
//! the protocol talks to the peer through the [`Transport`] it is handed in every callback.
//!
//! # Guarantees the transports give every protocol
//! * `connection_made` runs first, once; `connection_lost` runs last, exactly once, and never
//!   nested inside another callback of the same protocol (closing calls made from inside a
//!   callback take effect on a later iteration).
//! * No `RefCell` borrow is held while a protocol callback runs: a callback may call anything on
//!   any transport or on the reactor.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::tcp::{Connector, Transport};
use crate::Reason;

/// What a protocol wants when the peer closes its sending side (sends FIN) while this side may
/// still write (Twisted's `IHalfCloseableProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HalfClose {
    /// Close the whole connection: `connection_lost(ConnectionDone)` follows (the default).
    #[default]
    Close,
    /// Keep the connection open for writing; stop reading. Call `lose_connection` when done.
    KeepWriting,
}

/// The per-connection handler (Twisted's `IProtocol`). One instance per connection.
///
/// # Examples
/// ```
/// use torsion::{Protocol, Transport};
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, transport: &Transport, data: &[u8]) {
///         transport.write(data);
///     }
/// }
/// ```
pub trait Protocol {
    /// The connection is established. Store a clone of `transport` to write later.
    fn connection_made(&mut self, transport: &Transport) {
        let _ = transport;
    }

    /// Bytes arrived. Their division into calls is arbitrary: a protocol must reassemble.
    fn data_received(&mut self, transport: &Transport, data: &[u8]);

    /// The connection is gone; `reason` says why ([`Reason::ConnectionDone`] for a clean close).
    fn connection_lost(&mut self, reason: Reason) {
        let _ = reason;
    }

    /// The peer closed its sending side. Return [`HalfClose::KeepWriting`] to go on writing
    /// (half-close); the default closes the connection.
    fn read_connection_lost(&mut self, transport: &Transport) -> HalfClose {
        let _ = transport;
        HalfClose::Close
    }

    /// Our sending side was closed by `lose_write_connection` and the buffer flushed.
    fn write_connection_lost(&mut self, transport: &Transport) {
        let _ = transport;
    }
}

/// Makes protocols for a listening port or a connector (Twisted's `IProtocolFactory`).
pub trait ProtocolFactory {
    /// A protocol for a connection with `addr`, or `None` to refuse it (the socket is closed).
    fn build_protocol(&self, addr: SocketAddr) -> Option<Box<dyn Protocol>>;

    /// Called when the factory's first port starts listening (or its connector first connects).
    fn start_factory(&self) {}

    /// Called when the factory's last port stops listening (or its connector gives up).
    fn stop_factory(&self) {}
}

/// A factory for outgoing connections (Twisted's `ClientFactory`).
pub trait ClientFactory: ProtocolFactory {
    /// A connection attempt started.
    fn started_connecting(&self, connector: &Connector) {
        let _ = connector;
    }

    /// The attempt failed: refused, timed out, host not found, or cancelled by
    /// [`Connector::stop_connecting`]. Call `connector.connect()` to retry.
    fn client_connection_failed(&self, connector: &Connector, reason: Reason) {
        let _ = (connector, reason);
    }

    /// An established connection ended (after the protocol's `connection_lost`). Call
    /// `connector.connect()` to reconnect.
    fn client_connection_lost(&self, connector: &Connector, reason: Reason) {
        let _ = (connector, reason);
    }
}

/// A source of data written to a transport (Twisted's `IPushProducer`/`IPullProducer`).
///
/// A *streaming* (push) producer writes whenever it likes and is paused when the transport's
/// buffer passes its high-water mark, resumed when it drains below the low-water mark. A *pull*
/// producer writes only when asked, through `resume_producing`, each time the buffer empties.
/// Methods take `&self`: keep state in `Cell`/`RefCell`.
pub trait Producer {
    /// Stop writing until `resume_producing` (streaming producers only).
    fn pause_producing(&self) {}

    /// Write more (streaming: resume after a pause; pull: produce the next chunk now).
    fn resume_producing(&self);

    /// The consumer is gone: stop for good.
    fn stop_producing(&self) {}
}

type Build<S> = Box<dyn Fn(&Rc<S>, SocketAddr) -> Option<Box<dyn Protocol>>>;
type Hook<S> = Box<dyn Fn(&Rc<S>)>;
type ClientHook<S> = Box<dyn Fn(&Rc<S>, &Connector, Reason)>;

/// A ready-made factory with shared state `S` that every protocol it builds can reach.
///
/// # Examples
/// A chat server's factory keeps the set of connected transports:
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// use torsion::{Factory, Protocol, Transport, Reason};
///
/// type Clients = RefCell<Vec<Transport>>;
/// struct Chat { clients: Rc<Clients>, me: Option<Transport> }
///
/// impl Protocol for Chat {
///     fn connection_made(&mut self, t: &Transport) {
///         self.clients.borrow_mut().push(t.clone());
///         self.me = Some(t.clone());
///     }
///     fn data_received(&mut self, t: &Transport, data: &[u8]) {
///         for other in self.clients.borrow().iter().filter(|c| *c != t) {
///             other.write(data);
///         }
///     }
///     fn connection_lost(&mut self, _: Reason) {
///         let me = self.me.take();
///         self.clients.borrow_mut().retain(|c| Some(c) != me.as_ref());
///     }
/// }
///
/// let factory = Factory::with_state(Clients::default(), |clients, _addr| Chat {
///     clients: clients.clone(),
///     me: None,
/// });
/// assert!(factory.state().borrow().is_empty());
/// ```
pub struct Factory<S: 'static = ()> {
    state: Rc<S>,
    build: Build<S>,
    on_start: Option<Hook<S>>,
    on_stop: Option<Hook<S>>,
    on_failed: Option<ClientHook<S>>,
    on_lost: Option<ClientHook<S>>,
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
        F: Fn(&Rc<S>, SocketAddr) -> P + 'static,
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
        f: impl Fn(&Rc<S>, &Connector, Reason) + 'static,
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
    fn build_protocol(&self, addr: SocketAddr) -> Option<Box<dyn Protocol>> {
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
    fn client_connection_failed(&self, connector: &Connector, reason: Reason) {
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
