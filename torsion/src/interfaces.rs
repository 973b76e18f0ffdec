//! The contract between the reactor, the transports and user code, written down once (the way
//! Twisted's `interfaces.py` is its specification): [`Protocol`], [`Transport`],
//! [`ProtocolFactory`], [`ClientFactory`], [`Producer`], [`Consumer`], [`Connector`],
//! [`ListeningPort`], [`Address`] and the [`Context`] every protocol callback receives.
//!
//! A protocol is written against [`Transport`], a cheap handle over any kind of stream
//! transport: a TCP connection, the in-memory transports of the [`testing`](crate::testing)
//! kit, a protocol wrapper's transport ([`wrap`](crate::protocol::wrap)), a Unix-socket
//! connection ([`unix`](crate::unix)), and later process pipes and TLS. Each kind implements
//! [`TransportImpl`]; a protocol never sees which one it runs on unless it asks
//! ([`Transport::tcp`], [`Transport::unix`]).
//!
//! # Guarantees every transport gives every protocol
//! * `connection_made` runs first, once; `connection_lost` runs last, exactly once, and never
//!   nested inside another callback of the same protocol (closing calls made from inside a
//!   callback take effect later, on the transport's own schedule: for the reactor's transports,
//!   a later iteration).
//! * No `RefCell` borrow of the transport is held while a protocol callback runs: a callback may
//!   call anything on any transport or on the reactor.
//! * Bytes written are delivered in order, none dropped while connected; writes after the
//!   connection closed are dropped silently, as in Twisted.
//!
//! # Flow control
//! A transport is both ends of Twisted's producer/consumer pair. As a [`Consumer`] it takes a
//! registered [`Producer`]: a *streaming* (push) producer is paused when the transport's write
//! buffer passes its high-water mark and resumed at its low-water mark; a *pull* producer is
//! asked for more each time the buffer empties. As a [`Producer`] it is paused and resumed by
//! whoever consumes what it reads: a proxy registers one connection as the streaming producer of
//! the other, and a slow reader on one side stops reading on the other.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use crate::error::{ConnectError, Reason};
use crate::{Error, Reactor};

// ---------------------------------------------------------------------------------- addresses

/// The address of one end of a connection (Twisted's `IAddress` family): what
/// [`Transport::peer`] and [`Transport::host`] return and what
/// [`ProtocolFactory::build_protocol`] is given.
///
/// # Examples
/// ```
/// use torsion::Address;
///
/// let a = Address::from("127.0.0.1:8000".parse::<std::net::SocketAddr>().unwrap());
/// assert_eq!(a.to_string(), "127.0.0.1:8000");
/// assert_eq!(a.as_tcp().map(|s| s.port()), Some(8000));
/// assert_eq!(Address::memory("server").to_string(), "memory:server");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// A TCP endpoint, IPv4 or IPv6 (Twisted's `IPv4Address`/`IPv6Address`).
    Tcp(SocketAddr),
    /// A Unix socket (Twisted's `UNIXAddress`).
    Unix(UnixAddress),
    /// The other end of a child process's pipes (Twisted's `_ProcessAddress`), with the child's
    /// process id when known.
    Process {
        /// The child's process id.
        pid: Option<u32>,
    },
    /// One end of an in-memory connection (the testing kit), named for logs.
    Memory(String),
}

/// Where a Unix socket lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UnixAddress {
    /// A path in the file system.
    Path(PathBuf),
    /// A Linux abstract name (no file; the leading NUL byte is not included).
    Abstract(Vec<u8>),
    /// An unbound socket (the client end of most connections).
    Unnamed,
}

impl Address {
    /// An in-memory address named `name`.
    pub fn memory(name: impl Into<String>) -> Address {
        Address::Memory(name.into())
    }

    /// The socket address of a TCP endpoint.
    pub fn as_tcp(&self) -> Option<SocketAddr> {
        match self {
            Address::Tcp(a) => Some(*a),
            _ => None,
        }
    }

    /// The address of a Unix socket.
    ///
    /// # Examples
    /// ```
    /// use torsion::interfaces::UnixAddress;
    /// use torsion::Address;
    ///
    /// let a = Address::Unix(UnixAddress::abstract_name("torsion-demo"));
    /// assert_eq!(a.to_string(), "unix:@torsion-demo");
    /// assert!(a.as_unix().is_some() && a.as_tcp().is_none());
    /// ```
    pub fn as_unix(&self) -> Option<&UnixAddress> {
        match self {
            Address::Unix(a) => Some(a),
            _ => None,
        }
    }
}

