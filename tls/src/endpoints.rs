//! TLS endpoints and the `ssl:` / `tls:` endpoint strings (Twisted's `ssl:` server strings,
//! `tls:` client strings and the older `ssl:` client strings).
//!
//! * [`TlsServerEndpoint`] runs the protocols of any [`ServerEndpoint`] behind TLS;
//!   [`TlsClientEndpoint`] connects through any [`ClientEndpoint`] and runs the protocol behind
//!   TLS (Twisted's `wrapClientTLS`).
//! * [`register_endpoints`] adds the schemes to an [`EndpointRegistry`];
//!   [`register_default_endpoints`] to this thread's default registry, the one
//!   [`server_from_string`](torsion::endpoints::server_from_string) and
//!   [`client_from_string`](torsion::endpoints::client_from_string) use.
//!
//! # The strings
//! Server: `ssl:PORT:privateKey=key.pem:certKey=cert.pem` with
//! * `interface=IP` (default every IPv4 interface; escape an IPv6 one's colons: `\:\:1`),
//!   `backlog=N` (1 to 65535, default 50),
//! * `privateKey=FILE` (default `server.pem`, Twisted's) and `certKey=FILE` (default: the
//!   `privateKey` file, which may then hold both), `extraCertChain=FILE` (intermediate
//!   certificates sent after the leaf),
//! * `caCerts=FILE`: clients must present a certificate issued by one of these,
//! * `alpn=h2,http/1.1`: the protocols offered, in order of preference,
//! * `handshakeTimeout=SECONDS` (more than 0, at most a day; default 30).
//!
//! Client: `tls:HOST:PORT` (or `host=`/`port=`), connected through a
//! [`HostnameEndpoint`] (IPv6 and IPv4 raced, as Twisted's `tls:`), with
//! * `trustRoots=FILE`: trust only these roots (default: the bundled Mozilla roots),
//! * `certificate=FILE` and `privateKey=FILE` (default: the certificate file): a client
//!   certificate,
//! * `serverName=NAME`: verify (and send by SNI) this name instead of `HOST`,
//! * `alpn=...`, `handshakeTimeout=SECONDS`, `timeout=SECONDS` (the connect, default 30),
//!   `bindAddress=IP`.
//!
//! Twisted's older client string `ssl:host=HOST:port=PORT` (or `ssl:HOST:PORT`) is taken too,
//! through a plain TCP endpoint, with `caCertsDir=DIR` (trust every PEM certificate found in
//! that directory), `certKey=FILE`/`privateKey=FILE` (a client certificate), `timeout` and
//! `bindAddress`. Unlike Twisted, which does not verify the server at all without
//! `caCertsDir`, an `ssl:` client verifies it against the bundled roots.
//!
//! Every number is range-checked, and a file that cannot be read or holds no certificate or
//! key is refused with [`EndpointError::BadFile`], naming the option and the file.
//!
//! # When a client's connect fires
//! As Twisted's `wrapClientTLS`, the connect's Deferred fires when the TCP connection is made:
//! the protocol's `connection_made` runs at once, before the handshake, and what it writes is
//! queued and sent encrypted once the handshake completes. A handshake that fails (an unknown
//! issuer, a wrong host, a timeout) ends the connection: the protocol's `connection_lost` gets
//! the [`TlsError`](crate::TlsError) (see [`TlsError::of`](crate::TlsError::of)), not the
//! connect's Deferred.
//!
//! # Examples
//! ```
//! # let dir = std::env::temp_dir().join(format!("torsion-tls-doc-ep-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
//! # std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
//! # std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
//! # std::env::set_current_dir(&dir).unwrap();
//! use torsion::endpoints::{client_from_string, server_from_string, EndpointError};
//! use torsion::Reactor;
//!
//! torsion_tls::register_default_endpoints(); // once per thread
//! let reactor = Reactor::new()?;
//! let server = server_from_string(
//!     &reactor,
//!     "ssl:8443:privateKey=key.pem:certKey=cert.pem:interface=127.0.0.1:alpn=h2,http/1.1",
//! )?;
//! assert_eq!(server.describe(), "tls over tcp:127.0.0.1:8443 (backlog 50)");
//! let client = client_from_string(&reactor, "tls:localhost:8443:trustRoots=cert.pem:timeout=5")?;
//! assert_eq!(client.describe(), "tls over hostname:localhost:8443");
//!
//! // Bad input is refused, naming the option (and the file).
//! let err = server_from_string(&reactor, "ssl:8443:privateKey=missing.pem").unwrap_err();
//! assert!(matches!(&err, EndpointError::BadFile { name, .. } if name == "privateKey"), "{err}");
//! let err = server_from_string(&reactor, "ssl:8443:privateKey=key.pem:handshakeTimeout=0").unwrap_err();
//! assert_eq!(err.to_string(), "handshakeTimeout: 0 is out of range (more than 0 and at most 86400 seconds)");
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::RefCell;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use torsion::endpoints::{
    ip, number, register_client_scheme, register_server_scheme, seconds, ClientEndpoint,
    EndpointArgs, EndpointError, EndpointReactor, EndpointRegistry, HostnameEndpoint,
    ServerEndpoint, TcpClientEndpoint, TcpServerEndpoint, DEFAULT_BACKLOG,
};
use torsion::{
    Address, Context, Deferred, Failure, HalfClose, ListeningPort, Protocol, ProtocolFactory,
    Reason, Transport,
};

