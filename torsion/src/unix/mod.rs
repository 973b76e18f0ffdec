//! Unix-domain stream sockets (Twisted's `listenUNIX`/`connectUNIX`): listening on a path or a
//! Linux abstract name, connecting, peer credentials, and descriptor passing.
//!
//! A Unix connection is the same transport as a TCP connection (one implementation: the same
//! write buffer, flow control, half-close, producers and close-after-flush), so a protocol
//! written for TCP runs on it unchanged. What it adds is reached through
//! [`Transport::unix`](crate::Transport::unix): the peer's credentials (SO_PEERCRED) and
//! [`send_file_descriptors`](crate::interfaces::UnixTransport::send_file_descriptors);
//! descriptors the peer passes arrive at
//! [`Protocol::file_descriptor_received`](crate::Protocol::file_descriptor_received), before
//! the bytes they came with.
//!
//! # The socket file
//! [`Reactor::listen_unix`] on a path that exists:
//! * refuses when a server answers there (`AddrInUse`),
//! * replaces a dead socket file (one nobody listens on any more: a crashed server's),
//! * never removes a file that is not a socket (`AlreadyExists`).
//!
//! The file is removed when the port stops listening (if it is still the one this port
//! created). With [`UnixListenOptions::lock`] (Twisted's `wantPID`), the port also holds a lock
//! file `PATH.lock` naming its process, so that two servers started at once cannot both take
//! the path. Its permissions are the umask's unless [`UnixListenOptions::mode`] is given (set
//! before the socket listens, so nobody connects in between).
//!
//! # Examples
//! An echo server on an abstract name and a client that checks the echo, on one reactor:
//! ```
//! use std::time::Duration;
//! use torsion::interfaces::UnixAddress;
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
//!         // The server runs in this very process: its credentials are ours.
//!         let creds = cx.transport().unix().unwrap().peer_credentials().unwrap();
//!         assert_eq!(creds.pid, Some(std::process::id()));
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
//! let name = UnixAddress::abstract_name(format!("torsion-doc-{}", std::process::id()));
//! let port = reactor.listen_unix(name.clone(), Factory::for_protocol(|| Echo))?;
//! let client = Factory::for_protocol(|| Client(Vec::new()));
//! reactor.connect_unix(name, client, Duration::from_secs(5));
//! reactor.run()?;
//! port.stop_listening();
//! # Ok::<(), torsion::Error>(())
//! ```

use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use crate::interfaces::{
    Address, ClientFactory, Connector, ListeningPort, PeerCredentials, ProtocolFactory,
    ReactorUnix, SendFdsError, UnixAddress, UnixTransport,
};
use crate::protocol::IntoFactory;
use crate::tcp::{FdLimits, Kind, Limits, Read, StreamConnection};
use crate::{sys, Error, Reactor};

mod connector;
mod listener;

/// The most descriptors one message can carry on Linux (`SCM_MAX_FD`): the upper bound of
/// [`UnixListenOptions::fds_per_message`].
pub const MAX_FDS_PER_MESSAGE: usize = sys::SCM_MAX_FD;

/// Options for [`Reactor::listen_unix_with`]. Every number is range-checked when the port is
/// opened ([`Error::BadAddress`] names the field).
///
/// # Examples
/// ```
/// use torsion::unix::UnixListenOptions;
///
/// let opts = UnixListenOptions {
///     mode: Some(0o660),   // owner and group may connect
///     fds_per_message: 4,  // a peer passing more in one message has the rest closed
///     ..UnixListenOptions::default()
/// };
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixListenOptions {
    /// The accept queue's length (default 1024; 1 to 65535).
    pub backlog: i32,
    /// Permissions of the socket file (a path, not an abstract name): `None` (default) leaves
    /// what the umask gives; at most `0o7777`. Connecting needs write permission.
    pub mode: Option<u32>,
    /// As [`ListenOptions::max_write_buffer`](crate::tcp::ListenOptions::max_write_buffer).
    pub max_write_buffer: Option<usize>,
    /// As [`ListenOptions::close_flush_timeout`](crate::tcp::ListenOptions::close_flush_timeout).
    pub close_flush_timeout: Duration,
    /// Descriptors one message may carry, both ways (default 32; 1 to
    /// [`MAX_FDS_PER_MESSAGE`]): more are refused when sending
    /// ([`SendFdsError::TooMany`]); when received, the excess is closed and a warning logged.
    pub fds_per_message: usize,
    /// Descriptors that may wait in a connection's write buffer (default 256; at least 1):
    /// more are refused ([`SendFdsError::QueueFull`]).
    pub max_queued_fds: usize,
    /// Twisted's `wantPID`: hold a lock file `PATH.lock` (a symbolic link to this process's
    /// id) while listening. A lock held by a live process refuses the port (`AddrInUse`); a
    /// dead process's lock is taken over. Removed when the port stops. Paths only (default
    /// false).
    #[doc(alias = "wantPID")]
    pub lock: bool,
}