impl UnixAddress {
    /// A Unix socket at `path` in the file system.
    pub fn path(path: impl AsRef<Path>) -> UnixAddress {
        UnixAddress::Path(path.as_ref().to_path_buf())
    }

    /// A Linux abstract socket name (no file: it goes away with its last socket).
    pub fn abstract_name(name: impl AsRef<[u8]>) -> UnixAddress {
        UnixAddress::Abstract(name.as_ref().to_vec())
    }
}

impl From<PathBuf> for UnixAddress {
    fn from(p: PathBuf) -> UnixAddress {
        UnixAddress::Path(p)
    }
}

impl From<&Path> for UnixAddress {
    fn from(p: &Path) -> UnixAddress {
        UnixAddress::Path(p.to_path_buf())
    }
}

impl From<&str> for UnixAddress {
    /// A path; a leading `@` names a Linux abstract socket instead (as `ss` and systemd write
    /// them).
    fn from(s: &str) -> UnixAddress {
        match s.strip_prefix('@') {
            Some(name) => UnixAddress::Abstract(name.as_bytes().to_vec()),
            None => UnixAddress::Path(PathBuf::from(s)),
        }
    }
}

impl From<UnixAddress> for Address {
    fn from(a: UnixAddress) -> Address {
        Address::Unix(a)
    }
}

/// A TCP address resolves to itself (so `TcpStream::connect(port.address())` works); any other
/// kind is refused with `InvalidInput`.
impl std::net::ToSocketAddrs for Address {
    type Iter = std::option::IntoIter<SocketAddr>;

    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        match self {
            Address::Tcp(a) => Ok(Some(*a).into_iter()),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{other} is not an IP socket address"),
            )),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Address {
        Address::Tcp(a)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(UnixAddress::Path(p)) => write!(f, "unix:{}", p.display()),
            Address::Unix(UnixAddress::Abstract(n)) => {
                write!(f, "unix:@{}", String::from_utf8_lossy(n))
            }
            Address::Unix(UnixAddress::Unnamed) => f.write_str("unix:(unnamed)"),
            Address::Process { pid: Some(p) } => write!(f, "process:{p}"),
            Address::Process { pid: None } => f.write_str("process"),
            Address::Memory(n) => write!(f, "memory:{n}"),
        }
    }
}

// ---------------------------------------------------------------------------------- protocols

/// What a protocol callback is given: the reactor it runs on and the transport of its
/// connection.
///
/// Built by the transport for each callback; wrappers and tests build their own with
/// [`Context::new`].
#[derive(Debug)]
pub struct Context<'a> {
    reactor: &'a Reactor,
    transport: &'a Transport,
}

impl<'a> Context<'a> {
    /// A context for calling a protocol's callbacks.
    pub fn new(reactor: &'a Reactor, transport: &'a Transport) -> Context<'a> {
        Context { reactor, transport }
    }

    /// The reactor the connection runs on.
    pub fn reactor(&self) -> &'a Reactor {
        self.reactor
    }

    /// The connection's transport. Clone it to keep it (a clone is the same connection).
    pub fn transport(&self) -> &'a Transport {
        self.transport
    }
}

/// What a protocol wants when the peer closes its sending side (sends FIN) while this side may
/// still write (Twisted's `IHalfCloseableProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HalfClose {
    /// Close the whole connection: `connection_lost(ConnectionDone)` follows (the default).
    /// What the protocol already wrote is still sent first (a reply is never cut behind a
    /// clean close), for a bounded time (the reactor's TCP transports: 30 s by default, see
    /// [`ListenOptions::close_flush_timeout`](crate::tcp::ListenOptions::close_flush_timeout)),
    /// after which the connection is reset with [`Reason::TimedOut`]. Twisted drops the
    /// buffer here instead.
    #[default]
    Close,
    /// Keep the connection open for writing; stop reading. Call `lose_connection` when done.
    KeepWriting,
}

