//! Errors of reactor operations, and the typed reasons a connection or descriptor ends.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

/// An error from a reactor operation.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    Io(io::Error),
    /// `TORSION_REACTOR` (or a backend name) named no known backend.
    UnknownBackend(String),
    /// The descriptor cannot be watched by this backend (select(2) handles only fds below
    /// `FD_SETSIZE`).
    FdOutOfRange {
        /// The refused descriptor.
        fd: RawFd,
        /// The first descriptor number the backend cannot handle.
        limit: RawFd,
        /// The backend that refused it.
        backend: &'static str,
    },
    /// `stop` was called on a reactor that is not running, or was called twice
    /// (Twisted's `ReactorNotRunning`).
    ReactorNotRunning,
    /// `run` was called while the reactor was already running (Twisted's
    /// `ReactorAlreadyRunning`).
    ReactorAlreadyRunning,
    /// `run` was called on a reactor that has already run and stopped (Twisted's
    /// `ReactorNotRestartable`).
    ReactorNotRestartable,
    /// A [`Handle`](crate::Handle) was used after its reactor was dropped.
    ReactorGone,
    /// A producer is already registered with this transport.
    ProducerAlreadyRegistered,
    /// An address could not be used (not an IP socket address, or none given).
    BadAddress(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::UnknownBackend(name) => write!(
                f,
                "unknown reactor backend {name:?}: valid backends are select, poll and epoll"
            ),
            Error::FdOutOfRange { fd, limit, backend } => write!(
                f,
                "the {backend} backend cannot watch file descriptor {fd}: it handles only \
                 descriptors below {limit}; use the poll or epoll backend"
            ),
            Error::ReactorNotRunning => f.write_str("can't stop a reactor that isn't running"),
            Error::ReactorAlreadyRunning => f.write_str("the reactor is already running"),
            Error::ReactorNotRestartable => f.write_str("the reactor cannot be restarted"),
            Error::ReactorGone => f.write_str("the reactor has been dropped"),
            Error::ProducerAlreadyRegistered => {
                f.write_str("a producer is already registered with this transport")
            }
            Error::BadAddress(a) => write!(f, "bad address: {a}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // The message of `e` is already in this error's: only what caused `e`.
            Error::Io(e) => e.source(),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    /// [`Error::Io`], except for a poller's [`FdOutOfRange`](crate::poller::FdOutOfRange),
    /// which becomes [`Error::FdOutOfRange`].
    fn from(e: io::Error) -> Self {
        let out_of_range = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<crate::poller::FdOutOfRange>());
        match out_of_range {
            Some(&crate::poller::FdOutOfRange { fd, limit, backend }) => {
                Error::FdOutOfRange { fd, limit, backend }
            }
            None => Error::Io(e),
        }
    }
}

/// Why a connection or a watched descriptor ended (the `reason` of `connection_lost`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reason {
    /// The connection was closed cleanly (Twisted's `ConnectionDone`).
    ConnectionDone,
    /// The connection was lost in a non-clean way (Twisted's `ConnectionLost`), with the system
    /// error when there was one.
    ConnectionLost(Option<Arc<io::Error>>),
    /// The connection was aborted locally (Twisted's `ConnectionAborted`).
    ConnectionAborted,
    /// User code panicked while handling this descriptor; the payload's message.
    Panicked(String),
    /// The reactor shut down while the descriptor was still registered.
    ReactorShutdown,
    /// The peer refused the connection (Twisted's `ConnectionRefusedError`).
    ConnectionRefused,
    /// The connection attempt timed out (Twisted's `TimeoutError`).
    TimedOut,
    /// The host name could not be resolved (Twisted's `DNSLookupError`), with the detail.
    HostNotFound(String),
    /// The attempt was cancelled with `stop_connecting` (Twisted's `UserError`).
    UserCancelled,
}

impl Reason {
    /// A `ConnectionLost` carrying `err`.
    pub fn lost(err: io::Error) -> Reason {
        Reason::ConnectionLost(Some(Arc::new(err)))
    }

    /// True for a clean close ([`Reason::ConnectionDone`]).
    pub fn is_clean(&self) -> bool {
        matches!(self, Reason::ConnectionDone)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ConnectionDone => f.write_str("connection was closed cleanly"),
            Reason::ConnectionLost(None) => f.write_str("connection was lost"),
            Reason::ConnectionLost(Some(e)) => write!(f, "connection was lost: {e}"),
            Reason::ConnectionAborted => f.write_str("connection was aborted"),
            Reason::Panicked(msg) => write!(f, "user code panicked: {msg}"),
            Reason::ReactorShutdown => f.write_str("the reactor shut down"),
            Reason::ConnectionRefused => f.write_str("connection was refused by other side"),
            Reason::TimedOut => f.write_str("connection attempt timed out"),
            Reason::HostNotFound(d) => write!(f, "host not found: {d}"),
            Reason::UserCancelled => f.write_str("connection attempt was cancelled"),
        }
    }
}

impl std::error::Error for Reason {}

/// The message of a panic payload, for logs and [`Reason::Panicked`].
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
