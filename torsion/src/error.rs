//! Errors of reactor operations, and the typed reasons a connection or descriptor ends.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

pub use crate::defer::{Panicked, TimedOut};

/// An error from a reactor operation.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    Io(io::Error),
    /// `TORSION_REACTOR` (or a backend name) named no known backend.
    UnknownBackend(String),
    /// The backend asked for explicitly cannot be set up here (io_uring refused by the kernel,
    /// a seccomp policy or a locked-memory limit). The default choice falls back to epoll
    /// instead.
    BackendUnavailable {
        /// The backend asked for.
        backend: &'static str,
        /// What the kernel said.
        cause: io::Error,
    },
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
    /// `iterate` or `run` was called from inside a callback of the same reactor (the loop is
    /// not re-entrant, as libuv's `uv_run`).
    Reentrant,
    /// A setting is out of its range (the message names it, the range and the value given).
    InvalidSetting(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::UnknownBackend(name) => write!(
                f,
                "unknown reactor backend {name:?}: valid backends are select, poll, epoll and io_uring"
            ),
            Error::BackendUnavailable { backend, cause } => write!(
                f,
                "the {backend} backend cannot be set up here ({cause}); use epoll, or leave \
                 the backend to the default choice, which falls back to epoll"
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
            Error::Reentrant => {
                f.write_str("the reactor cannot be iterated from inside one of its callbacks")
            }
            Error::InvalidSetting(msg) => write!(f, "invalid setting: {msg}"),
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

impl From<crate::poller::UnknownBackend> for Error {
    fn from(e: crate::poller::UnknownBackend) -> Self {
        Error::UnknownBackend(e.0)
    }
}

impl From<io::Error> for Error {
    /// [`Error::Io`], except for a poller's [`FdOutOfRange`](crate::poller::FdOutOfRange),
    /// which becomes [`Error::FdOutOfRange`], and a
    /// [`BackendUnavailable`](crate::poller::BackendUnavailable), which becomes
    /// [`Error::BackendUnavailable`].
    fn from(e: io::Error) -> Self {
        if e.get_ref()
            .is_some_and(|i| i.is::<crate::poller::BackendUnavailable>())
        {
            let kind = e.kind();
            let inner = e.into_inner().expect("checked above");
            return match inner.downcast::<crate::poller::BackendUnavailable>() {
                Ok(u) => Error::BackendUnavailable {
                    backend: u.backend,
                    cause: u.cause,
                },
                Err(other) => Error::Io(io::Error::new(kind, other)),
            };
        }
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
///
/// Its `Display` is one line without the cause; [`source`](std::error::Error::source) gives the
/// system error or the panic, and [`Chain`] prints the whole chain.
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
    /// User code panicked while handling this connection or descriptor.
    Panicked(Panicked),
    /// The reactor shut down (or was dropped) while the connection was open.
    ReactorShutdown,
    /// A time limit expired: the peer half-closed and did not read the rest of the reply in
    /// time, for example. The connection was reset.
    TimedOut(TimedOut),
    /// More than `limit` bytes waited in the write buffer (a peer that does not read, and no
    /// flow control): the connection was reset.
    WriteBufferFull {
        /// The limit that was passed.
        limit: usize,
    },
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
            Reason::ConnectionLost(_) => f.write_str("connection was lost"),
            Reason::ConnectionAborted => f.write_str("connection was aborted"),
            Reason::Panicked(_) => f.write_str("user code panicked"),
            Reason::ReactorShutdown => f.write_str("the reactor shut down"),
            Reason::TimedOut(_) => f.write_str("connection closed: a time limit expired"),
            Reason::WriteBufferFull { limit } => write!(
                f,
                "connection reset: more than {limit} bytes waited in its write buffer"
            ),
        }
    }
}

impl std::error::Error for Reason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Reason::ConnectionLost(Some(e)) => Some(&**e),
            Reason::Panicked(p) => Some(p),
            Reason::TimedOut(t) => Some(t),
            _ => None,
        }
    }
}

/// Why a connection attempt failed (the `reason` of
/// [`ClientFactory::client_connection_failed`](crate::ClientFactory::client_connection_failed)).
///
/// Its `Display` is one line without the cause; [`source`](std::error::Error::source) gives the
/// system error, the timeout or the panic, and [`Chain`] prints the whole chain.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConnectError {
    /// The peer refused the connection (Twisted's `ConnectionRefusedError`).
    Refused,
    /// The attempt did not complete in time (Twisted's `TimeoutError`).
    TimedOut(TimedOut),
    /// The host name could not be resolved (Twisted's `DNSLookupError`), with the detail.
    HostNotFound(String),
    /// The attempt was cancelled with `stop_connecting` (Twisted's `UserError`).
    Cancelled,
    /// The factory built no protocol for the connection, which was closed.
    NoProtocol,
    /// `build_protocol` panicked.
    Panicked(Panicked),
    /// The reactor shut down during the attempt.
    ReactorShutdown,
    /// Another system error (network unreachable, no descriptors, ...).
    Io(Arc<io::Error>),
}

impl ConnectError {
    /// An [`Io`](ConnectError::Io) error carrying `err`.
    pub fn io(err: io::Error) -> ConnectError {
        ConnectError::Io(Arc::new(err))
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Refused => f.write_str("connection was refused by other side"),
            ConnectError::TimedOut(_) => f.write_str("connection attempt timed out"),
            ConnectError::HostNotFound(d) => write!(f, "host not found: {d}"),
            ConnectError::Cancelled => f.write_str("connection attempt was cancelled"),
            ConnectError::NoProtocol => f.write_str("the factory refused the connection"),
            ConnectError::Panicked(_) => f.write_str("build_protocol panicked"),
            ConnectError::ReactorShutdown => f.write_str("the reactor shut down"),
            ConnectError::Io(_) => f.write_str("connection attempt failed"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::TimedOut(t) => Some(t),
            ConnectError::Panicked(p) => Some(p),
            ConnectError::Io(e) => Some(&**e),
            _ => None,
        }
    }
}

/// Displays an error and every source under it, joined by `": "`: for log lines and messages
/// to people.
///
/// # Examples
/// ```
/// use torsion::error::Chain;
/// use torsion::Reason;
///
/// let r = Reason::lost(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
/// assert_eq!(Chain(&r).to_string(), "connection was lost: broken pipe");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a dyn std::error::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

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