/// The per-connection handler (Twisted's `IProtocol`). One instance per connection, built by a
/// [`ProtocolFactory`]; every callback gets a [`Context`] with the reactor and the transport.
///
/// # Examples
/// An echo protocol, tested without a socket on the testing kit's string transport:
/// ```
/// use torsion::{Context, Protocol};
/// use torsion::testing::StringTransport;
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
///         cx.transport().write(data);
///     }
/// }
///
/// let t = StringTransport::new()?;
/// let mut echo = Echo;
/// t.connect(&mut echo);
/// t.receive(&mut echo, b"hello");
/// assert_eq!(t.value(), b"hello");
/// # Ok::<(), torsion::Error>(())
/// ```
pub trait Protocol {
    /// The connection is established. Clone `cx.transport()` to write later from elsewhere.
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// Bytes arrived. Their division into calls is arbitrary: a protocol must reassemble.
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]);

    /// The connection is gone; `reason` says why ([`Reason::ConnectionDone`] for a clean close).
    /// The transport is closed: writes to it are dropped.
    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        let _ = (cx, reason);
    }

    /// The peer closed its sending side. Return [`HalfClose::KeepWriting`] to go on writing
    /// (half-close); the default closes the connection.
    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        let _ = cx;
        HalfClose::Close
    }

    /// Our sending side was closed by `lose_write_connection` and the buffer flushed.
    fn write_connection_lost(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// A descriptor the peer passed over a Unix socket (Twisted's
    /// `IFileDescriptorReceiver.fileDescriptorReceived`), delivered before the
    /// `data_received` of the bytes it came with. The protocol owns it: keep it, or drop it to
    /// close it. The default closes it.
    fn file_descriptor_received(&mut self, cx: &mut Context<'_>, fd: OwnedFd) {
        let _ = cx;
        tracing::debug!(
            ?fd,
            "a passed descriptor was not wanted by the protocol; closed"
        );
        drop(fd);
    }
}

/// Makes protocols for a listening port or a connector (Twisted's `IProtocolFactory`).
pub trait ProtocolFactory {
    /// A protocol for a connection with the peer `addr`, or `None` to refuse it (the
    /// connection is closed).
    fn build_protocol(&self, addr: &Address) -> Option<Box<dyn Protocol>>;

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
    fn client_connection_failed(&self, connector: &Connector, reason: ConnectError) {
        let _ = (connector, reason);
    }

    /// An established connection ended (after the protocol's `connection_lost`). Call
    /// `connector.connect()` to reconnect.
    fn client_connection_lost(&self, connector: &Connector, reason: Reason) {
        let _ = (connector, reason);
    }
}

// ---------------------------------------------------------------------- producers, consumers

/// A source of data written to a consumer (Twisted's `IPushProducer`/`IPullProducer`).
///
/// A *streaming* (push) producer writes whenever it likes and is paused when the consumer's
/// buffer passes its high-water mark, resumed when it drains below the low-water mark. A *pull*
/// producer writes only when asked, through `resume_producing`, each time the buffer empties.
/// Methods take `&self`: keep state in `Cell`/`RefCell`. A [`Transport`] is itself a streaming
/// producer of the bytes it reads.
pub trait Producer {
    /// Stop writing until `resume_producing` (streaming producers only).
    fn pause_producing(&self) {}

    /// Write more (streaming: resume after a pause; pull: produce the next chunk now).
    fn resume_producing(&self);

    /// The consumer is gone: stop for good.
    fn stop_producing(&self) {}
}

/// Something a [`Producer`] writes into (Twisted's `IConsumer`); every [`Transport`] is one.
///
/// # Examples
/// A proxy: what the client sends is written to the server, and a server that reads slowly
/// stops the reading from the client (end-to-end backpressure):
/// ```
/// use std::rc::Rc;
/// use torsion::{Consumer, Transport};
///
/// fn splice(from: &Transport, to: &Transport) -> Result<(), torsion::Error> {
///     // `from` is paused while `to`'s buffer is above its high-water mark.
///     to.register_producer(Rc::new(from.clone()), true)
/// }
/// ```
pub trait Consumer {
    /// Registers `producer`; `streaming` tells a push producer (paused and resumed by the
    /// consumer's buffer) from a pull one (asked for data each time the buffer empties, and once
    /// at registration). On a closed consumer the producer is told `stop_producing` at once.
    ///
    /// # Errors
    /// [`Error::ProducerAlreadyRegistered`] when one is registered.
    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool) -> Result<(), Error>;

    /// Unregisters the producer; a pending `lose_connection` can then complete.
    fn unregister_producer(&self);

    /// Writes `data` (what the producer produces).
    fn write(&self, data: &[u8]);
}

// ---------------------------------------------------------------------------------- transports

