//! Endpoints (Twisted's `twisted.internet.endpoints`): where to listen and where to connect,
//! as values, and connections whose outcome is a [`Deferred`] that `async` code can `.await`.
//!
//! * A [`ServerEndpoint`] listens: [`listen(factory)`](ServerEndpoint::listen) gives a
//!   `Deferred<ListeningPort>`. [`TcpServerEndpoint`] is Twisted's `TCP4ServerEndpoint` (and
//!   `TCP6ServerEndpoint`: give an IPv6 interface).
//! * A [`ClientEndpoint`] connects. [`connect`](ClientEndpointExt::connect) takes a closure that
//!   builds the protocol and gives a `Deferred<Connected<P>>`: the connected protocol itself,
//!   shared (`Rc<RefCell<P>>`), and its transport, once `connection_made` has run.
//!   [`connect_protocol`] connects one protocol value you already made (Twisted's
//!   `connectProtocol`); [`connect_factory`](ClientEndpoint::connect_factory) takes any
//!   [`ProtocolFactory`] and gives the [`Transport`]. [`TcpClientEndpoint`] is Twisted's
//!   `TCP4ClientEndpoint`; [`HostnameEndpoint`] resolves a name on the reactor's bounded
//!   resolver pool and races the addresses (Happy Eyeballs, RFC 8305).
//! * [`UnixServerEndpoint`] and [`UnixClientEndpoint`] are Twisted's `UNIXServerEndpoint` and
//!   `UNIXClientEndpoint`: a path, or a Linux abstract name.
//! * [`server_from_string`] and [`client_from_string`] make endpoints from Twisted's endpoint
//!   strings (`tcp:8080:interface=127.0.0.1`, `tcp:host=example.com:port=80:timeout=5`,
//!   `unix:/run/app.sock:mode=660`, `unix:@abstract-name`); more schemes go in an
//!   [`EndpointRegistry`], or in this thread's default one with [`register_server_scheme`] /
//!   [`register_client_scheme`]. The `torsion-tls` crate adds `ssl:` and `tls:` that way.
//!
//! Endpoints run on anything that implements [`EndpointReactor`]: the real [`Reactor`], and the
//! testing kit's [`MemoryReactor`](crate::testing::MemoryReactor), on which a test plays the
//! connections an endpoint asks for without sockets or sleeps.
//!
//! # Examples
//! A server and a client, in `async` code:
//! ```
//! use std::rc::Rc;
//! use torsion::endpoints::{ClientEndpointExt, ServerEndpoint, TcpClientEndpoint, TcpServerEndpoint};
//! use torsion::{Context, Factory, Protocol, Reactor};
//!
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
//!         cx.transport().write(data);
//!     }
//! }
//!
//! #[derive(Default)]
//! struct Client { got: Vec<u8> }
//! impl Protocol for Client {
//!     fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
//!         self.got.extend_from_slice(data);
//!         cx.transport().lose_connection();
//!     }
//! }
//!
//! let reactor = Reactor::new()?;
//! let r = reactor.clone();
//! let got = reactor.run_until_complete(async move {
//!     let server = TcpServerEndpoint::new(&r, 0).interface("127.0.0.1".parse().unwrap());
//!     let port = server.listen(Rc::new(Factory::for_protocol(|| Echo))).await?;
//!
//!     let endpoint = TcpClientEndpoint::new(&r, "127.0.0.1", port.port());
//!     let client = endpoint.connect(|_| Client::default()).await?;
//!     client.transport().write(b"hello");
//!     // Wait for the echo: the protocol closes the connection when it has it.
//!     while client.transport().connected() {
//!         torsion::task::defer_later(&r, std::time::Duration::from_millis(5), || Ok(())).await?;
//!     }
//!     port.stop_listening();
//!     let got = client.protocol().borrow().got.clone();
//!     Ok::<_, torsion::Failure>(got)
//! })?;
//! assert_eq!(got, b"hello");
//! # Ok::<(), torsion::Failure>(())
//! ```

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::interfaces::{
    Address, ClientFactory, Connector, Context, HalfClose, ListeningPort, Protocol,
    ProtocolFactory, ReactorTcp, ReactorUnix, Transport, UnixAddress,
};
use crate::unix::UnixListenOptions;
use crate::{ConnectError, Deferred, Error, Failure, Reactor, Reason};

mod race;
mod strings;

pub use race::AttemptsFailed;
pub use strings::{
    client_from_string, ip, number, quote, register_client_scheme, register_server_scheme, seconds,
    server_from_string, ClientParser, EndpointArgs, EndpointError, EndpointRegistry, ServerParser,
    TcpClientDescription, TcpServerDescription, UnixClientDescription, UnixServerDescription,
};

// ------------------------------------------------------------------------------ the reactor

