//! TCP: listening ports, outgoing connectors, and the [`Transport`](crate::Transport) of a
//! connection.
//!
//! # Examples
//! An echo server and a client that checks the echo, on one reactor:
//! ```
//! use std::time::Duration;
//! use torsion::{Context, Factory, Protocol, Reactor};
//!
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
//!         cx.transport().write(data);
//!     }
//! }
//!
//! struct Client(Vec<u8>);
//! impl Protocol for Client {
//!     fn connection_made(&mut self, cx: &mut Context<'_>) {
//!         cx.transport().write(b"ping");
//!     }
//!     fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
//!         self.0.extend_from_slice(data);
//!         if self.0 == b"ping" {
//!             cx.reactor().stop().unwrap();
//!         }
//!     }
//! }
//!
//! let reactor = Reactor::new()?;
//! let port = reactor.listen_tcp("127.0.0.1:0", Factory::for_protocol(|| Echo))?;
//! let client = Factory::for_protocol(|| Client(Vec::new()));
//! reactor.connect_tcp("127.0.0.1", port.port(), client, Duration::from_secs(5));
//! reactor.run()?;
//! # Ok::<(), torsion::Error>(())
//! ```

use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use crate::interfaces::{ClientFactory, Connector, ListeningPort, ProtocolFactory, ReactorTcp};
use crate::{Error, Reactor};

pub(crate) mod buffer;
mod completion;
mod connection;
pub(crate) mod connector;
mod listener;
pub(crate) mod shed;
mod transport;

pub use crate::flow::{DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER};
pub use crate::protocol::IntoFactory;
#[cfg(test)]
pub(crate) use connection::set_read_buffer_size;
pub use connection::DEFAULT_CLOSE_FLUSH_TIMEOUT;
pub(crate) use connection::{FdLimits, Kind, Limits, Read, Setup, StreamConnection};
pub use listener::ListenOptions;

fn first_addr<A: ToSocketAddrs>(addr: A) -> Result<SocketAddr, Error> {
    addr.to_socket_addrs()
        .map_err(|e| Error::BadAddress(e.to_string()))?
        .next()
        .ok_or_else(|| Error::BadAddress("no address given".into()))
}

impl Reactor {
    /// Listens on `addr` (port 0 picks a free port), building a protocol per connection with
    /// `factory` (Twisted's `listenTCP`). IPv4 and IPv6; SO_REUSEADDR on; backlog 1024.
    ///
    /// # Errors
    /// The system error (address in use, permission), or [`Error::BadAddress`].
    ///
    /// # Examples
    /// ```
    /// use torsion::{Context, Factory, Protocol, Reactor};
    ///
    /// struct Discard;
    /// impl Protocol for Discard {
    ///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    /// }
    ///
    /// let reactor = Reactor::new()?;
    /// let port = reactor.listen_tcp("127.0.0.1:0", Factory::for_protocol(|| Discard))?;
    /// assert_ne!(port.port(), 0);
    /// port.stop_listening();
    /// # Ok::<(), torsion::Error>(())
    /// ```
    #[doc(alias = "listenTCP")]
    pub fn listen_tcp<A, F>(
        &self,
        addr: A,
        factory: impl IntoFactory<F>,
    ) -> Result<ListeningPort, Error>
    where
        A: ToSocketAddrs,
        F: ProtocolFactory + 'static,
    {
        self.listen_tcp_with(addr, factory, ListenOptions::default())
    }

    /// [`listen_tcp`](Reactor::listen_tcp) with explicit options.
    ///
    /// # Errors
    /// As [`listen_tcp`](Reactor::listen_tcp).
    pub fn listen_tcp_with<A, F>(
        &self,
        addr: A,
        factory: impl IntoFactory<F>,
        opts: ListenOptions,
    ) -> Result<ListeningPort, Error>
    where
        A: ToSocketAddrs,
        F: ProtocolFactory + 'static,
    {
        let factory: Rc<F> = factory.into_factory();
        listener::listen(self, first_addr(addr)?, factory, opts)
    }

    /// Connects to `host:port` (Twisted's `connectTCP`); `host` is an IP address or a name,
    /// resolved on a helper thread. The attempt starts on the next iteration and fails with
    /// [`ConnectError::TimedOut`](crate::ConnectError::TimedOut) after `timeout`. The factory's
    /// callbacks report the outcome.
    #[doc(alias = "connectTCP")]
    pub fn connect_tcp<F>(
        &self,
        host: &str,
        port: u16,
        factory: impl IntoFactory<F>,
        timeout: Duration,
    ) -> Connector
    where
        F: ClientFactory + 'static,
    {
        let factory: Rc<F> = factory.into_factory();
        let c = connector::new(self, host, port, factory, timeout);
        c.connect();
        c
    }
}

impl Reactor {
    /// `listen_tcp_with` for a shared factory of any type (endpoints).
    pub(crate) fn listen_tcp_dyn(
        &self,
        addr: SocketAddr,
        factory: Rc<dyn ProtocolFactory>,
        opts: ListenOptions,
    ) -> Result<ListeningPort, Error> {
        listener::listen(self, addr, factory, opts)
    }

    /// `connect_tcp` for a shared factory of any type, bound to `bind` first (endpoints).
    pub(crate) fn connect_tcp_dyn(
        &self,
        host: &str,
        port: u16,
        factory: Rc<dyn ClientFactory>,
        timeout: Duration,
        bind: Option<SocketAddr>,
    ) -> Connector {
        let c = connector::new_bound(self, host, port, factory, timeout, bind);
        c.connect();
        c
    }
}

impl ReactorTcp for Reactor {
    fn listen_tcp_on(
        &self,
        addr: SocketAddr,
        factory: Rc<dyn ProtocolFactory>,
    ) -> Result<ListeningPort, Error> {
        listener::listen(self, addr, factory, ListenOptions::default())
    }

    fn connect_tcp_to(
        &self,
        host: &str,
        port: u16,
        factory: Rc<dyn ClientFactory>,
        timeout: Duration,
    ) -> Connector {
        let c = connector::new(self, host, port, factory, timeout);
        c.connect();
        c
    }
}

#[cfg(test)]
mod tests;