/// One kind of stream transport: what [`Transport`] forwards to (Twisted's `ITransport`,
/// `ITCPTransport`, `IConsumer` and `IPushProducer` together).
///
/// Implement it to add a kind of transport (a TLS layer, a protocol wrapper, an in-memory
/// pipe); protocols use it through [`Transport`]. Every method takes `&self` and may be called
/// from inside a protocol callback of this very transport: keep state in `Cell`/`RefCell`
/// and never hold a borrow while calling user code. The documentation of each [`Transport`]
/// method is the specification of the method of the same name here.
pub trait TransportImpl {
    /// See [`Transport::write_sequence`].
    fn write_sequence(&self, data: &[&[u8]]);

    /// See [`Transport::write`].
    fn write(&self, data: &[u8]) {
        self.write_sequence(&[data]);
    }

    /// See [`Transport::write_shared`]. The default copies (`write`); a transport with a write
    /// buffer keeps the shared bytes instead.
    fn write_shared(&self, data: Rc<[u8]>) {
        self.write(&data);
    }

    /// See [`Transport::lose_connection`].
    fn lose_connection(&self);

    /// See [`Transport::abort_connection`].
    fn abort_connection(&self);

    /// See [`Transport::lose_write_connection`].
    fn lose_write_connection(&self);

    /// See [`Transport::register_producer`].
    ///
    /// # Errors
    /// [`Error::ProducerAlreadyRegistered`] when one is registered.
    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool) -> Result<(), Error>;

    /// See [`Transport::unregister_producer`].
    fn unregister_producer(&self);

    /// See [`Transport::pause_producing`].
    fn pause_producing(&self);

    /// See [`Transport::resume_producing`].
    fn resume_producing(&self);

    /// See [`Transport::stop_producing`].
    fn stop_producing(&self) {
        self.lose_connection();
    }

    /// See [`Transport::peer`].
    fn peer(&self) -> Address;

    /// See [`Transport::host`].
    fn host(&self) -> Address;

    /// See [`Transport::buffered`].
    fn buffered(&self) -> usize;

    /// See [`Transport::set_write_buffer_limits`].
    fn set_write_buffer_limits(&self, high: usize, low: usize);

    /// See [`Transport::connected`].
    fn connected(&self) -> bool;

    /// See [`Transport::disconnecting`].
    fn disconnecting(&self) -> bool;

    /// See [`Transport::tcp`]. A wrapper over a TCP transport forwards its inner transport's.
    fn tcp(&self) -> Option<&dyn TcpOptions> {
        None
    }

    /// See [`Transport::unix`]. A wrapper over a Unix-socket transport forwards its inner
    /// transport's.
    fn unix(&self) -> Option<&dyn UnixTransport> {
        None
    }
}

/// The credentials of the process at the other end of a Unix socket (SO_PEERCRED), as they
/// were when it connected (or, for a `socketpair`, when the pair was made).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerCredentials {
    /// The peer's process id (`None` when the kernel does not know it, e.g. across PID
    /// namespaces).
    pub pid: Option<u32>,
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
}

/// Why [`UnixTransport::send_file_descriptors`] refused descriptors (they are closed).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendFdsError {
    /// No bytes to carry them: a descriptor travels with at least one byte of the stream.
    NoData,
    /// No descriptors given.
    NoDescriptors,
    /// More descriptors than one message may carry.
    TooMany {
        /// How many were given.
        given: usize,
        /// The connection's limit per message.
        max: usize,
    },
    /// Too many descriptors already wait in the write buffer to be sent.
    QueueFull {
        /// Descriptors waiting, with these.
        queued: usize,
        /// The connection's limit.
        max: usize,
    },
    /// The connection is closed, closing, or its sending side is shut down.
    NotConnected,
}

impl fmt::Display for SendFdsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendFdsError::NoData => f.write_str("descriptors must be sent with at least one byte"),
            SendFdsError::NoDescriptors => f.write_str("no descriptors to send"),
            SendFdsError::TooMany { given, max } => write!(
                f,
                "{given} descriptors in one message: at most {max} may go together"
            ),
            SendFdsError::QueueFull { queued, max } => write!(
                f,
                "{queued} descriptors would wait to be sent: at most {max} may"
            ),
            SendFdsError::NotConnected => f.write_str("the connection is not open for writing"),
        }
    }
}

impl std::error::Error for SendFdsError {}

/// What a Unix-socket transport offers beyond [`Transport`] (Twisted's `IUNIXTransport`),
/// reached through [`Transport::unix`].
pub trait UnixTransport {
    /// The peer's credentials (SO_PEERCRED).
    ///
    /// # Errors
    /// The system error, or `NotConnected` once the socket is closed.
    fn peer_credentials(&self) -> io::Result<PeerCredentials>;