/// What endpoints need from a reactor: TCP with the endpoint options (backlog, bind address),
/// name resolution, and the [`Reactor`] for time. Implemented by [`Reactor`] and by the
/// testing kit's [`MemoryReactor`](crate::testing::MemoryReactor); a test may wrap either to
/// change one method (a resolver that answers what the test wants, say).
pub trait EndpointReactor: ReactorTcp {
    /// The reactor that runs the callbacks and keeps the time.
    fn reactor(&self) -> &Reactor;

    /// A shared handle on this reactor, for an endpoint to keep.
    fn shared(&self) -> Rc<dyn EndpointReactor>;

    /// Listens on `addr` with an accept queue of `backlog` (Twisted's `listenTCP`).
    ///
    /// # Errors
    /// The system error (address in use, permission).
    fn listen_tcp_backlog(
        &self,
        addr: SocketAddr,
        backlog: i32,
        factory: Rc<dyn ProtocolFactory>,
    ) -> Result<ListeningPort, Error>;

    /// Connects to `host:port`, from the local address `bind` when given (Twisted's
    /// `connectTCP` with `bindAddress`).
    fn connect_tcp_bound(
        &self,
        host: &str,
        port: u16,
        factory: Rc<dyn ClientFactory>,
        timeout: Duration,
        bind: Option<SocketAddr>,
    ) -> Connector;

    /// Resolves `host` (a name or an IP literal) to the addresses of `port`, in the
    /// resolver's order. Fails with [`ConnectError::HostNotFound`] (or
    /// [`ConnectError::Io`] when the process is out of descriptors or threads). Cancelling the
    /// Deferred abandons the lookup.
    fn resolve(&self, host: &str, port: u16) -> Deferred<Vec<SocketAddr>>;

    /// Listens on the Unix socket `addr` with `opts` (Twisted's `listenUNIX` with `mode`,
    /// `backlog` and `wantPID`). By default the real reactor's
    /// [`listen_unix_with`](Reactor::listen_unix_with), so that a wrapper which changes
    /// another method keeps real Unix sockets; the memory reactor records the call instead.
    ///
    /// # Errors
    /// As [`Reactor::listen_unix_with`].
    fn listen_unix_endpoint(
        &self,
        addr: UnixAddress,
        opts: UnixListenOptions,
        factory: Rc<dyn ProtocolFactory>,
    ) -> Result<ListeningPort, Error> {
        self.reactor().listen_unix_dyn(addr, factory, opts)
    }

    /// Connects to the Unix socket `addr` (Twisted's `connectUNIX`); the factory's callbacks
    /// report the outcome. By default the real reactor's; the memory reactor records it.
    fn connect_unix_endpoint(
        &self,
        addr: UnixAddress,
        factory: Rc<dyn ClientFactory>,
        timeout: Duration,
    ) -> Connector {
        self.reactor().connect_unix_to(addr, factory, timeout)
    }
}

impl EndpointReactor for Reactor {
    fn reactor(&self) -> &Reactor {
        self
    }

    fn shared(&self) -> Rc<dyn EndpointReactor> {
        Rc::new(self.clone())
    }

    fn listen_tcp_backlog(
        &self,
        addr: SocketAddr,
        backlog: i32,
        factory: Rc<dyn ProtocolFactory>,
    ) -> Result<ListeningPort, Error> {
        let opts = crate::tcp::ListenOptions {
            backlog,
            ..Default::default()
        };
        self.listen_tcp_dyn(addr, factory, opts)
    }

    fn connect_tcp_bound(
        &self,
        host: &str,
        port: u16,
        factory: Rc<dyn ClientFactory>,
        timeout: Duration,
        bind: Option<SocketAddr>,
    ) -> Connector {
        self.connect_tcp_dyn(host, port, factory, timeout, bind)
    }

    /// On the reactor's bounded thread pool, as the reactor's connectors resolve: many slow
    /// lookups never make many threads, and an abandoned lookup still queued is skipped.
    fn resolve(&self, host: &str, port: u16) -> Deferred<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Deferred::succeed(vec![SocketAddr::new(ip, port)]);
        }
        let abandoned = Arc::new(AtomicBool::new(false));
        let flag = abandoned.clone();
        let (d, fire) = Deferred::with_canceller(move |_| flag.store(true, Ordering::Relaxed));
        let name = host.to_string();
        let _ = crate::tcp::connector::lookup(self, name.clone(), port, abandoned).add_both(
            move |result| {
                let result = result.unwrap_or_else(|f| Err(io::Error::other(f.to_string())));
                let answer = match result {
                    Ok(a) if !a.is_empty() => Ok(a),
                    Ok(_) => Err(ConnectError::HostNotFound(format!("{name}: no address"))),
                    Err(e) if e.kind() == io::ErrorKind::Other => Err(ConnectError::io(e)),
                    Err(e) if crate::sys::is_fd_exhaustion(&e) => Err(ConnectError::io(e)),
                    Err(e) => Err(ConnectError::HostNotFound(format!("{name}: {e}"))),
                };
                let _ = fire.fire(answer.map_err(Failure::new));
                Ok(())
            },
        );
        d
    }
}

