//! A reactor for tests that touches no socket and never sleeps: [`MemoryReactor`] (Twisted's
//! `MemoryReactorClock`) on a [`MemoryPoller`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::interfaces::{
    Address, ClientFactory, Connector, ConnectorImpl, ListeningPort, ListeningPortImpl,
    ProtocolFactory, ReactorTcp, Transport,
};
use crate::poller::{Event, Interest, Poller, Token, Trigger};
use crate::time::TimeSource;
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
}

impl fmt::Debug for TcpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A `connect_tcp` call recorded by a [`MemoryReactor`] (Twisted's `tcpClients` entry).
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
}

impl fmt::Debug for TcpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpClient")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A real [`Reactor`] on a [`MemoryPoller`] and a fake clock, that records `listen_tcp_on` and
/// `connect_tcp_to` calls instead of opening sockets (Twisted's `MemoryReactorClock`).
///
/// Code that starts servers or clients through the [`ReactorTcp`] interface can be handed one;
/// the test then plays the connections with a [`StringTransport`](super::StringTransport).
/// [`advance`](MemoryReactor::advance) moves time: delayed
/// calls never wait for the wall clock.
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
pub struct MemoryReactor {
    reactor: Reactor,
    poller: MemoryPollerHandle,
    servers: RefCell<Vec<TcpServer>>,
    clients: RefCell<Vec<TcpClient>>,
    next_port: Cell<u16>,
}

impl fmt::Debug for MemoryReactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReactor")
            .field("servers", &self.servers.borrow().len())
            .field("clients", &self.clients.borrow().len())
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
            reactor: Reactor::build(Box::new(poller), None, source)?,
            poller: handle,
            servers: RefCell::default(),
            clients: RefCell::default(),
            next_port: Cell::new(40_000),
        })
    }

    /// The reactor: hand it to code under test, schedule on it.
    pub fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    /// The poller's handle, to inject readiness events.
    pub fn poller(&self) -> &MemoryPollerHandle {
        &self.poller
    }

    /// Moves the clock forward by `amount`, then runs the queued calls and every delayed call
    /// due by then, including calls that become due while this runs (as Twisted's
    /// `Clock.advance`).
    ///
    /// # Panics
    /// When the reactor's loop fails, or a call queues calls forever (10,000 rounds).
    pub fn advance(&self, amount: Duration) {
        self.reactor.advance_fake_clock(amount);
        self.flush();
    }

    /// Runs the queued calls and the delayed calls due now, until none is left.
    ///
    /// # Panics
    /// As [`advance`](MemoryReactor::advance).
    pub fn flush(&self) {
        for _ in 0..ADVANCE_ROUNDS {
            self.reactor
                .iterate(Some(Duration::ZERO))
                .expect("the memory reactor's loop failed");
            if !self.reactor.has_work_now() {
                return;
            }
        }
        panic!("calls kept queueing calls for {ADVANCE_ROUNDS} rounds");
    }

    /// The `listen_tcp_on` calls so far.
    pub fn tcp_servers(&self) -> Vec<TcpServer> {
        self.servers.borrow().clone()
    }

    /// The `connect_tcp_to` calls so far.
    pub fn tcp_clients(&self) -> Vec<TcpClient> {
        self.clients.borrow().clone()
    }
}

impl ReactorTcp for MemoryReactor {
    fn listen_tcp_on(
        &self,
        addr: SocketAddr,
        factory: Rc<dyn ProtocolFactory>,
    ) -> Result<ListeningPort, Error> {
        let mut bound = addr;
        if bound.port() == 0 {
            bound.set_port(self.next_port.get());
            self.next_port
                .set(self.next_port.get().wrapping_add(1).max(1));
        }
        let port = ListeningPort::new(Rc::new(FakePort {
            addr: bound,
            listening: Cell::new(true),
            factory: factory.clone(),
        }));
        crate::protocol::factory_port_opened(&factory);
        self.servers.borrow_mut().push(TcpServer {
            addr,
            factory,
            port: port.clone(),
        });
        Ok(port)
    }

    fn connect_tcp_to(
        &self,
        host: &str,
        port: u16,
        factory: Rc<dyn ClientFactory>,
        timeout: Duration,
    ) -> Connector {
        let connector = Connector::new(Rc::new(FakeConnector {
            destination: format!("{host}:{port}"),
            connecting: Cell::new(true),
            transport: RefCell::new(None),
        }));
        factory.started_connecting(&connector);
        self.clients.borrow_mut().push(TcpClient {
            host: host.to_string(),
            port,
            factory,
            timeout,
            connector: connector.clone(),
        });
        connector
    }
}

/// The port a [`MemoryReactor`] hands back.
struct FakePort {
    addr: SocketAddr,
    listening: Cell<bool>,
    factory: Rc<dyn ProtocolFactory>,
}

impl ListeningPortImpl for FakePort {
    fn address(&self) -> Address {
        Address::Tcp(self.addr)
    }

    fn stop_listening(&self) {
        if self.listening.replace(false) {
            crate::protocol::factory_port_closed(&self.factory);
        }
    }
}

/// The connector a [`MemoryReactor`] hands back: it only records what it is asked.
struct FakeConnector {
    destination: String,
    connecting: Cell<bool>,
    transport: RefCell<Option<Transport>>,
}

impl ConnectorImpl for FakeConnector {
    fn connect(&self) {
        self.connecting.set(true);
    }

    fn stop_connecting(&self) {
        self.connecting.set(false);
    }

    fn disconnect(&self) {
        self.connecting.set(false);
        let t = self.transport.borrow().clone();
        if let Some(t) = t {
            t.lose_connection();
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
