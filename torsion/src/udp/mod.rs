//! Datagrams: UDP over IPv4 and IPv6, and Unix datagram sockets (Twisted's `listenUDP`,
//! `listenMulticast`, `listenUNIXDatagram`, `DatagramProtocol` and `IUDPTransport`).
//!
//! A [`DatagramProtocol`] handles the datagrams of one socket; the socket's
//! [`DatagramTransport`] sends them, connects the socket to one peer, and sets the broadcast
//! and multicast options. [`Reactor::listen_udp`] and [`Reactor::listen_unix_datagram`] bind a
//! socket and start its protocol; [`Reactor::connect_udp`] and
//! [`Reactor::connect_unix_datagram`] make a socket connected to one peer.
//! [`MemoryDatagramTransport`] runs a datagram protocol in a unit test with no socket.
//!
//! # What torsion guarantees (and how it differs from Twisted)
//! * **No buffering, no silent loss on send.** A datagram is sent at once or not at all, as in
//!   Twisted; every write returns whether it was handed to the kernel. A send that would block
//!   (the socket's send buffer is full, or the device queue: `EAGAIN`, `ENOBUFS`) is
//!   [`DatagramError::WouldBlock`]: the datagram is dropped and counted
//!   ([`DatagramStats::send_dropped`]); resending is up to the caller. (Twisted raises the
//!   `OSError` from `write`.)
//! * **Sizes are checked.** A datagram larger than the protocol allows (65,507 bytes of UDP
//!   payload over IPv4, 65,527 over IPv6) is [`DatagramError::TooLarge`], never cut. A
//!   received datagram larger than the receive buffer
//!   ([`DatagramOptions::max_datagram_size`], 64 KiB by default, enough for any UDP datagram)
//!   is detected (`MSG_TRUNC`) and never delivered in part: the protocol's
//!   [`datagram_truncated`](DatagramProtocol::datagram_truncated) is called with its real
//!   length, it is counted, and a warning is logged (at most one per port every 10 s).
//! * **Refusals.** On a connected socket, an ICMP "port unreachable" (answering an earlier
//!   datagram) makes the kernel report `ECONNREFUSED`; the protocol's
//!   [`connection_refused`](DatagramProtocol::connection_refused) runs whichever found it: the
//!   receive loop (at once), or a write (on a later iteration, as the write may come from one of
//!   the protocol's own callbacks; the write also returns [`DatagramError::Refused`]). A Unix
//!   datagram socket connected to a server that went away learns it the same way.
//! * **Fair reading.** One readiness event reads at most
//!   [`DatagramOptions::reads_per_event`] datagrams (64 by default), with `recvmmsg(2)` batches
//!   of [`DatagramOptions::recv_batch`], so one flooded socket cannot starve the others.
//! * **Addresses.** The sender of a datagram is an [`Address`]: [`Address::Tcp`] (torsion's
//!   variant for any IP socket address) for UDP, [`Address::Unix`] for a Unix socket. A
//!   dual-stack IPv6 socket reports its IPv4 peers as IPv4 addresses and accepts IPv4
//!   addresses to send to.
//!
//! # Examples
//! A UDP echo server and a client on one reactor:
//! ```
//! use torsion::udp::{DatagramContext, DatagramProtocol};
//! use torsion::{Address, Reactor};
//!
//! struct Echo;
//! impl DatagramProtocol for Echo {
//!     fn datagram_received(&mut self, cx: &mut DatagramContext<'_>, data: &[u8], from: &Address) {
//!         cx.transport().write_to(data, from).unwrap();
//!     }
//! }
//!
//! struct Client;
//! impl DatagramProtocol for Client {
//!     fn start_protocol(&mut self, cx: &mut DatagramContext<'_>) {
//!         cx.transport().write(b"ping").unwrap(); // a connected socket: no address needed
//!     }
//!     fn datagram_received(&mut self, cx: &mut DatagramContext<'_>, data: &[u8], _: &Address) {
//!         assert_eq!(data, b"ping");
//!         cx.transport().stop_listening();
//!         cx.reactor().stop().unwrap();
//!     }
//! }
//!
//! let reactor = Reactor::new()?;
//! let server = reactor.listen_udp("127.0.0.1:0", Echo)?;
//! reactor.connect_udp(server.host(), Client)?;
//! reactor.run()?;
//! server.stop_listening();
//! # Ok::<(), torsion::Error>(())
//! ```

use std::cell::RefCell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;

use crate::interfaces::{Address, UnixAddress};
use crate::{Error, Reactor};

mod memory;
mod port;

pub use memory::{MemoryDatagramTransport, SentDatagram};

/// The most UDP payload one IPv4 datagram carries (65,535 minus the IP and UDP headers).
pub const MAX_UDP4_PAYLOAD: usize = 65_507;

/// The most UDP payload one IPv6 datagram carries without jumbograms (65,535 minus the UDP
/// header).
pub const MAX_UDP6_PAYLOAD: usize = 65_527;