impl Default for UnixListenOptions {
    fn default() -> Self {
        let fds = FdLimits::default();
        UnixListenOptions {
            backlog: 1024,
            mode: None,
            max_write_buffer: None,
            close_flush_timeout: crate::tcp::DEFAULT_CLOSE_FLUSH_TIMEOUT,
            fds_per_message: fds.per_message,
            max_queued_fds: fds.queued,
            lock: false,
        }
    }
}

impl UnixListenOptions {
    fn check(&self) -> Result<(), Error> {
        let bad = |what: String| Err(Error::BadAddress(what));
        if !(1..=65535).contains(&self.backlog) {
            return bad(format!("backlog {}: must be 1 to 65535", self.backlog));
        }
        if self.mode.is_some_and(|m| m > 0o7777) {
            return bad(format!(
                "mode {:o}: at most 7777 (octal)",
                self.mode.unwrap_or(0)
            ));
        }
        if !(1..=MAX_FDS_PER_MESSAGE).contains(&self.fds_per_message) {
            return bad(format!(
                "fds_per_message {}: must be 1 to {MAX_FDS_PER_MESSAGE}",
                self.fds_per_message
            ));
        }
        if self.max_queued_fds == 0 {
            return bad("max_queued_fds 0: must be at least 1".into());
        }
        Ok(())
    }

    fn limits(&self) -> Rc<Limits> {
        Rc::new(Limits {
            close_flush_timeout: self.close_flush_timeout,
            max_write_buffer: self.max_write_buffer,
        })
    }

    fn fd_limits(&self) -> FdLimits {
        FdLimits {
            per_message: self.fds_per_message,
            queued: self.max_queued_fds,
        }
    }
}

/// Unix stream connections: reads with `recvmsg`, so that descriptors passed with the bytes
/// are received (and never leaked).
pub(crate) struct Unix;

impl Kind for Unix {
    type Fds = std::vec::IntoIter<OwnedFd>;

    fn recv(c: &StreamConnection<Self>, buf: &mut [u8]) -> io::Result<Read<Self::Fds>> {
        let max = c.fd_limits.per_message;
        let got = sys::recv_with_fds(c.fd, buf, max)?;
        if got.truncated {
            tracing::warn!(
                peer = %c.peer,
                max,
                received = got.fds.len(),
                "the peer passed more descriptors in one message than allowed; the excess was closed"
            );
        }
        let maybe_more = got.truncated || !got.fds.is_empty();
        Ok(Read {
            len: got.len,
            fds: got.fds.into_iter(),
            maybe_more,
        })
    }

    fn local_addr(fd: std::os::fd::RawFd) -> Option<Address> {
        sys::unix_local_addr(fd).ok().map(Address::Unix)
    }

    fn unix(c: &StreamConnection<Self>) -> Option<&dyn UnixTransport> {
        Some(c)
    }
}

impl UnixTransport for StreamConnection<Unix> {
    fn peer_credentials(&self) -> io::Result<PeerCredentials> {
        if !crate::TransportImpl::connected(self) {
            return Err(io::Error::from(io::ErrorKind::NotConnected));
        }
        let (pid, uid, gid) = sys::peer_credentials(self.fd)?;
        Ok(PeerCredentials {
            pid: u32::try_from(pid).ok().filter(|p| *p != 0),
            uid,
            gid,
        })
    }

    fn send_file_descriptors(&self, fds: Vec<OwnedFd>, data: &[u8]) -> Result<(), SendFdsError> {
        self.send_fds(fds, data)
    }

    fn max_descriptors_per_message(&self) -> usize {
        self.fd_limits.per_message
    }
}

