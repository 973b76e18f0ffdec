//! A reactor for tests that touches no socket and never sleeps: [`MemoryReactor`] (Twisted's
//! `MemoryReactorClock`) on a [`MemoryPoller`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::IoPump;
use crate::endpoints::EndpointReactor;
use crate::interfaces::{
    Address, ClientFactory, Connector, ConnectorImpl, Context, HalfClose, ListeningPort,
    ListeningPortImpl, Protocol, ProtocolFactory, ReactorTcp, ReactorUnix, Transport, UnixAddress,
};
use crate::poller::{Event, Interest, Poller, Token, Trigger};
use crate::time::TimeSource;
use crate::unix::UnixListenOptions;
use crate::{ConnectError, Deferred, Reason};
use crate::{Error, Reactor};

/// What a [`MemoryPoller`] was told, shared with the test that drives it.
#[derive(Debug, Default)]
struct PollerState {
    registered: HashMap<RawFd, (Token, Interest, Trigger)>,
    pending: Vec<Event>,
    polls: u64,
}

/// A [`Poller`] that watches nothing: it records registrations and reports the events a test
/// injects with [`MemoryPollerHandle::inject`], and never blocks (time is the test's to move).
/// Give it to [`Reactor::with_poller`] to drive the real reactor deterministically.
///
/// # Examples
/// ```
/// use torsion::testing::MemoryPoller;
/// use torsion::Reactor;
///
/// let (poller, handle) = MemoryPoller::new();
/// let reactor = Reactor::with_poller(Box::new(poller))?;
/// reactor.iterate(None)?; // returns at once: nothing can block
/// assert_eq!(handle.polls(), 1);
/// assert_eq!(reactor.poller_name(), "memory");
/// # Ok::<(), torsion::Error>(())
/// ```
#[derive(Debug)]
pub struct MemoryPoller {
    state: Rc<RefCell<PollerState>>,
}

/// The test's side of a [`MemoryPoller`].
#[derive(Debug, Clone)]
pub struct MemoryPollerHandle {
    state: Rc<RefCell<PollerState>>,
}

impl MemoryPoller {
    /// A poller and the handle that drives it.
    pub fn new() -> (MemoryPoller, MemoryPollerHandle) {
        let state = Rc::new(RefCell::new(PollerState::default()));
        (
            MemoryPoller {
                state: state.clone(),
            },
            MemoryPollerHandle { state },
        )
    }
}

impl MemoryPollerHandle {
    /// Queues `event` for the next poll.
    pub fn inject(&self, event: Event) {
        self.state.borrow_mut().pending.push(event);
    }

    /// Queues a readable event for the descriptor registered as `fd`; returns whether it is
    /// registered.
    pub fn ready_to_read(&self, fd: RawFd) -> bool {
        let token = self.state.borrow().registered.get(&fd).map(|r| r.0);
        if let Some(token) = token {
            self.inject(Event {
                token,
                readable: true,
                writable: false,
                hangup: false,
                read_closed: false,
                priority: false,
            });
        }
        token.is_some()
    }

    /// What `fd` is registered for, if it is.
    pub fn interest(&self, fd: RawFd) -> Option<Interest> {
        self.state.borrow().registered.get(&fd).map(|r| r.1)
    }

    /// Number of descriptors registered (the reactor's waker included).
    pub fn registered(&self) -> usize {
        self.state.borrow().registered.len()
    }

    /// Number of polls so far.
    pub fn polls(&self) -> u64 {
        self.state.borrow().polls
    }
}

impl Poller for MemoryPoller {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn edge_triggered(&self) -> bool {
        true
    }

    fn register(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        if st.registered.contains_key(&fd) {
            return Err(crate::sys::errno(crate::sys::EEXIST));
        }
        st.registered.insert(fd, (token, interest, trigger));
        Ok(())
    }