// ------------------------------------------------------------------------------ the traits

/// Something to listen on (Twisted's `IStreamServerEndpoint`).
pub trait ServerEndpoint {
    /// Starts listening with `factory`; the Deferred fires with the port, or fails with the
    /// [`Error`] (address in use, permission, ...).
    fn listen(&self, factory: Rc<dyn ProtocolFactory>) -> Deferred<ListeningPort>;

    /// What this endpoint listens on, for people.
    fn describe(&self) -> String;
}

/// Something to connect to (Twisted's `IStreamClientEndpoint`). Use it through
/// [`ClientEndpointExt::connect`] (typed) or [`connect_protocol`].
pub trait ClientEndpoint {
    /// Connects, building the protocol with `factory`: the Deferred fires with the
    /// connection's transport once the protocol's `connection_made` has run, or fails with
    /// a [`ConnectError`] ([`HostnameEndpoint`] may fail with [`AttemptsFailed`]).
    /// Cancelling it before then cancels the attempt.
    ///
    /// The factory's `start_factory` runs when the attempt starts and `stop_factory` when it
    /// failed or its connection ended.
    fn connect_factory(&self, factory: Rc<dyn ProtocolFactory>) -> Deferred<Transport>;

    /// Where this endpoint connects to, for people.
    fn describe(&self) -> String;
}

impl fmt::Debug for dyn ServerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerEndpoint({})", self.describe())
    }
}

impl fmt::Debug for dyn ClientEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientEndpoint({})", self.describe())
    }
}

/// A connected protocol and its transport: what a typed connect gives.
///
/// The protocol is shared with the connection (`Rc<RefCell<P>>`): borrow it between
/// callbacks (in `async` code, after an `.await`), never across one. A borrow held while the
/// connection calls the protocol makes that callback panic, and the connection is aborted.
/// Clones are the same connection.
pub struct Connected<P> {
    protocol: Rc<RefCell<P>>,
    transport: Transport,
}

impl<P> Clone for Connected<P> {
    fn clone(&self) -> Self {
        Connected {
            protocol: self.protocol.clone(),
            transport: self.transport.clone(),
        }
    }
}

impl<P> fmt::Debug for Connected<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connected")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl<P> Connected<P> {
    /// A handle on `protocol`, connected through `transport`.
    pub fn new(protocol: Rc<RefCell<P>>, transport: Transport) -> Connected<P> {
        Connected {
            protocol,
            transport,
        }
    }

    /// The protocol.
    pub fn protocol(&self) -> &Rc<RefCell<P>> {
        &self.protocol
    }

    /// Runs `f` on the protocol (a short `borrow_mut`).
    ///
    /// # Panics
    /// When the protocol is borrowed already (from inside one of its own callbacks).
    pub fn with<R>(&self, f: impl FnOnce(&mut P) -> R) -> R {
        f(&mut self.protocol.borrow_mut())
    }

    /// The connection's transport.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }
}

/// A protocol shared with whoever made it: the connection calls it through the `RefCell`
/// (what [`Connected`] hands out).
pub struct SharedProtocol<P>(pub Rc<RefCell<P>>);

impl<P: Protocol> Protocol for SharedProtocol<P> {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        self.0.borrow_mut().connection_made(cx);
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        self.0.borrow_mut().data_received(cx, data);
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        self.0.borrow_mut().connection_lost(cx, reason);
    }

    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        self.0.borrow_mut().read_connection_lost(cx)
    }

    fn write_connection_lost(&mut self, cx: &mut Context<'_>) {
        self.0.borrow_mut().write_connection_lost(cx);
    }
}

/// Builds one typed protocol per connection and keeps the last one built for the caller.
struct TypedFactory<P, F> {
    make: F,
    built: RefCell<Option<Rc<RefCell<P>>>>,
}

impl<P: Protocol + 'static, F: Fn(&Address) -> Option<P>> ProtocolFactory for TypedFactory<P, F> {
    fn build_protocol(&self, addr: &Address) -> Option<Box<dyn Protocol>> {
        let p = Rc::new(RefCell::new((self.make)(addr)?));
        *self.built.borrow_mut() = Some(p.clone());
        Some(Box::new(SharedProtocol(p)))
    }
}

fn typed_connect<E, P, F>(endpoint: &E, make: F) -> Deferred<Connected<P>>
where
    E: ClientEndpoint + ?Sized,
    P: Protocol + 'static,
    F: Fn(&Address) -> Option<P> + 'static,
{
    let factory = Rc::new(TypedFactory {
        make,
        built: RefCell::new(None),
    });
    let f = factory.clone();
    endpoint
        .connect_factory(factory)
        .add_callback(move |transport| {
            let protocol = f.built.borrow_mut().take().ok_or_else(|| {
                Failure::msg("the connection was made but its protocol is gone (a bug)")
            })?;
            Ok(Connected::new(protocol, transport))
        })
}

