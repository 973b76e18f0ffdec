//! [`MemoryDatagramTransport`]: a datagram transport that records what a protocol sends, for
//! unit tests with no socket.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use super::{
    check_group, DatagramContext, DatagramError, DatagramProtocol, DatagramStats,
    DatagramTransport, DatagramTransportImpl, Interface, MAX_UDP4_PAYLOAD,
};
use crate::interfaces::Address;
use crate::testing::MemoryReactor;
use crate::{Error, Reactor};

/// One datagram a protocol sent through a [`MemoryDatagramTransport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentDatagram {
    /// Its bytes.
    pub data: Vec<u8>,
    /// Where it was sent: `None` for [`write`](DatagramTransport::write) to the connected peer.
    pub to: Option<Address>,
}

struct State {
    sent: Vec<SentDatagram>,
    peer: Option<Address>,
    listening: bool,
    broadcast: bool,
    groups: BTreeSet<(IpAddr, String)>,
    ttl: u8,
    loopback: bool,
    interface: Interface,
    would_block: bool,
    refused: bool,
    paused: bool,
    stats: DatagramStats,
}

struct Imp {
    st: RefCell<State>,
    host: Address,
    max: Cell<Option<usize>>,
}

/// A datagram transport that records what its protocol sends and the options it sets (the
/// datagram counterpart of [`StringTransport`](crate::testing::StringTransport)). The test
/// drives the protocol by hand: [`start`](Self::start), [`receive`](Self::receive),
/// [`refuse`](Self::refuse), [`stop`](Self::stop); and makes sends fail with
/// [`set_would_block`](Self::set_would_block) and [`set_refused`](Self::set_refused).
///
/// Sends are checked as a UDP socket checks them: at most [`MAX_UDP4_PAYLOAD`] bytes by
/// default ([`set_max_write_size`](Self::set_max_write_size)), to the connected peer only once
/// connected, nothing after [`stop_listening`](DatagramTransport::stop_listening).
///
/// # Examples
/// ```
/// use torsion::udp::{DatagramError, DatagramTransport, MemoryDatagramTransport};
///
/// let t = MemoryDatagramTransport::new()?;
/// let udp: &DatagramTransport = t.transport();
/// assert!(matches!(udp.write(b"x"), Err(DatagramError::NotConnected)));
/// let big = vec![0u8; 70_000];
/// let to = torsion::Address::from("192.0.2.1:9".parse::<std::net::SocketAddr>().unwrap());
/// assert!(matches!(udp.write_to(&big, &to), Err(DatagramError::TooLarge { .. })));
/// t.set_would_block(true);
/// assert!(matches!(udp.write_to(b"x", &to), Err(DatagramError::WouldBlock)));
/// assert_eq!(udp.stats().send_dropped, 1);
/// # Ok::<(), torsion::Error>(())
/// ```
pub struct MemoryDatagramTransport {
    imp: Rc<Imp>,
    transport: DatagramTransport,
    reactor: Reactor,
    memory: Option<Rc<MemoryReactor>>,
}

impl fmt::Debug for MemoryDatagramTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryDatagramTransport")
            .field("host", &self.imp.host)
            .field("sent", &self.imp.st.borrow().sent.len())
            .finish_non_exhaustive()
    }
}

impl MemoryDatagramTransport {
    /// A transport bound to `127.0.0.1:9999` on a new [`MemoryReactor`] (the reactor its
    /// protocol's callbacks get, with a fake clock).
    ///
    /// # Errors
    /// As [`MemoryReactor::new`].
    pub fn new() -> Result<MemoryDatagramTransport, Error> {
        let memory = Rc::new(MemoryReactor::new()?);
        let host = Address::Tcp(SocketAddr::from(([127, 0, 0, 1], 9999)));
        let mut t = MemoryDatagramTransport::on(memory.reactor(), host);
        t.memory = Some(memory);
        Ok(t)
    }