use crate::config::{
    certificates_from_pem_file, private_key_from_pem_file, ClientTls, ServerTls,
    DEFAULT_HANDSHAKE_TIMEOUT,
};
use crate::error::ConfigError;
use crate::layer::TlsProtocol;
use crate::reactor::TlsServerFactory;

/// ALPN protocols one string may list, at most.
const MAX_ALPN: usize = 32;

// ------------------------------------------------------------------------------ endpoints

/// Runs the protocols of another server endpoint behind TLS (what an `ssl:` server string
/// makes, over a [`TcpServerEndpoint`]).
#[derive(Clone)]
pub struct TlsServerEndpoint {
    inner: Rc<dyn ServerEndpoint>,
    tls: ServerTls,
}

impl fmt::Debug for TlsServerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl TlsServerEndpoint {
    /// TLS with `tls` on the connections `inner` accepts (TCP, a Unix socket, ...).
    pub fn new(inner: Rc<dyn ServerEndpoint>, tls: ServerTls) -> TlsServerEndpoint {
        TlsServerEndpoint { inner, tls }
    }

    /// From the arguments of an `ssl:` server string (see the [module](self)).
    ///
    /// # Errors
    /// The [`EndpointError`] naming the bad option (and file).
    pub fn from_args(
        reactor: &dyn EndpointReactor,
        a: &EndpointArgs,
    ) -> Result<TlsServerEndpoint, EndpointError> {
        a.check(
            &[
                "port",
                "interface",
                "backlog",
                "privateKey",
                "certKey",
                "extraCertChain",
                "caCerts",
                "alpn",
                "handshakeTimeout",
            ],
            1,
        )?;
        let port: u16 = number("port", a.require("port", Some(0))?, 0, 65_535, "0 to 65535")?;
        let interface = match a.get("interface", None) {
            None | Some("") => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(i) => ip("interface", i)?,
        };
        let backlog = match a.get("backlog", None) {
            None => DEFAULT_BACKLOG,
            Some(b) => number("backlog", b, 1, 65_535, "1 to 65535")?,
        };
        let alpn = a.get("alpn", None).map(alpn_list).transpose()?;
        let handshake = match a.get("handshakeTimeout", None) {
            None => DEFAULT_HANDSHAKE_TIMEOUT,
            Some(t) => seconds("handshakeTimeout", t)?,
        };
        // The files last: every other mistake is reported without touching the disk.
        let key_file = non_empty(a, "privateKey")?.unwrap_or("server.pem");
        let cert_file = non_empty(a, "certKey")?.unwrap_or(key_file);
        let key = read_key("privateKey", key_file)?;
        let mut chain = read_certs("certKey", cert_file)?;
        if let Some(extra) = non_empty(a, "extraCertChain")? {
            chain.extend(read_certs("extraCertChain", extra)?);
        }
        let mut builder = ServerTls::builder()
            .certificate(chain, key)
            .handshake_timeout(Some(handshake));
        if let Some(ca) = non_empty(a, "caCerts")? {
            let roots = read_certs("caCerts", ca)?;
            builder = builder
                .client_auth_required(roots)
                .map_err(|e| bad_file("caCerts", ca, &e))?;
        }
        if let Some(alpn) = &alpn {
            let list: Vec<&[u8]> = alpn.iter().map(|p| p.as_slice()).collect();
            builder = builder.alpn(&list);
        }
        let tls = builder
            .build()
            .map_err(|e| bad_file("privateKey", key_file, &e))?;
        let tcp = TcpServerEndpoint::new(reactor, port)
            .interface(interface)
            .backlog(backlog);
        Ok(TlsServerEndpoint::new(Rc::new(tcp), tls))
    }
}