/// Typed connects for every [`ClientEndpoint`] (boxed ones too).
pub trait ClientEndpointExt: ClientEndpoint {
    /// Connects, building the protocol with `make(peer)`; the Deferred fires with the
    /// [`Connected`] protocol once its `connection_made` has run. Await it in `async` code.
    ///
    /// # Examples
    /// Over the testing kit's memory reactor, where the test plays the connection:
    /// ```
    /// use torsion::endpoints::{ClientEndpointExt, TcpClientEndpoint};
    /// use torsion::testing::MemoryReactor;
    /// use torsion::{Context, Factory, Protocol};
    ///
    /// #[derive(Default)]
    /// struct Hello { greeted: bool }
    /// impl Protocol for Hello {
    ///     fn connection_made(&mut self, cx: &mut Context<'_>) {
    ///         cx.transport().write(b"hello");
    ///         self.greeted = true;
    ///     }
    ///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    /// }
    ///
    /// let mr = MemoryReactor::new()?;
    /// let d = TcpClientEndpoint::new(&mr, "10.0.0.7", 7).connect(|_| Hello::default());
    /// assert!(!d.called());
    /// let pump = mr.tcp_clients()[0].accept(&Factory::for_protocol(|| Hello::default())).unwrap();
    /// let hello = d.try_result().unwrap().unwrap();
    /// assert!(hello.protocol().borrow().greeted);
    /// assert_eq!(hello.transport().peer().to_string(), "10.0.0.7:7");
    /// # drop(pump);
    /// # Ok::<(), torsion::Error>(())
    /// ```
    fn connect<P, F>(&self, make: F) -> Deferred<Connected<P>>
    where
        P: Protocol + 'static,
        F: Fn(&Address) -> P + 'static,
    {
        typed_connect(self, move |a: &Address| Some(make(a)))
    }
}

impl<E: ClientEndpoint + ?Sized> ClientEndpointExt for E {}

/// Connects `protocol` itself through `endpoint` (Twisted's `connectProtocol`): the Deferred
/// fires with it, [`Connected`], once its `connection_made` has run.
///
/// # Examples
/// ```
/// use torsion::endpoints::{connect_protocol, TcpClientEndpoint};
/// use torsion::testing::MemoryReactor;
/// use torsion::{Context, Factory, Protocol};
///
/// struct Greeter(&'static str);
/// impl Protocol for Greeter {
///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
/// }
///
/// let mr = MemoryReactor::new()?;
/// let d = connect_protocol(&TcpClientEndpoint::new(&mr, "10.0.0.7", 7), Greeter("hi"));
/// let _pump = mr.tcp_clients()[0].accept(&Factory::for_protocol(|| Greeter("server")));
/// assert_eq!(d.try_result().unwrap().unwrap().protocol().borrow().0, "hi");
/// # Ok::<(), torsion::Error>(())
/// ```
#[doc(alias = "connectProtocol")]
pub fn connect_protocol<E, P>(endpoint: &E, protocol: P) -> Deferred<Connected<P>>
where
    E: ClientEndpoint + ?Sized,
    P: Protocol + 'static,
{
    let one = RefCell::new(Some(protocol));
    typed_connect(endpoint, move |_: &Address| one.borrow_mut().take())
}

// ------------------------------------------------------------------------------ TCP servers

/// Listens on a TCP port (Twisted's `TCP4ServerEndpoint` and `TCP6ServerEndpoint`; the
/// string `tcp:8080:interface=127.0.0.1:backlog=50`).
///
/// # Examples
/// ```
/// use std::rc::Rc;
/// use torsion::endpoints::{ServerEndpoint, TcpServerEndpoint};
/// use torsion::{Context, Factory, Protocol, Reactor};
///
/// struct Quiet;
/// impl Protocol for Quiet {
///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
/// }
///
/// let reactor = Reactor::new()?;
/// let endpoint = TcpServerEndpoint::new(&reactor, 0)
///     .interface("127.0.0.1".parse().unwrap())
///     .backlog(50);
/// let d = endpoint.listen(Rc::new(Factory::for_protocol(|| Quiet)));
/// let port = d.try_result().unwrap().unwrap(); // listening starts at once
/// assert_ne!(port.port(), 0);
/// port.stop_listening();
/// # Ok::<(), torsion::Error>(())
/// ```
#[derive(Clone)]
pub struct TcpServerEndpoint {
    net: Rc<dyn EndpointReactor>,
    port: u16,
    interface: IpAddr,
    backlog: i32,
}