    /// Sends `fds` with the bytes `data` (Twisted's `sendFileDescriptor`, with the bytes given
    /// here rather than whatever is written next): written as [`Transport::write`] writes, the
    /// descriptors travel with the first byte of `data`, so the peer receives them, in stream
    /// order, before (or with) the `data_received` that holds that byte. This end's copies
    /// are closed once they are sent (or with the connection); keep one with
    /// [`OwnedFd::try_clone`].
    ///
    /// # Errors
    /// [`SendFdsError`]: no bytes, no or too many descriptors for one message, too many
    /// waiting to be sent, or the connection is closed. Refused descriptors are closed.
    fn send_file_descriptors(&self, fds: Vec<OwnedFd>, data: &[u8]) -> Result<(), SendFdsError>;

    /// How many descriptors one message may carry on this connection, both ways: more are
    /// refused when sending, and closed (with a warning) when received.
    fn max_descriptors_per_message(&self) -> usize;
}

/// The options of a TCP socket (Twisted's `ITCPTransport` setters), reached through
/// [`Transport::tcp`]. Every call fails with `NotConnected` once the socket is closed.
pub trait TcpOptions {
    /// Sets TCP_NODELAY (disables Nagle's algorithm).
    ///
    /// # Errors
    /// The system error, or `NotConnected` after close.
    fn set_nodelay(&self, on: bool) -> io::Result<()>;

    /// TCP_NODELAY's value.
    ///
    /// # Errors
    /// As [`set_nodelay`](TcpOptions::set_nodelay).
    fn nodelay(&self) -> io::Result<bool>;

    /// Sets SO_KEEPALIVE.
    ///
    /// # Errors
    /// As [`set_nodelay`](TcpOptions::set_nodelay).
    fn set_keepalive(&self, on: bool) -> io::Result<()>;

    /// SO_KEEPALIVE's value.
    ///
    /// # Errors
    /// As [`set_nodelay`](TcpOptions::set_nodelay).
    fn keepalive(&self) -> io::Result<bool>;

    /// Sets the kernel's receive buffer size (SO_RCVBUF).
    ///
    /// # Errors
    /// As [`set_nodelay`](TcpOptions::set_nodelay).
    fn set_receive_buffer_size(&self, bytes: usize) -> io::Result<()>;

    /// Sets the kernel's send buffer size (SO_SNDBUF).
    ///
    /// # Errors
    /// As [`set_nodelay`](TcpOptions::set_nodelay).
    fn set_send_buffer_size(&self, bytes: usize) -> io::Result<()>;
}

/// The write side of a connection, handed to every [`Protocol`] callback through its
/// [`Context`]: a handle over any kind of stream transport ([`TransportImpl`]).
///
/// Cheap to clone; clones are the same connection and compare equal (identity, not value), and
/// hash alike, so a chat server can keep a set of its clients' transports. A clone may be
/// stored and written to from any callback on the reactor thread. Writes after the connection
/// closed are dropped, as in Twisted.
///
/// # Examples
/// ```
/// use torsion::{Context, Protocol, Transport};
///
/// struct Greeter { me: Option<Transport> }
/// impl Protocol for Greeter {
///     fn connection_made(&mut self, cx: &mut Context<'_>) {
///         cx.transport().write(b"hello\r\n");
///         self.me = Some(cx.transport().clone());
///     }
///     fn data_received(&mut self, cx: &mut Context<'_>, _data: &[u8]) {
///         assert_eq!(self.me.as_ref(), Some(cx.transport()));
///         cx.transport().lose_connection();
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Transport(Rc<dyn TransportImpl>);

impl Transport {
    /// A handle over a transport implementation.
    pub fn new(imp: Rc<dyn TransportImpl>) -> Transport {
        Transport(imp)
    }

    /// The implementation behind the handle.
    pub fn implementation(&self) -> &Rc<dyn TransportImpl> {
        &self.0
    }

    /// Writes `data`: sent at once as far as the peer takes it, the rest buffered and sent when
    /// it can be. Never blocks; never drops data while connected; dropped after the connection
    /// closed (or once it is being aborted).
    ///
    /// The buffer is not bounded by the transport: a peer that does not read makes it grow
    /// with every write. Bound it with flow control: register a streaming [`Producer`] (it is
    /// paused above the high-water mark), or watch [`buffered`](Self::buffered).
    ///
    /// # Examples
    /// ```
    /// let t = torsion::testing::StringTransport::new()?;
    /// t.transport().write(b"hello, ");
    /// t.transport().write_sequence(&[b"wor", b"ld"]);
    /// assert_eq!(t.value(), b"hello, world");
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn write(&self, data: &[u8]) {
        self.0.write(data);
    }