impl ServerEndpoint for TlsServerEndpoint {
    fn listen(&self, factory: Rc<dyn ProtocolFactory>) -> Deferred<ListeningPort> {
        self.inner
            .listen(Rc::new(TlsServerFactory::new(factory, self.tls.clone())))
    }

    fn describe(&self) -> String {
        format!("tls over {}", self.inner.describe())
    }
}

/// Connects through another client endpoint and runs the protocol behind TLS (Twisted's
/// `wrapClientTLS`; what `tls:` and `ssl:` client strings make).
///
/// The connect's Deferred fires with the TLS transport as soon as the connection below is
/// made, before the handshake (see the [module](self)).
#[derive(Clone)]
pub struct TlsClientEndpoint {
    inner: Rc<dyn ClientEndpoint>,
    tls: ClientTls,
    host: String,
}

impl fmt::Debug for TlsClientEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl TlsClientEndpoint {
    /// TLS with `tls` over the connections `inner` makes; the server's certificate must be
    /// valid for `host` (unless `tls` names another server name), which is also sent by SNI.
    ///
    /// # Errors
    /// [`ConfigError::BadName`] when the name to verify is not a DNS name or an IP address.
    #[doc(alias = "wrapClientTLS")]
    pub fn new(
        inner: Rc<dyn ClientEndpoint>,
        tls: ClientTls,
        host: &str,
    ) -> Result<TlsClientEndpoint, ConfigError> {
        tls.name_for(host)?;
        Ok(TlsClientEndpoint {
            inner,
            tls,
            host: host.to_string(),
        })
    }

    /// From the arguments of a `tls:` client string (see the [module](self)).
    ///
    /// # Errors
    /// The [`EndpointError`] naming the bad option (and file).
    pub fn from_tls_args(
        reactor: &dyn EndpointReactor,
        a: &EndpointArgs,
    ) -> Result<TlsClientEndpoint, EndpointError> {
        a.check(
            &[
                "host",
                "port",
                "trustRoots",
                "certificate",
                "privateKey",
                "serverName",
                "alpn",
                "handshakeTimeout",
                "timeout",
                "bindAddress",
            ],
            2,
        )?;
        let (host, port, timeout, bind) = target(a)?;
        let mut b = ClientTls::builder();
        b = common_client_options(a, b)?;
        if let Some(roots) = non_empty(a, "trustRoots")? {
            for c in read_certs("trustRoots", roots)? {
                b = b.root(c).map_err(|e| bad_file("trustRoots", roots, &e))?;
            }
        }
        b = client_certificate(a, b, "certificate", "privateKey")?;
        if let Some(name) = a.get("serverName", None) {
            b = b.server_name(name);
        }
        let mut inner = HostnameEndpoint::new(reactor, &host, port).timeout(timeout);
        if let Some(bind) = bind {
            inner = inner.bind_address(bind);
        }
        finish_client(b, Rc::new(inner), &host, a.get("serverName", None))
    }