/// The largest receive buffer [`DatagramOptions::max_datagram_size`] may ask for (Unix
/// datagrams can be larger than UDP's).
pub const MAX_RECEIVE_SIZE: usize = 4 << 20;

// ---------------------------------------------------------------------------------- protocol

/// What a datagram protocol callback is given: the reactor and the socket's transport.
#[derive(Debug)]
pub struct DatagramContext<'a> {
    reactor: &'a Reactor,
    transport: &'a DatagramTransport,
}

impl<'a> DatagramContext<'a> {
    /// A context for calling a datagram protocol's callbacks (for transports and tests).
    pub fn new(reactor: &'a Reactor, transport: &'a DatagramTransport) -> DatagramContext<'a> {
        DatagramContext { reactor, transport }
    }

    /// The reactor the socket runs on.
    pub fn reactor(&self) -> &'a Reactor {
        self.reactor
    }

    /// The socket's transport. Clone it to keep it.
    pub fn transport(&self) -> &'a DatagramTransport {
        self.transport
    }
}

/// The handler of one datagram socket (Twisted's `DatagramProtocol`). Its callbacks are never
/// nested: closing and refusals found while sending are delivered on a later iteration.
///
/// # Examples
/// A protocol that answers `PING` with `PONG`, tested without a socket:
/// ```
/// use torsion::udp::{DatagramContext, DatagramProtocol, MemoryDatagramTransport};
/// use torsion::Address;
///
/// struct Pong;
/// impl DatagramProtocol for Pong {
///     fn datagram_received(&mut self, cx: &mut DatagramContext<'_>, data: &[u8], from: &Address) {
///         if data == b"PING" {
///             cx.transport().write_to(b"PONG", from).unwrap();
///         }
///     }
/// }
///
/// let t = MemoryDatagramTransport::new()?;
/// let mut p = Pong;
/// t.start(&mut p);
/// let peer = Address::from("192.0.2.7:5000".parse::<std::net::SocketAddr>().unwrap());
/// t.receive(&mut p, b"PING", &peer);
/// t.receive(&mut p, b"other", &peer);
/// let sent = t.take();
/// assert_eq!(sent.len(), 1);
/// assert_eq!((&sent[0].data[..], sent[0].to.as_ref()), (&b"PONG"[..], Some(&peer)));
/// # Ok::<(), torsion::Error>(())
/// ```
pub trait DatagramProtocol {
    /// The socket is bound and reading (Twisted's `startProtocol`). Clone `cx.transport()` to
    /// send later from elsewhere.
    #[doc(alias = "startProtocol")]
    fn start_protocol(&mut self, cx: &mut DatagramContext<'_>) {
        let _ = cx;
    }

    /// A datagram arrived from `from`, whole (Twisted's `datagramReceived`).
    #[doc(alias = "datagramReceived")]
    fn datagram_received(&mut self, cx: &mut DatagramContext<'_>, data: &[u8], from: &Address);

    /// The connected peer refused a datagram sent earlier (an ICMP port unreachable answered
    /// it: nothing listens there). Only connected sockets learn this (Twisted's
    /// `connectionRefused`).
    #[doc(alias = "connectionRefused")]
    fn connection_refused(&mut self, cx: &mut DatagramContext<'_>) {
        let _ = cx;
    }

    /// A datagram of `len` bytes from `from` was larger than the receive buffer
    /// ([`DatagramOptions::max_datagram_size`]) and was dropped, not delivered in part. The
    /// transport has counted it and logged a warning already.
    fn datagram_truncated(&mut self, cx: &mut DatagramContext<'_>, len: usize, from: &Address) {
        let _ = (cx, len, from);
    }

    /// The socket was closed: [`stop_listening`](DatagramTransport::stop_listening), or the
    /// reactor shut down (Twisted's `stopProtocol`). Sends fail from now on.
    #[doc(alias = "stopProtocol")]
    fn stop_protocol(&mut self, cx: &mut DatagramContext<'_>) {
        let _ = cx;
    }
}

// ---------------------------------------------------------------------------------- errors

/// Why a datagram was not sent, or an option not set.
#[derive(Debug)]
#[non_exhaustive]
pub enum DatagramError {
    /// The datagram is larger than the transport can send in one piece (Twisted's
    /// `MessageLengthError`); `max` is the limit when known (UDP's), `None` when the kernel
    /// refused it (a Unix socket's limit depends on its buffers).
    TooLarge {
        /// The datagram's length.
        len: usize,
        /// The most the transport sends.
        max: Option<usize>,
    },
    /// The socket's send buffer (or the device queue) is full: the datagram was dropped and
    /// counted ([`DatagramStats::send_dropped`]). UDP does not buffer; resend later if needed.
    WouldBlock,
    /// [`write`](DatagramTransport::write) without an address on a socket that is not
    /// connected.
    NotConnected,
    /// The address cannot be sent to from this socket: another family (IPv6 from an IPv4
    /// socket, IP from a Unix socket), not a socket address, or not the peer of a connected
    /// socket (Twisted's `InvalidAddressError`).
    WrongAddress {
        /// The refused address.
        addr: Address,
        /// Why.
        why: &'static str,
    },
    /// The connected peer refused an earlier datagram (ICMP port unreachable); the protocol's
    /// `connection_refused` runs too.
    Refused,
    /// The socket was closed ([`stop_listening`](DatagramTransport::stop_listening)).
    Closed,
    /// This transport cannot do that (multicast on a Unix socket, for example).
    Unsupported(&'static str),
    /// A value out of range (a multicast group that is not a multicast address, ...).
    InvalidArgument(String),
    /// Another system error.
    Io(io::Error),
}

impl fmt::Display for DatagramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatagramError::TooLarge { len, max: Some(m) } => {
                write!(f, "datagram of {len} bytes is too large (at most {m})")
            }
            DatagramError::TooLarge { len, max: None } => {
                write!(f, "datagram of {len} bytes is too large for this socket")
            }
            DatagramError::WouldBlock => {
                f.write_str("the socket's send buffer is full: datagram dropped")
            }
            DatagramError::NotConnected => {
                f.write_str("no address given and the socket is not connected")
            }
            DatagramError::WrongAddress { addr, why } => {
                write!(f, "cannot send to {addr}: {why}")
            }
            DatagramError::Refused => f.write_str("the peer refused an earlier datagram"),
            DatagramError::Closed => f.write_str("the datagram socket is closed"),
            DatagramError::Unsupported(what) => write!(f, "not supported: {what}"),
            DatagramError::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            DatagramError::Io(_) => f.write_str("datagram socket operation failed"),
        }
    }
}