    /// Writes bytes shared with other writers: what cannot be sent at once is kept by
    /// reference, not copied. This is how one large payload goes to many peers (a file served
    /// to every client, a broadcast) at the memory cost of one copy, however many peers are
    /// slow to read it.
    ///
    /// # Examples
    /// ```
    /// use std::rc::Rc;
    ///
    /// let poem: Rc<[u8]> = Rc::from(&b"Sonnet - To Science\n"[..]);
    /// let t = torsion::testing::StringTransport::new()?;
    /// t.transport().write_shared(poem.clone());
    /// assert_eq!(t.value(), &poem[..]);
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn write_shared(&self, data: Rc<[u8]>) {
        self.0.write_shared(data);
    }

    /// Writes several buffers, with one vectored system call where possible (Twisted's
    /// `writeSequence`).
    pub fn write_sequence(&self, data: &[&[u8]]) {
        self.0.write_sequence(data);
    }

    /// Closes the connection once the write buffer is flushed and any registered producer has
    /// unregistered: FIN, then `connection_lost(ConnectionDone)`. Stops reading at once.
    ///
    /// # Examples
    /// ```
    /// let t = torsion::testing::StringTransport::new()?;
    /// t.transport().write(b"bye\r\n"); // still delivered: the close waits for the buffer
    /// t.transport().lose_connection();
    /// assert!(t.transport().disconnecting());
    /// assert_eq!(t.value(), b"bye\r\n");
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn lose_connection(&self) {
        self.0.lose_connection();
    }

    /// Closes at once: discards the buffer, resets the connection, and delivers
    /// `connection_lost(ConnectionAborted)` later (never re-entrantly).
    pub fn abort_connection(&self) {
        self.0.abort_connection();
    }

    /// Half-close: once the buffer is flushed, shut down the sending side (FIN) and keep
    /// reading. The protocol's `write_connection_lost` runs then.
    pub fn lose_write_connection(&self) {
        self.0.lose_write_connection();
    }

    /// Registers a producer that writes into this transport (see [`Consumer`]).
    ///
    /// # Errors
    /// [`Error::ProducerAlreadyRegistered`] when one is registered.
    ///
    /// # Examples
    /// ```
    /// use std::rc::Rc;
    /// use torsion::Producer;
    ///
    /// struct Ticker;
    /// impl Producer for Ticker {
    ///     fn resume_producing(&self) {}
    /// }
    ///
    /// let t = torsion::testing::StringTransport::new()?;
    /// t.transport().register_producer(Rc::new(Ticker), true)?;
    /// assert!(t.transport().register_producer(Rc::new(Ticker), true).is_err());
    /// t.transport().unregister_producer();
    /// assert!(t.producer().is_none());
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn register_producer(
        &self,
        producer: Rc<dyn Producer>,
        streaming: bool,
    ) -> Result<(), Error> {
        self.0.register_producer(producer, streaming)
    }

    /// Unregisters the producer; a pending `lose_connection` can then complete.
    pub fn unregister_producer(&self) {
        self.0.unregister_producer();
    }

    /// Stops reading (Twisted's `pauseProducing` on a transport): no `data_received` until
    /// [`resume_producing`](Self::resume_producing).
    ///
    /// # Examples
    /// ```
    /// let t = torsion::testing::StringTransport::new()?;
    /// t.transport().pause_producing();
    /// assert!(t.reading_paused());
    /// t.transport().resume_producing();
    /// assert!(!t.reading_paused());
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn pause_producing(&self) {
        self.0.pause_producing();
    }

    /// Starts reading again after [`pause_producing`](Self::pause_producing).
    pub fn resume_producing(&self) {
        self.0.resume_producing();
    }

    /// Same as [`lose_connection`](Self::lose_connection) (Twisted's `stopProducing`).
    pub fn stop_producing(&self) {
        self.0.stop_producing();
    }

    /// The remote address (Twisted's `getPeer`).
    pub fn peer(&self) -> Address {
        self.0.peer()
    }

    /// The local address (Twisted's `getHost`).
    pub fn host(&self) -> Address {
        self.0.host()
    }

    /// Bytes waiting in the write buffer.
    pub fn buffered(&self) -> usize {
        self.0.buffered()
    }