    /// From the arguments of Twisted's older `ssl:` client string (see the [module](self)).
    ///
    /// # Errors
    /// The [`EndpointError`] naming the bad option (and file).
    pub fn from_ssl_args(
        reactor: &dyn EndpointReactor,
        a: &EndpointArgs,
    ) -> Result<TlsClientEndpoint, EndpointError> {
        a.check(
            &[
                "host",
                "port",
                "caCertsDir",
                "certKey",
                "privateKey",
                "alpn",
                "handshakeTimeout",
                "timeout",
                "bindAddress",
            ],
            2,
        )?;
        let (host, port, timeout, bind) = target(a)?;
        let mut b = ClientTls::builder();
        b = common_client_options(a, b)?;
        if let Some(dir) = non_empty(a, "caCertsDir")? {
            for c in certificates_in_dir(dir)? {
                b = b.root(c).map_err(|e| bad_file("caCertsDir", dir, &e))?;
            }
        }
        b = client_certificate(a, b, "certKey", "privateKey")?;
        let mut inner = TcpClientEndpoint::new(reactor, &host, port).timeout(timeout);
        if let Some(bind) = bind {
            inner = inner.bind_address(bind);
        }
        finish_client(b, Rc::new(inner), &host, None)
    }
}

impl ClientEndpoint for TlsClientEndpoint {
    fn connect_factory(&self, factory: Rc<dyn ProtocolFactory>) -> Deferred<Transport> {
        let slot: Rc<RefCell<Option<Transport>>> = Rc::default();
        let wrapper = Rc::new(ClientWrapFactory {
            inner: factory,
            tls: self.tls.clone(),
            host: self.host.clone(),
            slot: slot.clone(),
        });
        self.inner
            .connect_factory(wrapper)
            .add_callback(move |_below| {
                slot.borrow_mut().take().ok_or_else(|| {
                    Failure::msg(
                        "the TLS layer's connection was made but its transport is gone (a bug)",
                    )
                })
            })
    }

    fn describe(&self) -> String {
        format!("tls over {}", self.inner.describe())
    }
}

/// Builds the user's protocol behind the client side of TLS, and keeps the TLS transport it
/// gets for the connect's Deferred.
struct ClientWrapFactory {
    inner: Rc<dyn ProtocolFactory>,
    tls: ClientTls,
    host: String,
    slot: Rc<RefCell<Option<Transport>>>,
}

impl ProtocolFactory for ClientWrapFactory {
    fn build_protocol(&self, addr: &Address) -> Option<Box<dyn Protocol>> {
        let p = self.inner.build_protocol(addr)?;
        let capture = Capture {
            inner: p,
            slot: self.slot.clone(),
        };
        match TlsProtocol::client(Box::new(capture), &self.tls, &self.host) {
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

/// The user's protocol, as the TLS layer sees it: notes the TLS transport it is given.
struct Capture {
    inner: Box<dyn Protocol>,
    slot: Rc<RefCell<Option<Transport>>>,
}

impl Protocol for Capture {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        *self.slot.borrow_mut() = Some(cx.transport().clone());
        self.inner.connection_made(cx);
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        self.inner.data_received(cx, data);
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        self.slot.borrow_mut().take();
        self.inner.connection_lost(cx, reason);
    }

    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        self.inner.read_connection_lost(cx)
    }

    fn write_connection_lost(&mut self, cx: &mut Context<'_>) {
        self.inner.write_connection_lost(cx);
    }
}

// ------------------------------------------------------------------------------ registration

/// Adds the `ssl:` server scheme and the `tls:` and `ssl:` client schemes to `registry`.
///
/// ```
/// use torsion::endpoints::EndpointRegistry;
/// use torsion::Reactor;
///
/// let mut registry = EndpointRegistry::new();
/// torsion_tls::register_endpoints(&mut registry);
/// let reactor = Reactor::new()?;
/// let e = registry.client(&reactor, "tls:example.com:443:alpn=h2")?;
/// assert_eq!(e.describe(), "tls over hostname:example.com:443");
/// let e = registry.client(&reactor, "ssl:host=example.com:port=443:timeout=5")?;
/// assert_eq!(e.describe(), "tls over tcp:example.com:443");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn register_endpoints(registry: &mut EndpointRegistry) {
    registry.register_server("ssl", Rc::new(ssl_server));
    registry.register_client("tls", Rc::new(tls_client));
    registry.register_client("ssl", Rc::new(ssl_client));
}