impl fmt::Debug for TcpServerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The accept queue length of a [`TcpServerEndpoint`] unless told (Twisted's).
pub const DEFAULT_BACKLOG: i32 = 50;

impl TcpServerEndpoint {
    /// Listens on `port` (0: any free port) of every IPv4 interface, backlog 50.
    #[doc(alias = "TCP4ServerEndpoint")]
    pub fn new(reactor: &dyn EndpointReactor, port: u16) -> TcpServerEndpoint {
        TcpServerEndpoint {
            net: reactor.shared(),
            port,
            interface: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            backlog: DEFAULT_BACKLOG,
        }
    }

    /// From a parsed description (`tcp:` strings).
    pub fn from_description(
        reactor: &dyn EndpointReactor,
        d: &TcpServerDescription,
    ) -> TcpServerEndpoint {
        TcpServerEndpoint::new(reactor, d.port)
            .interface(d.interface)
            .backlog(d.backlog)
    }

    /// Listens on `interface` only (`::` for every IPv6 interface, Twisted's
    /// `TCP6ServerEndpoint`).
    pub fn interface(mut self, interface: IpAddr) -> TcpServerEndpoint {
        self.interface = interface;
        self
    }

    /// Sets the accept queue's length, clamped to 1..=65535.
    pub fn backlog(mut self, backlog: i32) -> TcpServerEndpoint {
        self.backlog = backlog.clamp(1, 65_535);
        self
    }

    /// The address listened on.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(self.interface, self.port)
    }
}

impl ServerEndpoint for TcpServerEndpoint {
    fn listen(&self, factory: Rc<dyn ProtocolFactory>) -> Deferred<ListeningPort> {
        match self
            .net
            .listen_tcp_backlog(self.address(), self.backlog, factory)
        {
            Ok(port) => Deferred::succeed(port),
            Err(e) => Deferred::fail(e),
        }
    }

    fn describe(&self) -> String {
        format!("tcp:{} (backlog {})", self.address(), self.backlog)
    }
}

// ------------------------------------------------------------------------------ TCP clients

/// The connect timeout of a client endpoint unless told (Twisted's).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects over TCP to a host and port (Twisted's `TCP4ClientEndpoint`; the string
/// `tcp:host=example.com:port=80:timeout=5:bindAddress=10.0.0.2`). A host name is resolved by
/// the reactor's connector, whose addresses are tried in turn (IPv4 first, as Twisted); for
/// racing IPv6 and IPv4 use [`HostnameEndpoint`].
///
/// See [`ClientEndpointExt::connect`] for an example.
#[derive(Clone)]
pub struct TcpClientEndpoint {
    net: Rc<dyn EndpointReactor>,
    host: String,
    port: u16,
    timeout: Duration,
    bind: Option<SocketAddr>,
}

impl fmt::Debug for TcpClientEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl TcpClientEndpoint {
    /// Connects to `host:port` (a name or an IP address), timeout 30 s.
    #[doc(alias = "TCP4ClientEndpoint")]
    pub fn new(reactor: &dyn EndpointReactor, host: &str, port: u16) -> TcpClientEndpoint {
        TcpClientEndpoint {
            net: reactor.shared(),
            host: host.to_string(),
            port,
            timeout: DEFAULT_CONNECT_TIMEOUT,
            bind: None,
        }
    }

    /// From a parsed description (`tcp:` strings).
    pub fn from_description(
        reactor: &dyn EndpointReactor,
        d: &TcpClientDescription,
    ) -> TcpClientEndpoint {
        let mut e = TcpClientEndpoint::new(reactor, &d.host, d.port).timeout(d.timeout);
        e.bind = d.bind;
        e
    }

    /// Fails the attempt with [`ConnectError::TimedOut`] after `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> TcpClientEndpoint {
        self.timeout = timeout;
        self
    }

    /// Binds the socket to `local` before connecting (Twisted's `bindAddress`).
    pub fn bind_address(mut self, local: SocketAddr) -> TcpClientEndpoint {
        self.bind = Some(local);
        self
    }
}

impl ClientEndpoint for TcpClientEndpoint {
    fn connect_factory(&self, factory: Rc<dyn ProtocolFactory>) -> Deferred<Transport> {
        let plan = race::Plan {
            port: self.port,
            timeout: self.timeout,
            bind: self.bind,
            delay: Duration::ZERO,
            deadline: None,
            unix: None,
        };
        race::Race::single(self.net.clone(), factory, plan, self.host.clone())
    }

    fn describe(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("tcp:{host}:{}", self.port)
    }
}

// ------------------------------------------------------------------------------ Unix sockets

/// How a Unix socket address is written in endpoint strings and descriptions: the path, or
/// `@name` for a Linux abstract name.
fn unix_text(addr: &UnixAddress) -> String {
    match addr {
        UnixAddress::Path(p) => p.display().to_string(),
        UnixAddress::Abstract(name) => format!("@{}", String::from_utf8_lossy(name)),
        UnixAddress::Unnamed => "(unnamed)".into(),
    }
}