    /// Sets the write buffer's high- and low-water marks (defaults 64 KiB and 16 KiB for the
    /// reactor's transports); `low` is capped at `high`.
    pub fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.0.set_write_buffer_limits(high, low);
    }

    /// True until the connection closes (or is being aborted).
    pub fn connected(&self) -> bool {
        self.0.connected()
    }

    /// True once `lose_connection` was called.
    pub fn disconnecting(&self) -> bool {
        self.0.disconnecting()
    }

    /// The TCP socket's options, when this transport runs over TCP (directly or under a
    /// wrapper that forwards them).
    ///
    /// # Examples
    /// ```
    /// use torsion::{Context, Protocol};
    ///
    /// struct LowLatency;
    /// impl Protocol for LowLatency {
    ///     fn connection_made(&mut self, cx: &mut Context<'_>) {
    ///         if let Some(tcp) = cx.transport().tcp() {
    ///             tcp.set_nodelay(true).unwrap();
    ///         }
    ///     }
    ///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    /// }
    /// ```
    pub fn tcp(&self) -> Option<&dyn TcpOptions> {
        self.0.tcp()
    }

    /// The Unix-socket side of this transport (peer credentials, descriptor passing), when it
    /// runs over a Unix socket (directly or under a wrapper that forwards it).
    ///
    /// # Examples
    /// ```
    /// use torsion::{Context, Protocol};
    ///
    /// struct LocalOnly;
    /// impl Protocol for LocalOnly {
    ///     fn connection_made(&mut self, cx: &mut Context<'_>) {
    ///         let root = cx
    ///             .transport()
    ///             .unix()
    ///             .and_then(|u| u.peer_credentials().ok())
    ///             .is_some_and(|c| c.uid == 0);
    ///         if !root {
    ///             cx.transport().lose_connection();
    ///         }
    ///     }
    ///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    /// }
    /// ```
    pub fn unix(&self) -> Option<&dyn UnixTransport> {
        self.0.unix()
    }

    fn addr(&self) -> *const u8 {
        Rc::as_ptr(&self.0) as *const u8
    }
}

impl PartialEq for Transport {
    fn eq(&self, other: &Self) -> bool {
        self.addr() == other.addr()
    }
}

impl Eq for Transport {}

impl Hash for Transport {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.addr() as usize).hash(state);
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("peer", &self.peer())
            .field("host", &self.host())
            .field("connected", &self.connected())
            .finish()
    }
}

impl Producer for Transport {
    fn pause_producing(&self) {
        Transport::pause_producing(self);
    }

    fn resume_producing(&self) {
        Transport::resume_producing(self);
    }

    fn stop_producing(&self) {
        Transport::stop_producing(self);
    }
}

impl Consumer for Transport {
    fn register_producer(&self, producer: Rc<dyn Producer>, streaming: bool) -> Result<(), Error> {
        Transport::register_producer(self, producer, streaming)
    }

    fn unregister_producer(&self) {
        Transport::unregister_producer(self);
    }

    fn write(&self, data: &[u8]) {
        Transport::write(self, data);
    }
}

// ---------------------------------------------------------------------- connectors and ports

/// One kind of outgoing connection attempt: what [`Connector`] forwards to (Twisted's
/// `IConnector`). The documentation of each [`Connector`] method is its specification.
pub trait ConnectorImpl {
    /// See [`Connector::connect`].
    fn connect(&self);
    /// See [`Connector::stop_connecting`].
    fn stop_connecting(&self);
    /// See [`Connector::disconnect`].
    fn disconnect(&self);
    /// See [`Connector::destination`].
    fn destination(&self) -> String;
    /// See [`Connector::transport`].
    fn transport(&self) -> Option<Transport>;
    /// See [`Connector::connecting`].
    fn connecting(&self) -> bool;
}

/// An outgoing connection's handle (Twisted's `IConnector`), given to the [`ClientFactory`]
/// callbacks; [`connect`](Connector::connect) starts a new attempt (to retry after a failure,
/// or reconnect after a loss). Cheap to clone; clones are the same connector.
#[derive(Clone)]
pub struct Connector(Rc<dyn ConnectorImpl>);

impl Connector {
    /// A handle over a connector implementation.
    pub fn new(imp: Rc<dyn ConnectorImpl>) -> Connector {
        Connector(imp)
    }

    /// Starts a connection attempt. Does nothing unless disconnected.
    pub fn connect(&self) {
        self.0.connect();
    }

    /// Cancels a running attempt; the factory's `client_connection_failed` gets
    /// [`ConnectError::Cancelled`] and nothing else follows. Does nothing when not connecting.
    pub fn stop_connecting(&self) {
        self.0.stop_connecting();
    }