/// Adds the schemes of [`register_endpoints`] to this thread's default registry, the one
/// [`server_from_string`](torsion::endpoints::server_from_string) and
/// [`client_from_string`](torsion::endpoints::client_from_string) use. Call it once on the
/// reactor's thread before parsing strings (calling it again changes nothing).
pub fn register_default_endpoints() {
    register_server_scheme("ssl", Rc::new(ssl_server));
    register_client_scheme("tls", Rc::new(tls_client));
    register_client_scheme("ssl", Rc::new(ssl_client));
}

fn ssl_server(
    reactor: &dyn EndpointReactor,
    a: &EndpointArgs,
) -> Result<Box<dyn ServerEndpoint>, EndpointError> {
    Ok(Box::new(TlsServerEndpoint::from_args(reactor, a)?))
}

fn tls_client(
    reactor: &dyn EndpointReactor,
    a: &EndpointArgs,
) -> Result<Box<dyn ClientEndpoint>, EndpointError> {
    Ok(Box::new(TlsClientEndpoint::from_tls_args(reactor, a)?))
}

fn ssl_client(
    reactor: &dyn EndpointReactor,
    a: &EndpointArgs,
) -> Result<Box<dyn ClientEndpoint>, EndpointError> {
    Ok(Box::new(TlsClientEndpoint::from_ssl_args(reactor, a)?))
}

// ------------------------------------------------------------------------------ helpers

/// An option's value; `None` when absent; an empty value is refused.
fn non_empty<'a>(
    a: &'a EndpointArgs,
    name: &'static str,
) -> Result<Option<&'a str>, EndpointError> {
    match a.get(name, None) {
        Some("") => Err(EndpointError::BadValue {
            name: name.into(),
            value: String::new(),
            detail: "empty".into(),
        }),
        v => Ok(v),
    }
}

/// Host, port, connect timeout and bind address of a client string.
fn target(a: &EndpointArgs) -> Result<(String, u16, Duration, Option<SocketAddr>), EndpointError> {
    let host = a.require("host", Some(0))?;
    if host.is_empty() {
        return Err(EndpointError::Missing {
            scheme: a.scheme.clone(),
            name: "host",
        });
    }
    let port = number("port", a.require("port", Some(1))?, 1, 65_535, "1 to 65535")?;
    let timeout = match a.get("timeout", None) {
        None => torsion::endpoints::DEFAULT_CONNECT_TIMEOUT,
        Some(t) => seconds("timeout", t)?,
    };
    let bind = match a.get("bindAddress", None) {
        None => None,
        Some(b) => Some(match b.parse::<SocketAddr>() {
            Ok(sa) => sa,
            Err(_) => SocketAddr::new(ip("bindAddress", b)?, 0),
        }),
    };
    Ok((host.to_string(), port, timeout, bind))
}

fn common_client_options(
    a: &EndpointArgs,
    mut b: crate::ClientTlsBuilder,
) -> Result<crate::ClientTlsBuilder, EndpointError> {
    if let Some(list) = a.get("alpn", None) {
        let alpn = alpn_list(list)?;
        let list: Vec<&[u8]> = alpn.iter().map(|p| p.as_slice()).collect();
        b = b.alpn(&list);
    }
    let handshake = match a.get("handshakeTimeout", None) {
        None => DEFAULT_HANDSHAKE_TIMEOUT,
        Some(t) => seconds("handshakeTimeout", t)?,
    };
    Ok(b.handshake_timeout(Some(handshake)))
}

/// A client certificate from `cert_opt` and `key_opt` (the key defaulting to the certificate
/// file, as Twisted's); a key alone is refused.
fn client_certificate(
    a: &EndpointArgs,
    b: crate::ClientTlsBuilder,
    cert_opt: &'static str,
    key_opt: &'static str,
) -> Result<crate::ClientTlsBuilder, EndpointError> {
    let cert = non_empty(a, cert_opt)?;
    let key = non_empty(a, key_opt)?;
    match (cert, key) {
        (None, None) => Ok(b),
        (None, Some(k)) => Err(EndpointError::BadValue {
            name: key_opt.into(),
            value: k.into(),
            detail: format!("a private key without a certificate (give {cert_opt}= too)"),
        }),
        (Some(c), k) => {
            let k = k.unwrap_or(c);
            let key_name = if k == c { cert_opt } else { key_opt };
            let chain = read_certs(cert_opt, c)?;
            let key = read_key(key_name, k)?;
            Ok(b.client_certificate(chain, key))
        }
    }
}