/// Listens on a Unix socket (Twisted's `UNIXServerEndpoint`; the string
/// `unix:/run/app.sock:mode=660:backlog=50:lockfile=1`, or `unix:@name` for a Linux abstract
/// name). The socket file's policy (a live server refuses, a dead socket file is replaced, the
/// file is removed when the port stops) is [`Reactor::listen_unix`]'s.
///
/// # Examples
/// ```
/// use std::rc::Rc;
/// use torsion::endpoints::{server_from_string, ServerEndpoint};
/// use torsion::{Context, Factory, Protocol, Reactor};
///
/// struct Quiet;
/// impl Protocol for Quiet {
///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
/// }
///
/// let dir = std::env::temp_dir().join(format!("torsion-doc-unix-ep-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("app.sock");
/// let reactor = Reactor::new()?;
/// let endpoint = server_from_string(&reactor, &format!("unix:{}:mode=600", path.display()))?;
/// let port = endpoint.listen(Rc::new(Factory::for_protocol(|| Quiet))).try_result().unwrap().unwrap();
/// assert!(path.exists());
/// // lockfile=1 by default: a symbolic link naming this process.
/// let lock = std::fs::read_link(dir.join("app.sock.lock")).unwrap();
/// assert_eq!(lock.to_str(), Some(&*std::process::id().to_string()));
/// port.stop_listening();
/// assert!(!path.exists());
/// # std::fs::remove_dir(&dir).unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct UnixServerEndpoint {
    net: Rc<dyn EndpointReactor>,
    addr: UnixAddress,
    mode: u32,
    backlog: i32,
    lock: bool,
}

impl fmt::Debug for UnixServerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl UnixServerEndpoint {
    /// Listens on `addr` (a path; a `&str` starting with `@` is an abstract name), mode
    /// `0o666`, backlog 50, no lock file (Twisted's constructor defaults; the `unix:` string's
    /// `lockfile` defaults to 1).
    #[doc(alias = "UNIXServerEndpoint")]
    pub fn new(reactor: &dyn EndpointReactor, addr: impl Into<UnixAddress>) -> UnixServerEndpoint {
        UnixServerEndpoint {
            net: reactor.shared(),
            addr: addr.into(),
            mode: 0o666,
            backlog: DEFAULT_BACKLOG,
            lock: false,
        }
    }

    /// From a parsed description (`unix:` strings). The lock file is for paths only: it is
    /// not taken for an abstract name.
    pub fn from_description(
        reactor: &dyn EndpointReactor,
        d: &UnixServerDescription,
    ) -> UnixServerEndpoint {
        let addr = d.address();
        let lock = d.lockfile && matches!(addr, UnixAddress::Path(_));
        UnixServerEndpoint::new(reactor, addr)
            .mode(d.mode)
            .backlog(d.backlog)
            .lockfile(lock)
    }

    /// The socket file's permissions (default `0o666`; ignored for an abstract name). A mode
    /// above `0o7777` fails the listen with [`Error::BadAddress`].
    pub fn mode(mut self, mode: u32) -> UnixServerEndpoint {
        self.mode = mode;
        self
    }

    /// Sets the accept queue's length, clamped to 1..=65535.
    pub fn backlog(mut self, backlog: i32) -> UnixServerEndpoint {
        self.backlog = backlog.clamp(1, 65_535);
        self
    }

    /// Holds a lock file `PATH.lock` naming this process while listening (Twisted's
    /// `wantPID`; [`UnixListenOptions::lock`]). Paths only: listening on an abstract name
    /// with it fails.
    #[doc(alias = "wantPID")]
    pub fn lockfile(mut self, lock: bool) -> UnixServerEndpoint {
        self.lock = lock;
        self
    }

    /// The address listened on.
    pub fn address(&self) -> &UnixAddress {
        &self.addr
    }
}

impl ServerEndpoint for UnixServerEndpoint {
    fn listen(&self, factory: Rc<dyn ProtocolFactory>) -> Deferred<ListeningPort> {
        let opts = UnixListenOptions {
            backlog: self.backlog,
            mode: match self.addr {
                UnixAddress::Path(_) => Some(self.mode),
                _ => None,
            },
            lock: self.lock,
            ..UnixListenOptions::default()
        };
        match self
            .net
            .listen_unix_endpoint(self.addr.clone(), opts, factory)
        {
            Ok(port) => Deferred::succeed(port),
            Err(e) => Deferred::fail(e),
        }
    }

    fn describe(&self) -> String {
        format!(
            "unix:{} (mode {:o}, backlog {}{})",
            unix_text(&self.addr),
            self.mode,
            self.backlog,
            if self.lock { ", lock file" } else { "" }
        )
    }
}

