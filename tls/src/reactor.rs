//! `listen_ssl` and `connect_ssl` on any reactor that listens and connects over TCP, and the
//! factories they use.

use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use torsion::{
    Address, ClientFactory, ConnectError, Connector, Error, ListeningPort, Protocol,
    ProtocolFactory, ReactorTcp, Reason,
};

use crate::config::{ClientTls, ServerTls};
use crate::error::ConfigError;
use crate::layer::TlsProtocol;

/// A factory that runs every protocol another factory builds behind TLS, as a server.
pub struct TlsServerFactory {
    inner: Rc<dyn ProtocolFactory>,
    tls: ServerTls,
}

impl fmt::Debug for TlsServerFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerFactory")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl TlsServerFactory {
    /// Wraps `inner`'s protocols in the server side of TLS.
    pub fn new(inner: Rc<dyn ProtocolFactory>, tls: ServerTls) -> TlsServerFactory {
        TlsServerFactory { inner, tls }
    }
}

impl ProtocolFactory for TlsServerFactory {
    fn build_protocol(&self, addr: &Address) -> Option<Box<dyn Protocol>> {
        let p = self.inner.build_protocol(addr)?;
        match TlsProtocol::server(p, &self.tls) {
            Ok(t) => Some(Box::new(t)),
            Err(e) => {
                tracing::error!(peer = %addr, error = %e, "TLS: cannot start a server connection");
                None
            }
        }
    }

    fn start_factory(&self) {
        self.inner.start_factory();
    }

    fn stop_factory(&self) {
        self.inner.stop_factory();
    }
}

/// A client factory that runs every protocol another factory builds behind TLS; the
/// server's certificate must be valid for the host name given.
pub struct TlsClientFactory {
    inner: Rc<dyn ClientFactory>,
    tls: ClientTls,
    host: String,
}

impl fmt::Debug for TlsClientFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientFactory")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl TlsClientFactory {
    /// Wraps `inner`'s protocols in the client side of TLS, verifying the server as `host`
    /// (unless `tls` names another server name).
    ///
    /// # Errors
    /// [`ConfigError::BadName`] when the name to verify is not a DNS name or an IP address.
    pub fn new(
        inner: Rc<dyn ClientFactory>,
        tls: ClientTls,
        host: &str,
    ) -> Result<TlsClientFactory, ConfigError> {
        tls.name_for(host)?;
        Ok(TlsClientFactory {
            inner,
            tls,
            host: host.to_string(),
        })
    }
}

impl ProtocolFactory for TlsClientFactory {
    fn build_protocol(&self, addr: &Address) -> Option<Box<dyn Protocol>> {
        let p = self.inner.build_protocol(addr)?;
        match TlsProtocol::client(p, &self.tls, &self.host) {
            Ok(t) => Some(Box::new(t)),
            Err(e) => {
                tracing::error!(peer = %addr, error = %e, "TLS: cannot start a client connection");
                None
            }
        }
    }

    fn start_factory(&self) {
        self.inner.start_factory();
    }

    fn stop_factory(&self) {
        self.inner.stop_factory();
    }
}

impl ClientFactory for TlsClientFactory {
    fn started_connecting(&self, connector: &Connector) {
        self.inner.started_connecting(connector);
    }

    fn client_connection_failed(&self, connector: &Connector, reason: ConnectError) {
        self.inner.client_connection_failed(connector, reason);
    }

    fn client_connection_lost(&self, connector: &Connector, reason: Reason) {
        self.inner.client_connection_lost(connector, reason);
    }
}

/// TLS servers and clients on any reactor that listens and connects over TCP (Twisted's
/// `listenSSL`/`connectSSL`): the real [`Reactor`](torsion::Reactor) and the testing kit's
/// [`MemoryReactor`](torsion::testing::MemoryReactor) alike.
///
/// # Examples
/// ```no_run
/// use std::rc::Rc;
/// use std::time::Duration;
/// use torsion::{Context, Factory, Protocol, Reactor};
/// use torsion_tls::{ReactorTls, ServerTls};
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
///         cx.transport().write(data);
///     }
/// }
///
/// let reactor = Reactor::new()?;
/// let tls = ServerTls::from_pem_files("cert.pem", "key.pem")?;
/// let port = reactor.listen_ssl("0.0.0.0:8443".parse()?, Rc::new(Factory::for_protocol(|| Echo)), tls)?;
/// println!("listening on {}", port.address());
/// reactor.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait ReactorTls: ReactorTcp {
    /// Listens on `addr` and runs the protocols `factory` builds behind TLS.
    ///
    /// # Errors
    /// As [`ReactorTcp::listen_tcp_on`].
    fn listen_ssl(
        &self,
        addr: SocketAddr,
        factory: Rc<dyn ProtocolFactory>,
        tls: ServerTls,
    ) -> Result<ListeningPort, Error> {
        self.listen_tcp_on(addr, Rc::new(TlsServerFactory::new(factory, tls)))
    }

    /// Connects to `host:port` and runs the protocol `factory` builds behind TLS, verifying
    /// the server's certificate for `host` (unless `tls` names another server name).
    /// `timeout` limits the TCP connection; the handshake has its own limit in `tls`.
    ///
    /// # Errors
    /// [`ConfigError::BadName`] when the name to verify is not a DNS name or IP address.
    fn connect_ssl(
        &self,
        host: &str,
        port: u16,
        factory: Rc<dyn ClientFactory>,
        tls: ClientTls,
        timeout: Duration,
    ) -> Result<Connector, ConfigError> {
        let f = TlsClientFactory::new(factory, tls, host)?;
        Ok(self.connect_tcp_to(host, port, Rc::new(f), timeout))
    }
}

impl<R: ReactorTcp + ?Sized> ReactorTls for R {}