    fn reregister(
        &mut self,
        fd: RawFd,
        token: Token,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        match st.registered.get_mut(&fd) {
            Some(r) => {
                *r = (token, interest, trigger);
                Ok(())
            }
            None => Err(crate::sys::errno(crate::sys::ENOENT)),
        }
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        match self.state.borrow_mut().registered.remove(&fd) {
            Some(_) => Ok(()),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    fn poll(&mut self, events: &mut Vec<Event>, _timeout: Option<Duration>) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        st.polls += 1;
        events.append(&mut st.pending);
        Ok(())
    }
}

/// A `listen_tcp` call recorded by a [`MemoryReactor`] (Twisted's `tcpServers` entry).
#[derive(Clone)]
pub struct TcpServer {
    /// The address asked for.
    pub addr: SocketAddr,
    /// The factory given.
    pub factory: Rc<dyn ProtocolFactory>,
    /// The port handed back (its `stop_listening` is recorded).
    pub port: ListeningPort,
    /// The accept queue length asked for (through an endpoint; 1024 otherwise, the reactor's
    /// default).
    pub backlog: i32,
}

impl fmt::Debug for TcpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpServer")
            .field("addr", &self.addr)
            .field("backlog", &self.backlog)
            .finish_non_exhaustive()
    }
}

/// A `connect_tcp` call recorded by a [`MemoryReactor`] (Twisted's `tcpClients` entry).
///
/// The attempt stays pending until the test plays it: [`accept`](TcpClient::accept) connects
/// it to a server protocol through memory (the factory builds its protocol, which gets
/// `connection_made`; when the connection ends the factory's `client_connection_lost` runs), and
/// [`fail`](TcpClient::fail) fails it (the factory's `client_connection_failed`). Its
/// connector's `stop_connecting` fails it with [`ConnectError::Cancelled`], as a real
/// connector's does. Nothing times out by itself: fail it with
/// [`ConnectError::TimedOut`] to play a timeout.
#[derive(Clone)]
pub struct TcpClient {
    /// The host asked for.
    pub host: String,
    /// The port asked for.
    pub port: u16,
    /// The factory given: build its protocol on a [`StringTransport`](super::StringTransport)
    /// to play the connection.
    pub factory: Rc<dyn ClientFactory>,
    /// The timeout given.
    pub timeout: Duration,
    /// The connector handed back.
    pub connector: Connector,
    /// The local address to bind asked for (through an endpoint).
    pub bind: Option<SocketAddr>,
    imp: Rc<FakeConnector>,
    reactor: Reactor,
}

impl fmt::Debug for TcpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpClient")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("timeout", &self.timeout)
            .field("bind", &self.bind)
            .finish_non_exhaustive()
    }
}

impl TcpClient {
    /// The address the client connects to, as its protocol sees it: `host:port` when the host
    /// is an IP address, `memory:host` otherwise.
    pub fn server_address(&self) -> Address {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => Address::Tcp(SocketAddr::new(ip, self.port)),
            Err(_) => Address::memory(self.host.clone()),
        }
    }

    /// True while the attempt waits to be played (and was not cancelled).
    pub fn pending(&self) -> bool {
        self.imp.connecting.get()
    }

    /// Fails the pending attempt with `reason`: the factory's `client_connection_failed` runs.
    /// Returns false (and does nothing) when it is not pending.
    pub fn fail(&self, reason: ConnectError) -> bool {
        if !self.imp.connecting.replace(false) {
            return false;
        }
        self.factory
            .client_connection_failed(&self.connector, reason);
        true
    }

    /// Connects the pending attempt to a protocol built by `server`, through memory: the
    /// client factory builds its protocol (for [`server_address`](Self::server_address)) and
    /// both get `connection_made`, server first; pump the returned [`IoPump`] to move bytes.
    /// When the client's connection ends, the factory's `client_connection_lost` runs.
    ///
    /// Returns `None` when the attempt is not pending, or when a factory builds no protocol
    /// (the client's factory then gets `client_connection_failed(NoProtocol)`, or
    /// `Refused` when the server's refused).
    ///
    /// # Examples
    /// ```
    /// use std::rc::Rc;
    /// use std::time::Duration;
    /// use torsion::testing::MemoryReactor;
    /// use torsion::{Context, Factory, Protocol, ReactorTcp};
    ///
    /// struct Hello;
    /// impl Protocol for Hello {
    ///     fn connection_made(&mut self, cx: &mut Context<'_>) {
    ///         cx.transport().write(b"hello");
    ///     }
    ///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    /// }
    ///
    /// let mr = MemoryReactor::new()?;
    /// let connector = mr.connect_tcp_to("10.0.0.1", 7, Rc::new(Factory::for_protocol(|| Hello)), Duration::from_secs(5));
    /// assert!(connector.connecting());
    /// let pump = mr.tcp_clients()[0].accept(&Factory::for_protocol(|| Hello)).unwrap();
    /// assert!(connector.transport().is_some());
    /// pump.flush();
    /// assert_eq!(pump.client_to_server(), 5);
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn accept(&self, server: &dyn ProtocolFactory) -> Option<IoPump> {
        let client_addr = Address::memory(format!("client-of-{}", self.host));
        play(
            &self.imp,
            &self.factory,
            &self.connector,
            &self.reactor,
            server,
            self.server_address(),
            client_addr,
        )
    }
}