    /// A transport bound to `host` whose protocol callbacks get `reactor`.
    pub fn on(reactor: &Reactor, host: Address) -> MemoryDatagramTransport {
        let imp = Rc::new(Imp {
            st: RefCell::new(State {
                sent: Vec::new(),
                peer: None,
                listening: true,
                broadcast: false,
                groups: BTreeSet::new(),
                ttl: 1,
                loopback: true,
                interface: Interface::Any,
                would_block: false,
                refused: false,
                paused: false,
                stats: DatagramStats::default(),
            }),
            host,
            max: Cell::new(Some(MAX_UDP4_PAYLOAD)),
        });
        MemoryDatagramTransport {
            transport: DatagramTransport::new(imp.clone()),
            imp,
            reactor: reactor.clone(),
            memory: None,
        }
    }

    /// The transport the protocol is given.
    pub fn transport(&self) -> &DatagramTransport {
        &self.transport
    }

    /// The reactor the protocol's callbacks get.
    pub fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    /// The memory reactor made by [`new`](Self::new) (`None` for [`on`](Self::on)).
    pub fn memory_reactor(&self) -> Option<&MemoryReactor> {
        self.memory.as_deref()
    }

    fn call(&self, f: impl FnOnce(&mut DatagramContext<'_>)) {
        let mut cx = DatagramContext::new(&self.reactor, &self.transport);
        f(&mut cx);
    }

    /// Calls the protocol's `start_protocol`.
    pub fn start(&self, p: &mut dyn DatagramProtocol) {
        self.call(|cx| p.start_protocol(cx));
    }

    /// Delivers a datagram from `from` (dropped, as a connected socket drops it, when the
    /// transport is connected to another peer or stopped).
    pub fn receive(&self, p: &mut dyn DatagramProtocol, data: &[u8], from: &Address) {
        {
            let mut st = self.imp.st.borrow_mut();
            if !st.listening || st.peer.as_ref().is_some_and(|peer| peer != from) {
                return;
            }
            st.stats.received += 1;
        }
        self.call(|cx| p.datagram_received(cx, data, from));
    }

    /// Reports a datagram of `len` bytes that did not fit the receive buffer.
    pub fn receive_truncated(&self, p: &mut dyn DatagramProtocol, len: usize, from: &Address) {
        self.imp.st.borrow_mut().stats.truncated += 1;
        self.call(|cx| p.datagram_truncated(cx, len, from));
    }

    /// Calls the protocol's `connection_refused`, as an ICMP port unreachable would.
    pub fn refuse(&self, p: &mut dyn DatagramProtocol) {
        self.imp.st.borrow_mut().stats.refused += 1;
        self.call(|cx| p.connection_refused(cx));
    }

    /// Stops the transport and calls the protocol's `stop_protocol`.
    pub fn stop(&self, p: &mut dyn DatagramProtocol) {
        self.imp.st.borrow_mut().listening = false;
        self.call(|cx| p.stop_protocol(cx));
    }

    /// Every datagram sent so far.
    pub fn sent(&self) -> Vec<SentDatagram> {
        self.imp.st.borrow().sent.clone()
    }

    /// Every datagram sent so far, forgetting them.
    pub fn take(&self) -> Vec<SentDatagram> {
        std::mem::take(&mut self.imp.st.borrow_mut().sent)
    }

    /// Makes sends fail with [`DatagramError::WouldBlock`] (a full send buffer) while `on`.
    pub fn set_would_block(&self, on: bool) {
        self.imp.st.borrow_mut().would_block = on;
    }

    /// Makes the next send fail with [`DatagramError::Refused`] (the connected peer refused an
    /// earlier datagram). Unlike a socket, the protocol's `connection_refused` is not called:
    /// call [`refuse`](Self::refuse).
    pub fn set_refused(&self) {
        self.imp.st.borrow_mut().refused = true;
    }

    /// Sets the largest datagram a send accepts (`None`: no limit).
    pub fn set_max_write_size(&self, max: Option<usize>) {
        self.imp.max.set(max);
    }

    /// The multicast groups joined, with the interface (its `Debug` form).
    pub fn groups(&self) -> Vec<(IpAddr, String)> {
        self.imp.st.borrow().groups.iter().cloned().collect()
    }

    /// The outgoing multicast interface set.
    pub fn interface(&self) -> Interface {
        self.imp.st.borrow().interface
    }
}

impl Imp {
    fn record(&self, data: &[u8], to: Option<Address>) -> Result<(), DatagramError> {
        let mut st = self.st.borrow_mut();
        if !st.listening {
            return Err(DatagramError::Closed);
        }
        if let Some(max) = self.max.get() {
            if data.len() > max {
                return Err(DatagramError::TooLarge {
                    len: data.len(),
                    max: Some(max),
                });
            }
        }
        if st.would_block {
            st.stats.send_dropped += 1;
            return Err(DatagramError::WouldBlock);
        }
        if std::mem::take(&mut st.refused) {
            st.stats.refused += 1;
            return Err(DatagramError::Refused);
        }
        st.stats.sent += 1;
        st.sent.push(SentDatagram {
            data: data.to_vec(),
            to,
        });
        Ok(())
    }