/// Connects to a Unix socket (Twisted's `UNIXClientEndpoint`; the string
/// `unix:/run/app.sock:timeout=5:checkPID=1`, or `unix:@name`). The Deferred fires once the
/// protocol's `connection_made` has run, as for TCP.
///
/// With [`check_pid`](Self::check_pid) (a path only), the connect fails at once with
/// [`ConnectError::Io`] (`NotFound`) unless the server's lock file `PATH.lock` names a live
/// process (a server listening with `lockfile=1`).
///
/// # Examples
/// Over the memory reactor, where the test plays the connection:
/// ```
/// use torsion::endpoints::{client_from_string, ClientEndpointExt};
/// use torsion::testing::MemoryReactor;
/// use torsion::{Context, Factory, Protocol};
///
/// struct Quiet;
/// impl Protocol for Quiet {
///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
/// }
///
/// let mr = MemoryReactor::new()?;
/// let d = client_from_string(&mr, "unix:@bus:timeout=5")?.connect(|_| Quiet);
/// let attempt = &mr.unix_clients()[0];
/// assert_eq!(attempt.addr, torsion::interfaces::UnixAddress::abstract_name("bus"));
/// let _pump = attempt.accept(&Factory::for_protocol(|| Quiet)).unwrap();
/// let connected = d.try_result().unwrap().unwrap();
/// assert_eq!(connected.transport().peer().to_string(), "unix:@bus");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct UnixClientEndpoint {
    net: Rc<dyn EndpointReactor>,
    addr: UnixAddress,
    timeout: Duration,
    check_pid: bool,
}

impl fmt::Debug for UnixClientEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl UnixClientEndpoint {
    /// Connects to `addr` (a path; a `&str` starting with `@` is an abstract name), timeout
    /// 30 s.
    #[doc(alias = "UNIXClientEndpoint")]
    pub fn new(reactor: &dyn EndpointReactor, addr: impl Into<UnixAddress>) -> UnixClientEndpoint {
        UnixClientEndpoint {
            net: reactor.shared(),
            addr: addr.into(),
            timeout: DEFAULT_CONNECT_TIMEOUT,
            check_pid: false,
        }
    }

    /// From a parsed description (`unix:` strings).
    pub fn from_description(
        reactor: &dyn EndpointReactor,
        d: &UnixClientDescription,
    ) -> UnixClientEndpoint {
        UnixClientEndpoint::new(reactor, d.address())
            .timeout(d.timeout)
            .check_pid(d.check_pid)
    }

    /// Fails the attempt with [`ConnectError::TimedOut`] after `timeout` (a server whose
    /// accept queue is full is retried until then).
    pub fn timeout(mut self, timeout: Duration) -> UnixClientEndpoint {
        self.timeout = timeout;
        self
    }

    /// Refuses to connect unless the server's lock file names a live process (Twisted's
    /// `checkPID`). Ignored for an abstract name, which has no lock file.
    pub fn check_pid(mut self, check: bool) -> UnixClientEndpoint {
        self.check_pid = check;
        self
    }

    /// The address connected to.
    pub fn address(&self) -> &UnixAddress {
        &self.addr
    }
}

/// Twisted's `checkPID`: the lock file next to `path` names a live process.
fn server_alive(path: &std::path::Path) -> Result<(), ConnectError> {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    let lock = std::path::PathBuf::from(lock);
    let holder = std::fs::read_link(&lock)
        .ok()
        .and_then(|t| t.to_str().and_then(|t| t.parse::<u32>().ok()));
    match holder {
        Some(pid) if crate::sys::process_exists(pid) => Ok(()),
        _ => Err(ConnectError::io(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{}: no live server holds the lock file (checkPID)",
                lock.display()
            ),
        ))),
    }
}

impl ClientEndpoint for UnixClientEndpoint {
    fn connect_factory(&self, factory: Rc<dyn ProtocolFactory>) -> Deferred<Transport> {
        if let (true, UnixAddress::Path(p)) = (self.check_pid, &self.addr) {
            if let Err(e) = server_alive(p) {
                return Deferred::fail(e);
            }
        }
        let plan = race::Plan {
            port: 0,
            timeout: self.timeout,
            bind: None,
            delay: Duration::ZERO,
            deadline: None,
            unix: Some(self.addr.clone()),
        };
        race::Race::single(self.net.clone(), factory, plan, unix_text(&self.addr))
    }

    fn describe(&self) -> String {
        format!("unix:{}", unix_text(&self.addr))
    }
}

// ------------------------------------------------------------------------ hostname endpoint