/// Plays a pending attempt: connects it to a protocol built by `server` through memory.
fn play(
    imp: &Rc<FakeConnector>,
    factory: &Rc<dyn ClientFactory>,
    connector: &Connector,
    reactor: &Reactor,
    server: &dyn ProtocolFactory,
    server_addr: Address,
    client_addr: Address,
) -> Option<IoPump> {
    if !imp.connecting.get() {
        return None;
    }
    let Some(s) = server.build_protocol(&client_addr) else {
        if imp.connecting.replace(false) {
            factory.client_connection_failed(connector, ConnectError::Refused);
        }
        return None;
    };
    imp.connecting.set(false);
    let Some(c) = factory.build_protocol(&server_addr) else {
        factory.client_connection_failed(connector, ConnectError::NoProtocol);
        return None;
    };
    let c = Box::new(Played {
        inner: c,
        imp: imp.clone(),
        connector: connector.clone(),
    });
    Some(IoPump::with_addresses(
        reactor,
        s,
        c,
        server_addr,
        client_addr,
    ))
}

/// A `listen_unix` call recorded by a [`MemoryReactor`] (through [`ReactorUnix`] or a Unix
/// endpoint).
#[derive(Clone)]
pub struct UnixServer {
    /// The address asked for.
    pub addr: UnixAddress,
    /// The factory given.
    pub factory: Rc<dyn ProtocolFactory>,
    /// The port handed back (its `stop_listening` is recorded).
    pub port: ListeningPort,
    /// The options asked for (mode, backlog, lock file); the defaults through
    /// [`ReactorUnix::listen_unix_on`].
    pub options: UnixListenOptions,
}

impl fmt::Debug for UnixServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixServer")
            .field("addr", &self.addr)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A `connect_unix` call recorded by a [`MemoryReactor`]: played by the test as a
/// [`TcpClient`] is ([`accept`](UnixClient::accept), [`fail`](UnixClient::fail)).
#[derive(Clone)]
pub struct UnixClient {
    /// The address asked for.
    pub addr: UnixAddress,
    /// The factory given.
    pub factory: Rc<dyn ClientFactory>,
    /// The timeout given.
    pub timeout: Duration,
    /// The connector handed back.
    pub connector: Connector,
    imp: Rc<FakeConnector>,
    reactor: Reactor,
}