impl std::error::Error for DatagramError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DatagramError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for DatagramError {
    fn from(e: io::Error) -> Self {
        DatagramError::Io(e)
    }
}

// ---------------------------------------------------------------------------------- options

/// Options for [`Reactor::listen_udp_with`] and [`Reactor::listen_unix_datagram_with`]; every
/// number is range-checked when the socket is made.
///
/// # Examples
/// ```
/// use torsion::udp::DatagramOptions;
///
/// // Small datagrams only: bigger recvmmsg batches in the same memory.
/// let opts = DatagramOptions { max_datagram_size: 2048, recv_batch: 32, ..Default::default() };
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramOptions {
    /// The receive buffer per datagram, 1 to [`MAX_RECEIVE_SIZE`] (default 65,536: any UDP
    /// datagram fits). A larger datagram is dropped and reported, never cut (Twisted's
    /// `maxPacketSize`, 8192 there).
    pub max_datagram_size: usize,
    /// Datagrams read per readiness event at most, 1 to 65,536 (default 64), so that one busy
    /// socket does not starve the others (Twisted's `maxThroughput`, in bytes there).
    pub reads_per_event: usize,
    /// Datagrams received per system call, 1 to 1,024 (default 16): more than 1 uses
    /// `recvmmsg(2)`, 1 uses `recvmsg(2)`. The batch's memory, `recv_batch *
    /// max_datagram_size`, is capped at 1 MiB by receiving fewer at a time. Batches pay when
    /// datagrams queue up: draining a queue of small datagrams costs about 1.35x less CPU per
    /// datagram than `recvmsg` one at a time (`udp-bench`'s burst mode, in `bench/`).
    pub recv_batch: usize,
    /// SO_REUSEADDR and SO_REUSEPORT, so that several sockets (processes) can bind the same
    /// port and all receive its multicast (Twisted's `listenMultiple`). Default false.
    pub reuse_addr: bool,
    /// For IPv6 addresses: IPv6 only. Default false (dual-stack, as torsion's TCP: `[::]`
    /// receives IPv4 too).
    pub v6_only: bool,
    /// SO_RCVBUF, if set.
    pub receive_buffer_size: Option<usize>,
    /// SO_SNDBUF, if set.
    pub send_buffer_size: Option<usize>,
    /// For a Unix socket bound to a path: the file's permission bits (e.g. `0o660`), if set.
    pub mode: Option<u32>,
}

impl Default for DatagramOptions {
    fn default() -> Self {
        DatagramOptions {
            max_datagram_size: 65_536,
            reads_per_event: 64,
            recv_batch: 16,
            reuse_addr: false,
            v6_only: false,
            receive_buffer_size: None,
            send_buffer_size: None,
            mode: None,
        }
    }
}

/// Memory one receive batch may use.
const BATCH_BYTES: usize = 1 << 20;