/// The time between the starts of two connection attempts of a [`HostnameEndpoint`] (RFC
/// 8305's "Connection Attempt Delay", and Twisted's).
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Connects to a host name over TCP the way a browser does (Twisted's `HostnameEndpoint`):
/// resolves the name on the reactor's bounded resolver pool, then races its addresses with
/// Happy Eyeballs (RFC 8305).
///
/// * The addresses are interleaved by family, IPv6 first: `v6, v4, v6, v4, ...` (each family
///   in the resolver's order).
/// * The first attempt starts at once; each next one starts 250 ms
///   ([`ATTEMPT_DELAY`]) after the previous one started, or as soon as the previous one failed.
/// * The first connection made wins: the other attempts are cancelled and their sockets
///   closed, the pending timer is cancelled. Only the winner's protocol is built.
/// * The whole connect (resolution included) fails with [`ConnectError::TimedOut`] after the
///   timeout (30 s unless told). When every address failed, it fails with
///   [`AttemptsFailed`], which lists each address and why.
///
/// # Examples
/// Racing on the memory reactor: the IPv6 address does not answer, so the IPv4 attempt starts
/// 250 ms later and wins.
/// ```
/// use std::time::Duration;
/// use torsion::endpoints::{ClientEndpointExt, HostnameEndpoint};
/// use torsion::testing::MemoryReactor;
/// use torsion::{Context, Factory, Protocol};
///
/// struct Quiet;
/// impl Protocol for Quiet {
///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
/// }
///
/// let mr = MemoryReactor::new()?;
/// mr.add_host("example.com", &["2001:db8::1".parse().unwrap(), "192.0.2.1".parse().unwrap()]);
/// let d = HostnameEndpoint::new(&mr, "example.com", 80).connect(|_| Quiet);
/// mr.flush(); // the name resolves
/// assert_eq!(mr.tcp_clients().len(), 1);
/// assert_eq!(mr.tcp_clients()[0].host, "2001:db8::1");
/// mr.advance(Duration::from_millis(250));
/// let v4 = &mr.tcp_clients()[1];
/// assert_eq!(v4.host, "192.0.2.1");
/// let _pump = v4.accept(&Factory::for_protocol(|| Quiet)).unwrap();
/// assert!(d.try_result().unwrap().is_ok());
/// assert!(!mr.tcp_clients()[0].pending(), "the IPv6 attempt was cancelled");
/// # Ok::<(), torsion::Error>(())
/// ```
#[derive(Clone)]
pub struct HostnameEndpoint {
    net: Rc<dyn EndpointReactor>,
    host: String,
    port: u16,
    timeout: Duration,
    bind: Option<SocketAddr>,
    delay: Duration,
}

impl fmt::Debug for HostnameEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl HostnameEndpoint {
    /// Connects to `host:port`, timeout 30 s.
    pub fn new(reactor: &dyn EndpointReactor, host: &str, port: u16) -> HostnameEndpoint {
        HostnameEndpoint {
            net: reactor.shared(),
            host: host.to_string(),
            port,
            timeout: DEFAULT_CONNECT_TIMEOUT,
            bind: None,
            delay: ATTEMPT_DELAY,
        }
    }

    /// Fails the whole connect (resolution and attempts) with [`ConnectError::TimedOut`] after
    /// `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> HostnameEndpoint {
        self.timeout = timeout;
        self
    }

    /// Binds each attempt's socket to `local` (an address of one family: attempts to the other
    /// family then fail).
    pub fn bind_address(mut self, local: SocketAddr) -> HostnameEndpoint {
        self.bind = Some(local);
        self
    }

    /// Changes the delay between attempts (default [`ATTEMPT_DELAY`]; RFC 8305 advises at
    /// least 100 ms and at most 2 s).
    pub fn attempt_delay(mut self, delay: Duration) -> HostnameEndpoint {
        self.delay = delay;
        self
    }
}

impl ClientEndpoint for HostnameEndpoint {
    fn connect_factory(&self, factory: Rc<dyn ProtocolFactory>) -> Deferred<Transport> {
        let plan = race::Plan {
            port: self.port,
            timeout: self.timeout,
            bind: self.bind,
            delay: self.delay,
            deadline: Some(self.timeout),
            unix: None,
        };
        race::Race::hostname(self.net.clone(), factory, plan, self.host.clone())
    }

    fn describe(&self) -> String {
        format!("hostname:{}:{}", self.host, self.port)
    }
}

/// The order RFC 8305 tries addresses in: families interleaved, IPv6 first, each family in
/// the resolver's order, duplicates dropped.
///
/// ```
/// use torsion::endpoints::interleave;
///
/// let addrs = ["10.0.0.1:80", "10.0.0.2:80", "[::1]:80", "10.0.0.1:80"]
///     .map(|a| a.parse().unwrap());
/// let order: Vec<String> = interleave(&addrs).iter().map(|a| a.to_string()).collect();
/// assert_eq!(order, ["[::1]:80", "10.0.0.1:80", "10.0.0.2:80"]);
/// ```
pub fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<SocketAddr> = addrs.iter().copied().filter(|a| seen.insert(*a)).collect();
    let mut v6 = unique.iter().filter(|a| a.is_ipv6()).copied();
    let mut v4 = unique.iter().filter(|a| a.is_ipv4()).copied();
    let mut out = Vec::with_capacity(unique.len());
    loop {
        let (a, b) = (v6.next(), v4.next());
        if a.is_none() && b.is_none() {
            return out;
        }
        out.extend(a);
        out.extend(b);
    }
}