impl fmt::Debug for UnixClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixClient")
            .field("addr", &self.addr)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl UnixClient {
    /// True while the attempt waits to be played (and was not cancelled).
    pub fn pending(&self) -> bool {
        self.imp.connecting.get()
    }

    /// Fails the pending attempt with `reason`, as [`TcpClient::fail`].
    pub fn fail(&self, reason: ConnectError) -> bool {
        if !self.imp.connecting.replace(false) {
            return false;
        }
        self.factory
            .client_connection_failed(&self.connector, reason);
        true
    }

    /// Connects the pending attempt to a protocol built by `server` through memory, as
    /// [`TcpClient::accept`]: the client's peer is the Unix address it asked for, the
    /// server's peer an unnamed Unix socket (as a real Unix client's).
    pub fn accept(&self, server: &dyn ProtocolFactory) -> Option<IoPump> {
        play(
            &self.imp,
            &self.factory,
            &self.connector,
            &self.reactor,
            server,
            Address::Unix(self.addr.clone()),
            Address::Unix(UnixAddress::Unnamed),
        )
    }
}

/// The client protocol of a played connection: keeps the fake connector's transport and tells
/// the factory when the connection ends, as the reactor's connector does.
struct Played {
    inner: Box<dyn Protocol>,
    imp: Rc<FakeConnector>,
    connector: Connector,
}

impl Protocol for Played {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        *self.imp.transport.borrow_mut() = Some(cx.transport().clone());
        self.inner.connection_made(cx);
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        self.inner.data_received(cx, data);
    }

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        self.inner.connection_lost(cx, reason.clone());
        let old = self.imp.transport.borrow_mut().take();
        drop(old);
        self.imp
            .factory
            .client_connection_lost(&self.connector, reason);
    }

    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        self.inner.read_connection_lost(cx)
    }

    fn write_connection_lost(&mut self, cx: &mut Context<'_>) {
        self.inner.write_connection_lost(cx);
    }
}

struct Shared {
    reactor: Reactor,
    poller: MemoryPollerHandle,
    servers: RefCell<Vec<TcpServer>>,
    clients: RefCell<Vec<TcpClient>>,
    unix_servers: RefCell<Vec<UnixServer>>,
    unix_clients: RefCell<Vec<UnixClient>>,
    hosts: RefCell<HashMap<String, Vec<IpAddr>>>,
    next_port: Cell<u16>,
}

/// A real [`Reactor`] on a [`MemoryPoller`] and a fake clock, that records `listen_tcp_on` and
/// `connect_tcp_to` calls instead of opening sockets (Twisted's `MemoryReactorClock`).
///
/// Code that starts servers or clients through the [`ReactorTcp`] interface (or through
/// [`endpoints`](crate::endpoints), which take any [`EndpointReactor`]) can be handed one;
/// the test then plays the connections: [`TcpClient::accept`] connects a recorded attempt
/// through memory, [`TcpClient::fail`] fails it, or a
/// [`StringTransport`](super::StringTransport) plays it by hand. Host names resolve through a
/// table the test fills ([`add_host`](MemoryReactor::add_host)).
/// [`advance`](MemoryReactor::advance) moves time: delayed calls never wait for the wall
/// clock. Clones are the same memory reactor.
///
/// # Examples
/// ```
/// use std::rc::Rc;
/// use std::time::Duration;
/// use torsion::testing::MemoryReactor;
/// use torsion::{Context, Factory, Protocol, ReactorTcp};
///
/// struct Quiet;
/// impl Protocol for Quiet {
///     fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
/// }
///
/// fn start(r: &dyn ReactorTcp) -> Result<(), torsion::Error> {
///     r.listen_tcp_on("127.0.0.1:7000".parse().unwrap(), Rc::new(Factory::for_protocol(|| Quiet)))?;
///     Ok(())
/// }
///
/// let mr = MemoryReactor::new()?;
/// start(&mr)?;
/// assert_eq!(mr.tcp_servers()[0].addr.port(), 7000);
///
/// let fired = Rc::new(std::cell::Cell::new(false));
/// let f = fired.clone();
/// mr.reactor().call_later(Duration::from_secs(3600), move |_| f.set(true));
/// mr.advance(Duration::from_secs(3600)); // no sleep
/// assert!(fired.get());
/// # Ok::<(), torsion::Error>(())
/// ```
#[derive(Clone)]
pub struct MemoryReactor {
    inner: Rc<Shared>,
}