impl DatagramOptions {
    fn check(&self) -> Result<(), Error> {
        let bad = |what: String| Err(Error::Io(io::Error::new(io::ErrorKind::InvalidInput, what)));
        if !(1..=MAX_RECEIVE_SIZE).contains(&self.max_datagram_size) {
            return bad(format!(
                "max_datagram_size must be 1 to {MAX_RECEIVE_SIZE}, not {}",
                self.max_datagram_size
            ));
        }
        if !(1..=65_536).contains(&self.reads_per_event) {
            return bad(format!(
                "reads_per_event must be 1 to 65536, not {}",
                self.reads_per_event
            ));
        }
        if !(1..=1024).contains(&self.recv_batch) {
            return bad(format!(
                "recv_batch must be 1 to 1024, not {}",
                self.recv_batch
            ));
        }
        for (name, v) in [
            ("receive_buffer_size", self.receive_buffer_size),
            ("send_buffer_size", self.send_buffer_size),
        ] {
            if let Some(v) = v {
                if !(1..=i32::MAX as usize).contains(&v) {
                    return bad(format!("{name} must be 1 to {}, not {v}", i32::MAX));
                }
            }
        }
        if let Some(m) = self.mode {
            if m > 0o7777 {
                return bad(format!("mode must be at most 0o7777, not {m:#o}"));
            }
        }
        Ok(())
    }

    /// Slots per receive call: `recv_batch`, fewer when the batch would pass 1 MiB.
    fn slots(&self) -> usize {
        self.recv_batch
            .min((BATCH_BYTES / self.max_datagram_size).max(1))
            .min(self.reads_per_event)
    }
}

/// Which network interface a multicast option names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interface {
    /// The system's choice (Twisted's `interface=""`).
    #[default]
    Any,
    /// The IPv4 interface that has this address (`127.0.0.1` is `lo`). IPv4 sockets only.
    Addr(Ipv4Addr),
    /// The interface with this index (see [`Interface::named`]); IPv4 and IPv6.
    Index(u32),
}

impl Interface {
    /// The interface called `name` (`"lo"`, `"eth0"`), by index.
    ///
    /// # Errors
    /// The system error when there is no such interface.
    ///
    /// # Examples
    /// ```
    /// use torsion::udp::Interface;
    ///
    /// assert!(matches!(Interface::named("lo"), Ok(Interface::Index(_))));
    /// assert!(Interface::named("no-such-interface").is_err());
    /// ```
    pub fn named(name: &str) -> Result<Interface, DatagramError> {
        Ok(Interface::Index(crate::sys::interface_index(name)?))
    }

    pub(crate) fn sys(self) -> crate::sys::McastIf {
        match self {
            Interface::Any => crate::sys::McastIf::Any,
            Interface::Addr(a) => crate::sys::McastIf::Addr(a),
            Interface::Index(i) => crate::sys::McastIf::Index(i),
        }
    }
}

/// What a datagram transport counted since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DatagramStats {
    /// Datagrams delivered to the protocol.
    pub received: u64,
    /// Datagrams handed to the kernel.
    pub sent: u64,
    /// Datagrams dropped on send because the socket would block ([`DatagramError::WouldBlock`]).
    pub send_dropped: u64,
    /// Datagrams received larger than the receive buffer, dropped and reported.
    pub truncated: u64,
    /// Refusals reported by the kernel (ICMP port unreachable on a connected socket).
    pub refused: u64,
}

// ---------------------------------------------------------------------------------- transport

/// One kind of datagram transport: what [`DatagramTransport`] forwards to (Twisted's
/// `IUDPTransport` and `IMulticastTransport`). The documentation of each
/// [`DatagramTransport`] method is the specification of the method of the same name here.
/// Methods take `&self` and may be called from the transport's own protocol callbacks.
pub trait DatagramTransportImpl {
    /// See [`DatagramTransport::write_to`].
    ///
    /// # Errors
    /// See [`DatagramTransport::write_to`].
    fn write_to(&self, data: &[u8], to: &Address) -> Result<(), DatagramError>;
    /// See [`DatagramTransport::write`].
    ///
    /// # Errors
    /// See [`DatagramTransport::write`].
    fn write(&self, data: &[u8]) -> Result<(), DatagramError>;
    /// See [`DatagramTransport::connect`].
    ///
    /// # Errors
    /// See [`DatagramTransport::connect`].
    fn connect(&self, peer: &Address) -> Result<(), DatagramError>;
    /// See [`DatagramTransport::peer`].
    fn peer(&self) -> Option<Address>;
    /// See [`DatagramTransport::host`].
    fn host(&self) -> Address;
    /// See [`DatagramTransport::stop_listening`].
    fn stop_listening(&self);
    /// See [`DatagramTransport::listening`].
    fn listening(&self) -> bool;
    /// See [`DatagramTransport::max_write_size`].
    fn max_write_size(&self) -> Option<usize>;
    /// See [`DatagramTransport::pause_reading`].
    fn pause_reading(&self);
    /// See [`DatagramTransport::resume_reading`].
    fn resume_reading(&self);
    /// See [`DatagramTransport::reading`].
    fn reading(&self) -> bool;
    /// See [`DatagramTransport::stats`].
    fn stats(&self) -> DatagramStats;
    /// See [`DatagramTransport::set_broadcast_allowed`].
    ///
    /// # Errors
    /// See [`DatagramTransport::set_broadcast_allowed`].
    fn set_broadcast_allowed(&self, on: bool) -> Result<(), DatagramError>;
    /// See [`DatagramTransport::broadcast_allowed`].
    ///
    /// # Errors
    /// See [`DatagramTransport::broadcast_allowed`].
    fn broadcast_allowed(&self) -> Result<bool, DatagramError>;
    /// See [`DatagramTransport::join_group`] (`join` false: `leave_group`).
    ///
    /// # Errors
    /// See [`DatagramTransport::join_group`].
    fn membership(&self, group: IpAddr, iface: Interface, join: bool) -> Result<(), DatagramError>;
    /// See [`DatagramTransport::set_ttl`].
    ///
    /// # Errors
    /// See [`DatagramTransport::set_ttl`].
    fn set_ttl(&self, ttl: u8) -> Result<(), DatagramError>;
    /// See [`DatagramTransport::ttl`].
    ///
    /// # Errors
    /// See [`DatagramTransport::ttl`].
    fn ttl(&self) -> Result<u8, DatagramError>;
    /// See [`DatagramTransport::set_loopback`].
    ///
    /// # Errors
    /// See [`DatagramTransport::set_loopback`].
    fn set_loopback(&self, on: bool) -> Result<(), DatagramError>;
    /// See [`DatagramTransport::loopback`].
    ///
    /// # Errors
    /// See [`DatagramTransport::loopback`].
    fn loopback(&self) -> Result<bool, DatagramError>;
    /// See [`DatagramTransport::set_interface`].
    ///
    /// # Errors
    /// See [`DatagramTransport::set_interface`].
    fn set_interface(&self, iface: Interface) -> Result<(), DatagramError>;
}