    /// Stops connecting, or closes the established connection (`lose_connection`).
    pub fn disconnect(&self) {
        self.0.disconnect();
    }

    /// Where this connector connects to, for people (`host:port` for TCP).
    pub fn destination(&self) -> String {
        self.0.destination()
    }

    /// The transport while connected.
    pub fn transport(&self) -> Option<Transport> {
        self.0.transport()
    }

    /// True while resolving or connecting.
    pub fn connecting(&self) -> bool {
        self.0.connecting()
    }
}

impl PartialEq for Connector {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::addr_eq(Rc::as_ptr(&self.0), Rc::as_ptr(&other.0))
    }
}

impl Eq for Connector {}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("destination", &self.destination())
            .field("connecting", &self.connecting())
            .finish()
    }
}

/// One kind of listening port: what [`ListeningPort`] forwards to (Twisted's
/// `IListeningPort`).
pub trait ListeningPortImpl {
    /// See [`ListeningPort::address`].
    fn address(&self) -> Address;
    /// See [`ListeningPort::stop_listening`].
    fn stop_listening(&self);
    /// See [`ListeningPort::accepted`].
    fn accepted(&self) -> u64 {
        0
    }
    /// See [`ListeningPort::shed`].
    fn shed(&self) -> u64 {
        0
    }
}

/// A listening port (Twisted's `IListeningPort`). Cheap to clone.
///
/// Dropping the handle does not stop listening; call [`stop_listening`](Self::stop_listening).
#[derive(Clone)]
pub struct ListeningPort(Rc<dyn ListeningPortImpl>);

impl ListeningPort {
    /// A handle over a listening port implementation.
    pub fn new(imp: Rc<dyn ListeningPortImpl>) -> ListeningPort {
        ListeningPort(imp)
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn address(&self) -> Address {
        self.0.address()
    }

    /// The bound TCP port (0 for a port that is not TCP).
    pub fn port(&self) -> u16 {
        self.address().as_tcp().map_or(0, |a| a.port())
    }

    /// Stops listening and closes the socket; established connections are not affected.
    /// The factory's `stop_factory` runs if this was its last port. Idempotent.
    pub fn stop_listening(&self) {
        self.0.stop_listening();
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.0.accepted()
    }

    /// Pending clients closed unserved because the process was out of descriptors.
    pub fn shed(&self) -> u64 {
        self.0.shed()
    }
}

impl fmt::Debug for ListeningPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListeningPort")
            .field("address", &self.address())
            .finish()
    }
}

/// Listening and connecting over TCP (Twisted's `IReactorTCP`), as an interface, so that code
/// which starts servers and clients can be handed the testing kit's
/// [`MemoryReactor`](crate::testing::MemoryReactor) instead of a real [`Reactor`].
pub trait ReactorTcp {
    /// Listens on `addr` (port 0 picks a free port), building a protocol per connection with
    /// `factory` (Twisted's `listenTCP`).
    ///
    /// # Errors
    /// The system error (address in use, permission).
    fn listen_tcp_on(
        &self,
        addr: SocketAddr,
        factory: Rc<dyn ProtocolFactory>,
    ) -> Result<ListeningPort, Error>;

    /// Connects to `host:port` (Twisted's `connectTCP`); the factory's callbacks report the
    /// outcome, [`ConnectError::TimedOut`] after `timeout`.
    fn connect_tcp_to(
        &self,
        host: &str,
        port: u16,
        factory: Rc<dyn ClientFactory>,
        timeout: Duration,
    ) -> Connector;
}

/// Listening and connecting over Unix stream sockets (Twisted's `IReactorUNIX`), as an
/// interface (see [`ReactorTcp`]).
pub trait ReactorUnix {
    /// Listens on `addr` (a path or a Linux abstract name) with the default
    /// [`UnixListenOptions`](crate::unix::UnixListenOptions) (Twisted's `listenUNIX`).
    ///
    /// # Errors
    /// The system error, a live server or a file that is not a socket at the path, or a bad
    /// address.
    fn listen_unix_on(
        &self,
        addr: UnixAddress,
        factory: Rc<dyn ProtocolFactory>,
    ) -> Result<ListeningPort, Error>;

    /// Connects to `addr` (Twisted's `connectUNIX`); the factory's callbacks report the
    /// outcome, [`ConnectError::TimedOut`] after `timeout`.
    fn connect_unix_to(
        &self,
        addr: UnixAddress,
        factory: Rc<dyn ClientFactory>,
        timeout: Duration,
    ) -> Connector;
}