impl fmt::Debug for MemoryReactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReactor")
            .field("servers", &self.inner.servers.borrow().len())
            .field("clients", &self.inner.clients.borrow().len())
            .finish_non_exhaustive()
    }
}

/// Rounds of queued calls and due timers [`MemoryReactor::advance`] runs at most.
const ADVANCE_ROUNDS: usize = 10_000;

impl MemoryReactor {
    /// A memory reactor whose clock starts at an arbitrary instant.
    ///
    /// # Errors
    /// The system error when the reactor's waker (an eventfd) cannot be made.
    pub fn new() -> Result<MemoryReactor, Error> {
        let (poller, handle) = MemoryPoller::new();
        let source = TimeSource::Fake(Cell::new(Instant::now()));
        Ok(MemoryReactor {
            inner: Rc::new(Shared {
                reactor: Reactor::build(Box::new(poller), None, source, None)?,
                poller: handle,
                servers: RefCell::default(),
                clients: RefCell::default(),
                unix_servers: RefCell::default(),
                unix_clients: RefCell::default(),
                hosts: RefCell::default(),
                next_port: Cell::new(40_000),
            }),
        })
    }

    /// The reactor: hand it to code under test, schedule on it.
    pub fn reactor(&self) -> &Reactor {
        &self.inner.reactor
    }

    /// The poller's handle, to inject readiness events.
    pub fn poller(&self) -> &MemoryPollerHandle {
        &self.inner.poller
    }

    /// Moves the clock forward by `amount`, then runs the queued calls and every delayed call
    /// due by then, including calls that become due while this runs (as Twisted's
    /// `Clock.advance`).
    ///
    /// # Panics
    /// When the reactor's loop fails, or a call queues calls forever (10,000 rounds).
    pub fn advance(&self, amount: Duration) {
        self.inner.reactor.advance_fake_clock(amount);
        self.flush();
    }

    /// Runs the queued calls and the delayed calls due now, until none is left.
    ///
    /// # Panics
    /// As [`advance`](MemoryReactor::advance).
    pub fn flush(&self) {
        for _ in 0..ADVANCE_ROUNDS {
            self.inner
                .reactor
                .iterate(Some(Duration::ZERO))
                .expect("the memory reactor's loop failed");
            if !self.inner.reactor.has_work_now() {
                return;
            }
        }
        panic!("calls kept queueing calls for {ADVANCE_ROUNDS} rounds");
    }

    /// The `listen_tcp_on` calls so far.
    pub fn tcp_servers(&self) -> Vec<TcpServer> {
        self.inner.servers.borrow().clone()
    }

    /// The `connect_tcp_to` calls so far.
    pub fn tcp_clients(&self) -> Vec<TcpClient> {
        self.inner.clients.borrow().clone()
    }

    /// The Unix `listen` calls so far ([`ReactorUnix`] and Unix endpoints).
    pub fn unix_servers(&self) -> Vec<UnixServer> {
        self.inner.unix_servers.borrow().clone()
    }

    /// The Unix `connect` calls so far ([`ReactorUnix`] and Unix endpoints).
    pub fn unix_clients(&self) -> Vec<UnixClient> {
        self.inner.unix_clients.borrow().clone()
    }

    /// The TCP connection attempts still waiting to be played, oldest first.
    pub fn pending_clients(&self) -> Vec<TcpClient> {
        self.tcp_clients()
            .into_iter()
            .filter(|c| c.pending())
            .collect()
    }

    /// Makes `name` resolve to `addrs` (in that order) for
    /// [`EndpointReactor::resolve`]; names not in the table are not found. IP literals
    /// resolve to themselves.
    pub fn add_host(&self, name: &str, addrs: &[IpAddr]) {
        self.inner
            .hosts
            .borrow_mut()
            .insert(name.to_string(), addrs.to_vec());
    }