/// The handle of one datagram socket (Twisted's UDP `Port`, its `IUDPTransport` and
/// `IMulticastTransport`), given to every [`DatagramProtocol`] callback and returned by
/// [`Reactor::listen_udp`]. Cheap to clone; clones are the same socket and compare equal.
#[derive(Clone)]
pub struct DatagramTransport(Rc<dyn DatagramTransportImpl>);

impl DatagramTransport {
    /// A handle over a datagram transport implementation.
    pub fn new(imp: Rc<dyn DatagramTransportImpl>) -> DatagramTransport {
        DatagramTransport(imp)
    }

    /// Sends one datagram to `to` (Twisted's `write(data, addr)`). On a connected socket `to`
    /// must be the peer.
    ///
    /// # Errors
    /// [`DatagramError::TooLarge`] (nothing is cut), [`WouldBlock`](DatagramError::WouldBlock)
    /// (dropped and counted), [`WrongAddress`](DatagramError::WrongAddress),
    /// [`Refused`](DatagramError::Refused), [`Closed`](DatagramError::Closed), or the system
    /// error (`Io`: network unreachable, permission denied for a broadcast address without
    /// [`set_broadcast_allowed`](Self::set_broadcast_allowed), ...).
    pub fn write_to(&self, data: &[u8], to: &Address) -> Result<(), DatagramError> {
        self.0.write_to(data, to)
    }

    /// Sends one datagram to the connected peer (Twisted's `write(data)` in connected mode).
    ///
    /// # Errors
    /// [`DatagramError::NotConnected`], and as [`write_to`](Self::write_to).
    pub fn write(&self, data: &[u8]) -> Result<(), DatagramError> {
        self.0.write(data)
    }

    /// Connects the socket to `peer` (Twisted's `connect(host, port)`): [`write`](Self::write)
    /// then sends there, only datagrams from `peer` are received, and refusals reach the
    /// protocol's `connection_refused`. Connecting again changes the peer.
    ///
    /// # Errors
    /// [`DatagramError::WrongAddress`] for an address of another family, or the system error.
    pub fn connect(&self, peer: &Address) -> Result<(), DatagramError> {
        self.0.connect(peer)
    }

    /// The connected peer, if any.
    pub fn peer(&self) -> Option<Address> {
        self.0.peer()
    }

    /// The local address (Twisted's `getHost`), with the real port when port 0 was asked for.
    pub fn host(&self) -> Address {
        self.0.host()
    }

    /// Closes the socket now (the port is free at once); the protocol's `stop_protocol` runs
    /// on a later iteration. A Unix socket's file is removed. Idempotent.
    #[doc(alias = "stopListening")]
    pub fn stop_listening(&self) {
        self.0.stop_listening();
    }

    /// True until [`stop_listening`](Self::stop_listening) (or the reactor's shutdown).
    pub fn listening(&self) -> bool {
        self.0.listening()
    }

    /// The largest datagram [`write_to`](Self::write_to) accepts, when the transport knows it
    /// (65,507 for UDP over IPv4, 65,527 over IPv6; `None` for a Unix socket, whose limit is
    /// the kernel's).
    pub fn max_write_size(&self) -> Option<usize> {
        self.0.max_write_size()
    }

