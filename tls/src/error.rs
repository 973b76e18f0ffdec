//! Typed reasons a TLS connection fails, and errors building a configuration.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use torsion::Reason;

/// Why a TLS connection ended uncleanly: the cause inside the [`Reason`] its protocol's
/// `connection_lost` gets (a [`Reason::ConnectionLost`] carrying this error, never
/// [`Reason::ConnectionDone`]). Read it back with [`TlsError::of`].
///
/// # Examples
/// ```
/// use torsion::Reason;
/// use torsion_tls::TlsError;
///
/// let r = TlsError::Truncated.into_reason();
/// assert!(!r.is_clean());
/// assert!(matches!(TlsError::of(&r), Some(TlsError::Truncated)));
/// assert!(TlsError::of(&Reason::ConnectionDone).is_none());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TlsError {
    /// The peer's certificate has expired (or is not yet valid).
    CertificateExpired(rustls::Error),
    /// The peer's certificate is not valid for the name that was asked for.
    WrongHost(rustls::Error),
    /// The peer's certificate was issued by no trusted root.
    UnknownIssuer(rustls::Error),
    /// The peer's certificate is unacceptable for another reason (bad signature, revoked,
    /// wrong usage, no certificate when one is required...).
    BadCertificate(rustls::Error),
    /// The handshake failed otherwise: no common protocol version or cipher suite, an alert
    /// from the peer (which may have refused our certificate), garbage instead of TLS.
    HandshakeFailed(rustls::Error),
    /// The handshake did not finish within the time limit.
    HandshakeTimeout(Duration),
    /// A TLS error after the handshake (a corrupt or forged record, an alert).
    Protocol(rustls::Error),
    /// The peer closed the connection without sending close_notify: what was received may be
    /// cut short by an attacker. Never reported as a clean close.
    Truncated,
}

impl TlsError {
    /// Sorts an error from rustls into the typed reasons (`handshaking`: it happened before
    /// the handshake completed).
    pub fn classify(err: rustls::Error, handshaking: bool) -> TlsError {
        use rustls::CertificateError as C;
        match &err {
            rustls::Error::InvalidCertificate(c) => match c {
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => TlsError::CertificateExpired(err),
                C::NotValidForName | C::NotValidForNameContext { .. } => TlsError::WrongHost(err),
                C::UnknownIssuer => TlsError::UnknownIssuer(err),
                _ => TlsError::BadCertificate(err),
            },
            rustls::Error::NoCertificatesPresented => TlsError::BadCertificate(err),
            _ if handshaking => TlsError::HandshakeFailed(err),
            _ => TlsError::Protocol(err),
        }
    }

    /// A (non-clean) [`Reason`] carrying this error.
    pub fn into_reason(self) -> Reason {
        Reason::lost(io::Error::other(self))
    }

    /// The TLS error inside `reason`, if it carries one.
    pub fn of(reason: &Reason) -> Option<&TlsError> {
        match reason {
            Reason::ConnectionLost(Some(e)) => e.get_ref()?.downcast_ref::<TlsError>(),
            _ => None,
        }
    }

    /// The error from rustls, when there is one.
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        match self {
            TlsError::CertificateExpired(e)
            | TlsError::WrongHost(e)
            | TlsError::UnknownIssuer(e)
            | TlsError::BadCertificate(e)
            | TlsError::HandshakeFailed(e)
            | TlsError::Protocol(e) => Some(e),
            TlsError::HandshakeTimeout(_) | TlsError::Truncated => None,
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::CertificateExpired(_) => {
                f.write_str("TLS: the peer's certificate has expired or is not yet valid")
            }
            TlsError::WrongHost(_) => {
                f.write_str("TLS: the peer's certificate is not valid for the expected host name")
            }
            TlsError::UnknownIssuer(_) => {
                f.write_str("TLS: the peer's certificate was issued by an unknown authority")
            }
            TlsError::BadCertificate(_) => f.write_str("TLS: the peer's certificate was refused"),
            TlsError::HandshakeFailed(_) => f.write_str("TLS handshake failed"),
            TlsError::HandshakeTimeout(d) => {
                write!(f, "TLS handshake did not complete within {d:?}")
            }
            TlsError::Protocol(_) => f.write_str("TLS protocol error"),
            TlsError::Truncated => {
                f.write_str("TLS: the peer closed the connection without close_notify (truncated)")
            }
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.rustls_error().map(|e| e as _)
    }
}

/// An error building a TLS configuration.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    Io(PathBuf, io::Error),
    /// A PEM input held no certificate.
    NoCertificates(String),
    /// A PEM input held no private key.
    NoPrivateKey(String),
    /// A PEM input could not be parsed.
    BadPem(String, io::Error),
    /// rustls refused the configuration (a key that does not match, an unsupported key type...).
    Rustls(rustls::Error),
    /// A name is not a valid DNS name or IP address.
    BadName(String),
    /// A server configuration without any certificate.
    NoServerCertificate,
    /// The client-certificate verifier could not be built (no trust roots given, for example).
    Verifier(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Io(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            ConfigError::NoCertificates(w) => write!(f, "no certificate found in {w}"),
            ConfigError::NoPrivateKey(w) => write!(f, "no private key found in {w}"),
            ConfigError::BadPem(w, e) => write!(f, "bad PEM in {w}: {e}"),
            ConfigError::Rustls(e) => write!(f, "TLS configuration refused: {e}"),
            ConfigError::BadName(n) => write!(f, "{n:?} is not a valid DNS name or IP address"),
            ConfigError::NoServerCertificate => {
                f.write_str("a TLS server needs at least one certificate")
            }
            ConfigError::Verifier(e) => {
                write!(f, "cannot build the client-certificate verifier: {e}")
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Io(_, e) | ConfigError::BadPem(_, e) => Some(e),
            ConfigError::Rustls(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rustls::Error> for ConfigError {
    fn from(e: rustls::Error) -> Self {
        ConfigError::Rustls(e)
    }
}