fn finish_client(
    b: crate::ClientTlsBuilder,
    inner: Rc<dyn ClientEndpoint>,
    host: &str,
    server_name: Option<&str>,
) -> Result<TlsClientEndpoint, EndpointError> {
    let bad_name = |e: ConfigError| match server_name {
        Some(n) => EndpointError::BadValue {
            name: "serverName".into(),
            value: n.into(),
            detail: e.to_string(),
        },
        None => EndpointError::BadValue {
            name: "host".into(),
            value: host.into(),
            detail: e.to_string(),
        },
    };
    let tls = b.build().map_err(|e| match e {
        ConfigError::BadName(_) => bad_name(e),
        e => EndpointError::BadValue {
            name: "certificate".into(),
            value: String::new(),
            detail: e.to_string(),
        },
    })?;
    TlsClientEndpoint::new(inner, tls, host).map_err(bad_name)
}

/// `h2,http/1.1`: each protocol 1 to 255 bytes, at most 32 of them.
fn alpn_list(value: &str) -> Result<Vec<Vec<u8>>, EndpointError> {
    let bad = |detail: &str| EndpointError::BadValue {
        name: "alpn".into(),
        value: value.into(),
        detail: detail.into(),
    };
    let list: Vec<Vec<u8>> = value.split(',').map(|p| p.as_bytes().to_vec()).collect();
    if list.iter().any(|p| p.is_empty()) {
        return Err(bad("an empty protocol name"));
    }
    if list.iter().any(|p| p.len() > 255) {
        return Err(bad("a protocol name longer than 255 bytes"));
    }
    if list.len() > MAX_ALPN {
        return Err(bad("more than 32 protocols"));
    }
    Ok(list)
}

fn bad_file(name: &str, path: &str, e: &ConfigError) -> EndpointError {
    let detail = match e {
        ConfigError::Io(_, io) => io.to_string(),
        ConfigError::NoCertificates(_) => "no certificate in it".into(),
        ConfigError::NoPrivateKey(_) => "no private key in it".into(),
        ConfigError::BadPem(_, err) => format!("bad PEM: {err}"),
        other => other.to_string(),
    };
    EndpointError::BadFile {
        name: name.into(),
        path: PathBuf::from(path),
        detail,
    }
}

fn read_certs(name: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, EndpointError> {
    certificates_from_pem_file(path).map_err(|e| bad_file(name, path, &e))
}

fn read_key(name: &str, path: &str) -> Result<PrivateKeyDer<'static>, EndpointError> {
    private_key_from_pem_file(path).map_err(|e| bad_file(name, path, &e))
}

/// Files a `caCertsDir` may hold, at most (it is configuration, not data).
const MAX_DIR_FILES: usize = 10_000;

/// Files of a `caCertsDir` larger than this are skipped (a CA certificate is a few KiB).
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// Every certificate of the PEM files in `dir` (files that are not PEM certificates, or over
/// 1 MiB, are skipped, as Twisted's `caCertsDir` skips what it cannot load).
fn certificates_in_dir(dir: &str) -> Result<Vec<CertificateDer<'static>>, EndpointError> {
    let bad = |detail: String| EndpointError::BadFile {
        name: "caCertsDir".into(),
        path: PathBuf::from(dir),
        detail,
    };
    let entries = std::fs::read_dir(Path::new(dir)).map_err(|e| bad(e.to_string()))?;
    let mut certs = Vec::new();
    for (i, entry) in entries.enumerate() {
        if i >= MAX_DIR_FILES {
            return Err(bad(format!("more than {MAX_DIR_FILES} files")));
        }
        let path = entry.map_err(|e| bad(e.to_string()))?.path();
        let small = std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() <= MAX_PEM_FILE);
        if small {
            if let Ok(c) = certificates_from_pem_file(&path) {
                certs.extend(c);
            }
        }
    }
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}