    /// Stops reading (Twisted's `stopReading`): datagrams wait in the socket's receive buffer
    /// (and the kernel drops what does not fit) until
    /// [`resume_reading`](Self::resume_reading). For a protocol that cannot keep up, or that
    /// waits for something else first.
    ///
    /// # Examples
    /// ```
    /// use torsion::udp::{DatagramContext, DatagramProtocol};
    /// use torsion::{Address, Reactor};
    ///
    /// struct Sink;
    /// impl DatagramProtocol for Sink {
    ///     fn datagram_received(&mut self, _: &mut DatagramContext<'_>, _: &[u8], _: &Address) {}
    /// }
    ///
    /// let reactor = Reactor::new()?;
    /// let port = reactor.listen_udp("127.0.0.1:0", Sink)?;
    /// port.pause_reading();
    /// assert!(!port.reading());
    /// port.resume_reading();
    /// assert!(port.reading());
    /// port.stop_listening();
    /// # Ok::<(), torsion::Error>(())
    /// ```
    #[doc(alias = "stopReading")]
    pub fn pause_reading(&self) {
        self.0.pause_reading();
    }

    /// Starts reading again after [`pause_reading`](Self::pause_reading) (Twisted's
    /// `startReading`).
    #[doc(alias = "startReading")]
    pub fn resume_reading(&self) {
        self.0.resume_reading();
    }

    /// True while the socket is open and reading is not paused.
    pub fn reading(&self) -> bool {
        self.0.reading()
    }

    /// What the transport counted so far.
    pub fn stats(&self) -> DatagramStats {
        self.0.stats()
    }

    /// Allows or forbids sending to broadcast addresses (SO_BROADCAST; off by default, as
    /// Twisted's `setBroadcastAllowed`).
    ///
    /// # Errors
    /// The system error; [`DatagramError::Unsupported`] on a Unix socket.
    #[doc(alias = "setBroadcastAllowed")]
    pub fn set_broadcast_allowed(&self, on: bool) -> Result<(), DatagramError> {
        self.0.set_broadcast_allowed(on)
    }

    /// Whether sending to broadcast addresses is allowed.
    ///
    /// # Errors
    /// As [`set_broadcast_allowed`](Self::set_broadcast_allowed).
    #[doc(alias = "getBroadcastAllowed")]
    pub fn broadcast_allowed(&self) -> Result<bool, DatagramError> {
        self.0.broadcast_allowed()
    }

    /// Joins the multicast group `group` on `iface` (Twisted's `joinGroup`); datagrams sent to
    /// the group and this socket's port are then received.
    ///
    /// # Errors
    /// [`DatagramError::InvalidArgument`] when `group` is not a multicast address or not of the
    /// socket's family; [`Unsupported`](DatagramError::Unsupported) on a Unix socket; the
    /// system error (no such interface, no multicast route).
    #[doc(alias = "joinGroup")]
    pub fn join_group(&self, group: IpAddr, iface: Interface) -> Result<(), DatagramError> {
        self.0.membership(group, iface, true)
    }

    /// Leaves a multicast group joined with [`join_group`](Self::join_group) (Twisted's
    /// `leaveGroup`).
    ///
    /// # Errors
    /// As [`join_group`](Self::join_group); the system error when the group was not joined.
    #[doc(alias = "leaveGroup")]
    pub fn leave_group(&self, group: IpAddr, iface: Interface) -> Result<(), DatagramError> {
        self.0.membership(group, iface, false)
    }

    /// Sets the time-to-live (hop limit) of outgoing multicast datagrams (Twisted's `setTTL`;
    /// default 1: the local network).
    ///
    /// # Errors
    /// As [`set_broadcast_allowed`](Self::set_broadcast_allowed).
    #[doc(alias = "setTTL")]
    pub fn set_ttl(&self, ttl: u8) -> Result<(), DatagramError> {
        self.0.set_ttl(ttl)
    }

    /// The multicast time-to-live.
    ///
    /// # Errors
    /// As [`set_broadcast_allowed`](Self::set_broadcast_allowed).
    #[doc(alias = "getTTL")]
    pub fn ttl(&self) -> Result<u8, DatagramError> {
        self.0.ttl()
    }

    /// Whether this host's own multicast datagrams are looped back to its sockets (Twisted's
    /// `setLoopbackMode`; on by default).
    ///
    /// # Errors
    /// As [`set_broadcast_allowed`](Self::set_broadcast_allowed).
    #[doc(alias = "setLoopbackMode")]
    pub fn set_loopback(&self, on: bool) -> Result<(), DatagramError> {
        self.0.set_loopback(on)
    }

    /// The multicast loopback flag.
    ///
    /// # Errors
    /// As [`set_broadcast_allowed`](Self::set_broadcast_allowed).
    #[doc(alias = "getLoopbackMode")]
    pub fn loopback(&self) -> Result<bool, DatagramError> {
        self.0.loopback()
    }