    fn record_listen(
        &self,
        addr: SocketAddr,
        backlog: i32,
        factory: Rc<dyn ProtocolFactory>,
    ) -> ListeningPort {
        let mut bound = addr;
        if bound.port() == 0 {
            let next = &self.inner.next_port;
            bound.set_port(next.get());
            next.set(next.get().wrapping_add(1).max(1));
        }
        let port = ListeningPort::new(Rc::new(FakePort {
            addr: Address::Tcp(bound),
            listening: Cell::new(true),
            factory: factory.clone(),
        }));
        crate::protocol::factory_port_opened(&factory);
        self.inner.servers.borrow_mut().push(TcpServer {
            addr,
            factory,
            port: port.clone(),
            backlog,
        });
        port
    }

    fn record_unix_listen(
        &self,
        addr: UnixAddress,
        options: UnixListenOptions,
        factory: Rc<dyn ProtocolFactory>,
    ) -> ListeningPort {
        let port = ListeningPort::new(Rc::new(FakePort {
            addr: Address::Unix(addr.clone()),
            listening: Cell::new(true),
            factory: factory.clone(),
        }));
        crate::protocol::factory_port_opened(&factory);
        self.inner.unix_servers.borrow_mut().push(UnixServer {
            addr,
            factory,
            port: port.clone(),
            options,
        });
        port
    }

    fn record_unix_connect(
        &self,
        addr: UnixAddress,
        factory: Rc<dyn ClientFactory>,
        timeout: Duration,
    ) -> Connector {
        let imp = FakeConnector::new(Address::Unix(addr.clone()).to_string(), factory.clone());
        let connector = Connector::new(imp.clone());
        factory.started_connecting(&connector);
        self.inner.unix_clients.borrow_mut().push(UnixClient {
            addr,
            factory,
            timeout,
            connector: connector.clone(),
            imp,
            reactor: self.inner.reactor.clone(),
        });
        connector
    }

    fn record_connect(
        &self,
        host: &str,
        port: u16,
        factory: Rc<dyn ClientFactory>,
        timeout: Duration,
        bind: Option<SocketAddr>,
    ) -> Connector {
        let imp = FakeConnector::new(format!("{host}:{port}"), factory.clone());
        let connector = Connector::new(imp.clone());
        factory.started_connecting(&connector);
        self.inner.clients.borrow_mut().push(TcpClient {
            host: host.to_string(),
            port,
            factory,
            timeout,
            connector: connector.clone(),
            bind,
            imp,
            reactor: self.inner.reactor.clone(),
        });
        connector
    }
}

impl ReactorTcp for MemoryReactor {
    fn listen_tcp_on(
        &self,
        addr: SocketAddr,
        factory: Rc<dyn ProtocolFactory>,
    ) -> Result<ListeningPort, Error> {
        Ok(self.record_listen(addr, 1024, factory))
    }

    fn connect_tcp_to(
        &self,
        host: &str,
        port: u16,
        factory: Rc<dyn ClientFactory>,
        timeout: Duration,
    ) -> Connector {
        self.record_connect(host, port, factory, timeout, None)
    }
}

impl ReactorUnix for MemoryReactor {
    fn listen_unix_on(
        &self,
        addr: UnixAddress,
        factory: Rc<dyn ProtocolFactory>,
    ) -> Result<ListeningPort, Error> {
        Ok(self.record_unix_listen(addr, UnixListenOptions::default(), factory))
    }

    fn connect_unix_to(
        &self,
        addr: UnixAddress,
        factory: Rc<dyn ClientFactory>,
        timeout: Duration,
    ) -> Connector {
        self.record_unix_connect(addr, factory, timeout)
    }
}

impl EndpointReactor for MemoryReactor {
    /// Records the call ([`unix_servers`](MemoryReactor::unix_servers)).
    fn listen_unix_endpoint(
        &self,
        addr: UnixAddress,
        opts: UnixListenOptions,
        factory: Rc<dyn ProtocolFactory>,
    ) -> Result<ListeningPort, Error> {
        Ok(self.record_unix_listen(addr, opts, factory))
    }

