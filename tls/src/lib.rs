//! # torsion-tls
//!
//! TLS for torsion on rustls, run by the reactor (no async runtime): Twisted's `listenSSL`,
//! `connectSSL` and `startTLS`.
//!
//! TLS is a protocol layer ([`TlsProtocol`]) over ANY torsion transport: it feeds the bytes it
//! receives to a rustls connection (sans I/O) and gives the protocol it wraps a transport of
//! its own, whose writes it encrypts. A protocol written for TCP runs unchanged over TLS, and
//! TLS runs over TCP, the testing kit's in-memory pair, or any other stream transport.
//!
//! * [`ReactorTls::listen_ssl`] / [`ReactorTls::connect_ssl`] on any reactor implementing
//!   [`ReactorTcp`](torsion::ReactorTcp).
//! * [`TlsProtocol::pass_through`] and [`TlsHandle::start_tls_server`] /
//!   [`TlsHandle::start_tls_client`] for STARTTLS.
//! * [`endpoints`]: `ssl:` and `tls:` endpoint strings ([`register_default_endpoints`]),
//!   [`TlsServerEndpoint`] and [`TlsClientEndpoint`] (Twisted's `wrapClientTLS`).
//! * [`ServerTls`] / [`ClientTls`]: configurations from PEM files or rustls configurations;
//!   SNI, ALPN, client certificates. [`tls`] gives the negotiated ALPN protocol, SNI name and
//!   peer certificates from a connection's transport.
//! * Secure by default: a client verifies the server's certificate against the bundled Mozilla
//!   roots (`webpki-roots`) and the host name; the only way around it is
//!   [`ClientTlsBuilder::dangerous_disable_certificate_verification`].
//! * Failures are typed ([`TlsError`] inside the `connection_lost` reason): expired, wrong host,
//!   unknown issuer, handshake failure and timeout, truncation (a close without close_notify is
//!   never a clean close).
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod config;
pub mod endpoints;
mod error;
mod layer;
mod reactor;

pub use config::{
    certificates_from_pem, certificates_from_pem_file, default_provider, private_key_from_pem,
    private_key_from_pem_file, webpki_roots, ClientTls, ClientTlsBuilder, ServerTls,
    ServerTlsBuilder, DEFAULT_HANDSHAKE_TIMEOUT,
};
pub use endpoints::{
    register_default_endpoints, register_endpoints, TlsClientEndpoint, TlsServerEndpoint,
};
pub use error::{ConfigError, TlsError};
pub use layer::{tls, StartTlsError, TlsHandle, TlsProtocol};
pub use reactor::{ReactorTls, TlsClientFactory, TlsServerFactory};

pub use rustls;