    /// The interface outgoing multicast leaves by (Twisted's `setOutgoingInterface`).
    ///
    /// # Errors
    /// As [`join_group`](Self::join_group).
    #[doc(alias = "setOutgoingInterface")]
    pub fn set_interface(&self, iface: Interface) -> Result<(), DatagramError> {
        self.0.set_interface(iface)
    }

    /// The implementation behind the handle.
    pub fn implementation(&self) -> &Rc<dyn DatagramTransportImpl> {
        &self.0
    }

    fn addr(&self) -> *const u8 {
        Rc::as_ptr(&self.0) as *const u8
    }
}

impl PartialEq for DatagramTransport {
    fn eq(&self, other: &Self) -> bool {
        self.addr() == other.addr()
    }
}

impl Eq for DatagramTransport {}

impl Hash for DatagramTransport {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.addr() as usize).hash(state);
    }
}

impl fmt::Debug for DatagramTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramTransport")
            .field("host", &self.host())
            .field("peer", &self.peer())
            .field("listening", &self.listening())
            .finish()
    }
}

/// Checks a multicast group against the socket's family.
pub(crate) fn check_group(group: IpAddr, v6_socket: bool) -> Result<(), DatagramError> {
    if !group.is_multicast() {
        return Err(DatagramError::InvalidArgument(format!(
            "{group} is not a multicast address"
        )));
    }
    if group.is_ipv6() != v6_socket {
        return Err(DatagramError::InvalidArgument(format!(
            "{group} is not of the socket's address family"
        )));
    }
    Ok(())
}

/// A protocol shared between the caller and the socket: `Rc<RefCell<P>>` is a protocol too, so
/// a test or a program can look at its state after handing it over.
impl<P: DatagramProtocol + ?Sized> DatagramProtocol for Rc<RefCell<P>> {
    fn start_protocol(&mut self, cx: &mut DatagramContext<'_>) {
        self.borrow_mut().start_protocol(cx);
    }
    fn datagram_received(&mut self, cx: &mut DatagramContext<'_>, data: &[u8], from: &Address) {
        self.borrow_mut().datagram_received(cx, data, from);
    }
    fn connection_refused(&mut self, cx: &mut DatagramContext<'_>) {
        self.borrow_mut().connection_refused(cx);
    }
    fn datagram_truncated(&mut self, cx: &mut DatagramContext<'_>, len: usize, from: &Address) {
        self.borrow_mut().datagram_truncated(cx, len, from);
    }
    fn stop_protocol(&mut self, cx: &mut DatagramContext<'_>) {
        self.borrow_mut().stop_protocol(cx);
    }
}

// ---------------------------------------------------------------------------------- reactor

fn first_addr<A: ToSocketAddrs>(addr: A) -> Result<SocketAddr, Error> {
    addr.to_socket_addrs()
        .map_err(|e| Error::BadAddress(e.to_string()))?
        .next()
        .ok_or_else(|| Error::BadAddress("no address given".into()))
}

impl Reactor {
    /// Binds a UDP socket to `addr` (port 0 picks a free port; `[::]` is dual-stack) and starts
    /// `protocol` on it (Twisted's `listenUDP`). The returned transport is the socket's: its
    /// [`host`](DatagramTransport::host) has the real port.
    ///
    /// # Errors
    /// [`Error::BadAddress`], or the system error (address in use, permission).
    ///
    /// # Examples
    /// ```
    /// use torsion::udp::{DatagramContext, DatagramProtocol};
    /// use torsion::{Address, Reactor};
    ///
    /// struct Sink;
    /// impl DatagramProtocol for Sink {
    ///     fn datagram_received(&mut self, _: &mut DatagramContext<'_>, _: &[u8], _: &Address) {}
    /// }
    ///
    /// let reactor = Reactor::new()?;
    /// let port = reactor.listen_udp("127.0.0.1:0", Sink)?;
    /// assert_ne!(port.host().as_tcp().unwrap().port(), 0);
    /// port.stop_listening();
    /// # Ok::<(), torsion::Error>(())
    /// ```
    #[doc(alias = "listenUDP")]
    #[doc(alias = "listenMulticast")]
    pub fn listen_udp<A: ToSocketAddrs>(
        &self,
        addr: A,
        protocol: impl DatagramProtocol + 'static,
    ) -> Result<DatagramTransport, Error> {
        self.listen_udp_with(addr, protocol, DatagramOptions::default())
    }

    /// [`listen_udp`](Reactor::listen_udp) with options (Twisted's `maxPacketSize`,
    /// `listenMultiple`, ...).
    ///
    /// # Errors
    /// As [`listen_udp`](Reactor::listen_udp); `Io(InvalidInput)` for an option out of range.
    pub fn listen_udp_with<A: ToSocketAddrs>(
        &self,
        addr: A,
        protocol: impl DatagramProtocol + 'static,
        opts: DatagramOptions,
    ) -> Result<DatagramTransport, Error> {
        let addr = first_addr(addr)?;
        port::open(self, port::Bind::Ip(addr), None, Box::new(protocol), opts)
    }