    fn open(&self) -> Result<(), DatagramError> {
        if self.st.borrow().listening {
            Ok(())
        } else {
            Err(DatagramError::Closed)
        }
    }

    fn v6(&self) -> bool {
        matches!(self.host, Address::Tcp(SocketAddr::V6(_)))
    }
}

impl DatagramTransportImpl for Imp {
    fn write_to(&self, data: &[u8], to: &Address) -> Result<(), DatagramError> {
        let peer = self.st.borrow().peer.clone();
        match peer {
            Some(p) if p == *to => self.record(data, None),
            Some(_) => Err(DatagramError::WrongAddress {
                addr: to.clone(),
                why: "the socket is connected to another peer",
            }),
            None => self.record(data, Some(to.clone())),
        }
    }

    fn write(&self, data: &[u8]) -> Result<(), DatagramError> {
        if self.st.borrow().peer.is_none() {
            return Err(DatagramError::NotConnected);
        }
        self.record(data, None)
    }

    fn connect(&self, peer: &Address) -> Result<(), DatagramError> {
        self.open()?;
        self.st.borrow_mut().peer = Some(peer.clone());
        Ok(())
    }

    fn peer(&self) -> Option<Address> {
        self.st.borrow().peer.clone()
    }

    fn host(&self) -> Address {
        self.host.clone()
    }

    fn stop_listening(&self) {
        self.st.borrow_mut().listening = false;
    }

    fn listening(&self) -> bool {
        self.st.borrow().listening
    }

    fn max_write_size(&self) -> Option<usize> {
        self.max.get()
    }

    fn pause_reading(&self) {
        self.st.borrow_mut().paused = true;
    }

    fn resume_reading(&self) {
        self.st.borrow_mut().paused = false;
    }

    fn reading(&self) -> bool {
        let st = self.st.borrow();
        st.listening && !st.paused
    }

    fn stats(&self) -> DatagramStats {
        self.st.borrow().stats
    }

    fn set_broadcast_allowed(&self, on: bool) -> Result<(), DatagramError> {
        self.open()?;
        self.st.borrow_mut().broadcast = on;
        Ok(())
    }

    fn broadcast_allowed(&self) -> Result<bool, DatagramError> {
        Ok(self.st.borrow().broadcast)
    }

    fn membership(&self, group: IpAddr, iface: Interface, join: bool) -> Result<(), DatagramError> {
        self.open()?;
        check_group(group, self.v6())?;
        let key = (group, format!("{iface:?}"));
        let mut st = self.st.borrow_mut();
        let changed = if join {
            st.groups.insert(key)
        } else {
            st.groups.remove(&key)
        };
        if !changed {
            // As the kernel: joining twice is EADDRINUSE, leaving a group not joined EADDRNOTAVAIL.
            let kind = if join {
                std::io::ErrorKind::AddrInUse
            } else {
                std::io::ErrorKind::AddrNotAvailable
            };
            return Err(DatagramError::Io(kind.into()));
        }
        Ok(())
    }

    fn set_ttl(&self, ttl: u8) -> Result<(), DatagramError> {
        self.open()?;
        self.st.borrow_mut().ttl = ttl;
        Ok(())
    }

    fn ttl(&self) -> Result<u8, DatagramError> {
        Ok(self.st.borrow().ttl)
    }

    fn set_loopback(&self, on: bool) -> Result<(), DatagramError> {
        self.open()?;
        self.st.borrow_mut().loopback = on;
        Ok(())
    }

    fn loopback(&self) -> Result<bool, DatagramError> {
        Ok(self.st.borrow().loopback)
    }

    fn set_interface(&self, iface: Interface) -> Result<(), DatagramError> {
        self.open()?;
        self.st.borrow_mut().interface = iface;
        Ok(())
    }
}