impl Reactor {
    /// Listens on a Unix socket at `addr` (a path, or a Linux abstract name; a `&str`
    /// starting with `@` is an abstract name), building a protocol per connection with
    /// `factory` (Twisted's `listenUNIX`). See the [module](self) for what happens to an
    /// existing file at the path.
    ///
    /// # Errors
    /// `AddrInUse` when a server answers at the path (or the abstract name is taken);
    /// `AlreadyExists` when the path is a file that is not a socket; the system error
    /// (permission, missing directory); [`Error::BadAddress`] for an unnamed address or a name
    /// too long for a socket address (107 bytes).
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
    /// let dir = std::env::temp_dir().join(format!("torsion-doc-listen-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("discard.sock");
    /// let reactor = Reactor::new()?;
    /// let port = reactor.listen_unix(path.as_path(), Factory::for_protocol(|| Discard))?;
    /// assert!(path.exists());
    /// port.stop_listening();
    /// assert!(!path.exists()); // removed with the port
    /// # std::fs::remove_dir(&dir).unwrap();
    /// # Ok::<(), torsion::Error>(())
    /// ```
    #[doc(alias = "listenUNIX")]
    pub fn listen_unix<A, F>(
        &self,
        addr: A,
        factory: impl IntoFactory<F>,
    ) -> Result<ListeningPort, Error>
    where
        A: Into<UnixAddress>,
        F: ProtocolFactory + 'static,
    {
        self.listen_unix_with(addr, factory, UnixListenOptions::default())
    }

    /// [`listen_unix`](Reactor::listen_unix) with explicit options.
    ///
    /// # Errors
    /// As [`listen_unix`](Reactor::listen_unix), and [`Error::BadAddress`] for an option out of
    /// range.
    pub fn listen_unix_with<A, F>(
        &self,
        addr: A,
        factory: impl IntoFactory<F>,
        opts: UnixListenOptions,
    ) -> Result<ListeningPort, Error>
    where
        A: Into<UnixAddress>,
        F: ProtocolFactory + 'static,
    {
        let factory: Rc<F> = factory.into_factory();
        listener::listen(self, addr.into(), factory, opts)
    }

    /// Connects to the Unix socket at `addr` (Twisted's `connectUNIX`). The attempt starts on
    /// the next iteration; a server whose accept queue is full is retried until `timeout`,
    /// then [`ConnectError::TimedOut`](crate::ConnectError::TimedOut). The factory's callbacks
    /// report the outcome: [`ConnectError::Refused`](crate::ConnectError::Refused) when nobody
    /// listens on an existing socket, an I/O error for a missing path. The connection takes
    /// the default descriptor limits (see [`UnixListenOptions::fds_per_message`] and
    /// [`max_queued_fds`](UnixListenOptions::max_queued_fds)).
    #[doc(alias = "connectUNIX")]
    pub fn connect_unix<A, F>(
        &self,
        addr: A,
        factory: impl IntoFactory<F>,
        timeout: Duration,
    ) -> Connector
    where
        A: Into<UnixAddress>,
        F: ClientFactory + 'static,
    {
        let factory: Rc<F> = factory.into_factory();
        let c = connector::new(self, addr.into(), factory, timeout);
        c.connect();
        c
    }
}

impl Reactor {
    /// [`listen_unix_with`](Reactor::listen_unix_with) for a shared factory of any type (what
    /// the Unix endpoints use).
    pub(crate) fn listen_unix_dyn(
        &self,
        addr: UnixAddress,
        factory: Rc<dyn ProtocolFactory>,
        opts: UnixListenOptions,
    ) -> Result<ListeningPort, Error> {
        listener::listen(self, addr, factory, opts)
    }
}

impl ReactorUnix for Reactor {
    fn listen_unix_on(
        &self,
        addr: UnixAddress,
        factory: Rc<dyn ProtocolFactory>,
    ) -> Result<ListeningPort, Error> {
        listener::listen(self, addr, factory, UnixListenOptions::default())
    }

    fn connect_unix_to(
        &self,
        addr: UnixAddress,
        factory: Rc<dyn ClientFactory>,
        timeout: Duration,
    ) -> Connector {
        let c = connector::new(self, addr, factory, timeout);
        c.connect();
        c
    }
}