    /// A UDP socket connected to `peer` (bound to an unspecified address of its family, any
    /// port), running `protocol`: [`write`](DatagramTransport::write) sends to `peer`, only
    /// `peer`'s datagrams arrive, and refusals reach `connection_refused`.
    ///
    /// # Errors
    /// As [`listen_udp`](Reactor::listen_udp).
    pub fn connect_udp<A: ToSocketAddrs>(
        &self,
        peer: A,
        protocol: impl DatagramProtocol + 'static,
    ) -> Result<DatagramTransport, Error> {
        self.connect_udp_with(peer, protocol, DatagramOptions::default())
    }

    /// [`connect_udp`](Reactor::connect_udp) with options.
    ///
    /// # Errors
    /// As [`listen_udp_with`](Reactor::listen_udp_with).
    pub fn connect_udp_with<A: ToSocketAddrs>(
        &self,
        peer: A,
        protocol: impl DatagramProtocol + 'static,
        opts: DatagramOptions,
    ) -> Result<DatagramTransport, Error> {
        let peer = first_addr(peer)?;
        let local: SocketAddr = if peer.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        port::open(
            self,
            port::Bind::Ip(local),
            Some(Address::Tcp(peer)),
            Box::new(protocol),
            opts,
        )
    }

    /// Binds a Unix datagram socket to `addr` (a path or a Linux abstract name; `Unnamed`
    /// picks an abstract name automatically) and starts `protocol` on it (Twisted's
    /// `listenUNIXDatagram`). A socket file left by a dead server is replaced; a live one is
    /// refused (`AddrInUse`). The file is removed by `stop_listening`.
    ///
    /// # Errors
    /// The system error (address in use, permission, a path too long).
    ///
    /// # Examples
    /// ```
    /// use torsion::interfaces::UnixAddress;
    /// use torsion::udp::{DatagramContext, DatagramProtocol};
    /// use torsion::{Address, Reactor};
    ///
    /// struct Sink;
    /// impl DatagramProtocol for Sink {
    ///     fn datagram_received(&mut self, _: &mut DatagramContext<'_>, _: &[u8], _: &Address) {}
    /// }
    ///
    /// let reactor = Reactor::new()?;
    /// let name = format!("torsion-doc-{}", std::process::id());
    /// let port = reactor.listen_unix_datagram(UnixAddress::Abstract(name.into_bytes()), Sink)?;
    /// assert!(port.host().to_string().starts_with("unix:@torsion-doc-"));
    /// port.stop_listening();
    /// # Ok::<(), torsion::Error>(())
    /// ```
    #[doc(alias = "listenUNIXDatagram")]
    pub fn listen_unix_datagram(
        &self,
        addr: UnixAddress,
        protocol: impl DatagramProtocol + 'static,
    ) -> Result<DatagramTransport, Error> {
        self.listen_unix_datagram_with(addr, protocol, DatagramOptions::default())
    }

    /// [`listen_unix_datagram`](Reactor::listen_unix_datagram) with options.
    ///
    /// # Errors
    /// As [`listen_unix_datagram`](Reactor::listen_unix_datagram); `Io(InvalidInput)` for an
    /// option out of range.
    pub fn listen_unix_datagram_with(
        &self,
        addr: UnixAddress,
        protocol: impl DatagramProtocol + 'static,
        opts: DatagramOptions,
    ) -> Result<DatagramTransport, Error> {
        port::open(self, port::Bind::Unix(addr), None, Box::new(protocol), opts)
    }

    /// A Unix datagram socket connected to `peer` (Twisted's `connectUNIXDatagram`), bound to
    /// an automatic abstract name so that the peer can answer.
    ///
    /// # Errors
    /// The system error (`ENOENT` when nothing is bound at `peer`, `ECONNREFUSED` for a dead
    /// socket file).
    #[doc(alias = "connectUNIXDatagram")]
    pub fn connect_unix_datagram(
        &self,
        peer: UnixAddress,
        protocol: impl DatagramProtocol + 'static,
    ) -> Result<DatagramTransport, Error> {
        self.connect_unix_datagram_with(peer, protocol, DatagramOptions::default())
    }

    /// [`connect_unix_datagram`](Reactor::connect_unix_datagram) with options (a larger
    /// [`max_datagram_size`](DatagramOptions::max_datagram_size) for answers bigger than
    /// 64 KiB, for example).
    ///
    /// # Errors
    /// As [`connect_unix_datagram`](Reactor::connect_unix_datagram); `Io(InvalidInput)` for an
    /// option out of range.
    pub fn connect_unix_datagram_with(
        &self,
        peer: UnixAddress,
        protocol: impl DatagramProtocol + 'static,
        opts: DatagramOptions,
    ) -> Result<DatagramTransport, Error> {
        port::open(
            self,
            port::Bind::Unix(UnixAddress::Unnamed),
            Some(Address::Unix(peer)),
            Box::new(protocol),
            opts,
        )
    }
}