    /// Records the call ([`unix_clients`](MemoryReactor::unix_clients)).
    fn connect_unix_endpoint(
        &self,
        addr: UnixAddress,
        factory: Rc<dyn ClientFactory>,
        timeout: Duration,
    ) -> Connector {
        self.record_unix_connect(addr, factory, timeout)
    }

    fn reactor(&self) -> &Reactor {
        &self.inner.reactor
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
        Ok(self.record_listen(addr, backlog, factory))
    }

    fn connect_tcp_bound(
        &self,
        host: &str,
        port: u16,
        factory: Rc<dyn ClientFactory>,
        timeout: Duration,
        bind: Option<SocketAddr>,
    ) -> Connector {
        self.record_connect(host, port, factory, timeout, bind)
    }

    /// Answers from the table of [`add_host`](MemoryReactor::add_host), on the next round of
    /// [`flush`](MemoryReactor::flush) (as the real resolver answers on a later iteration).
    fn resolve(&self, host: &str, port: u16) -> Deferred<Vec<SocketAddr>> {
        let answer = match host.parse::<IpAddr>() {
            Ok(ip) => Ok(vec![SocketAddr::new(ip, port)]),
            Err(_) => match self.inner.hosts.borrow().get(host) {
                Some(ips) if !ips.is_empty() => {
                    Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
                }
                _ => Err(ConnectError::HostNotFound(format!(
                    "{host}: not in the table"
                ))),
            },
        };
        let (d, fire) = Deferred::new();
        self.inner.reactor.call_soon(move |_| {
            let _ = fire.fire(answer.map_err(Into::into));
        });
        d
    }
}

/// The port a [`MemoryReactor`] hands back.
struct FakePort {
    addr: Address,
    listening: Cell<bool>,
    factory: Rc<dyn ProtocolFactory>,
}

impl ListeningPortImpl for FakePort {
    fn address(&self) -> Address {
        self.addr.clone()
    }

    fn stop_listening(&self) {
        if self.listening.replace(false) {
            crate::protocol::factory_port_closed(&self.factory);
        }
    }
}

/// The connector a [`MemoryReactor`] hands back: it records what it is asked, and its attempt
/// is played by the test through [`TcpClient`].
struct FakeConnector {
    destination: String,
    connecting: Cell<bool>,
    transport: RefCell<Option<Transport>>,
    factory: Rc<dyn ClientFactory>,
    me: RefCell<Option<std::rc::Weak<FakeConnector>>>,
}

impl FakeConnector {
    fn new(destination: String, factory: Rc<dyn ClientFactory>) -> Rc<FakeConnector> {
        let imp = Rc::new(FakeConnector {
            destination,
            connecting: Cell::new(true),
            transport: RefCell::new(None),
            factory,
            me: RefCell::new(None),
        });
        *imp.me.borrow_mut() = Some(Rc::downgrade(&imp));
        imp
    }

    fn handle(&self) -> Option<Connector> {
        let me = self.me.borrow().as_ref().and_then(|w| w.upgrade())?;
        Some(Connector::new(me))
    }
}

impl ConnectorImpl for FakeConnector {
    fn connect(&self) {
        if self.connecting.get() || self.transport.borrow().is_some() {
            return;
        }
        self.connecting.set(true);
        if let Some(me) = self.handle() {
            self.factory.started_connecting(&me);
        }
    }

    fn stop_connecting(&self) {
        if !self.connecting.replace(false) {
            return;
        }
        if let Some(me) = self.handle() {
            self.factory
                .client_connection_failed(&me, ConnectError::Cancelled);
        }
    }

    fn disconnect(&self) {
        let t = self.transport.borrow().clone();
        match t {
            Some(t) => t.lose_connection(),
            None => self.stop_connecting(),
        }
    }

    fn destination(&self) -> String {
        self.destination.clone()
    }

    fn transport(&self) -> Option<Transport> {
        self.transport.borrow().clone()
    }

    fn connecting(&self) -> bool {
        self.connecting.get()
    }
}
