//! A datagram socket on the reactor: binding, the receive loop, sends and socket options.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use super::{
    check_group, DatagramContext, DatagramError, DatagramOptions, DatagramProtocol, DatagramStats,
    DatagramTransport, DatagramTransportImpl, Interface, MAX_UDP4_PAYLOAD, MAX_UDP6_PAYLOAD,
};
use crate::error::panic_message;
use crate::interfaces::{Address, UnixAddress};
use crate::poller::{Interest, Trigger};
use crate::reactor::{Inner, Registration};
use crate::sys::{self, DgramFamily, Received, RecvBatch};
use crate::{Error, FileDescriptor, Reactor, Reason};

/// How often at most a port warns that it dropped datagrams too large for its buffer.
const TRUNCATION_WARNING_EVERY: Duration = Duration::from_secs(10);

thread_local! {
    /// The receive batch of this thread's ports (taken out while in use; rebuilt when a port
    /// needs another geometry).
    static BATCH: Cell<Option<RecvBatch>> = const { Cell::new(None) };
    static RECEIVED: Cell<Vec<Received>> = const { Cell::new(Vec::new()) };
}

/// What to bind.
pub(super) enum Bind {
    Ip(SocketAddr),
    Unix(UnixAddress),
}

/// A socket file this port made, removed when it closes if it is still the same file.
struct OwnFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

#[derive(Default)]
struct Counters {
    received: Cell<u64>,
    sent: Cell<u64>,
    send_dropped: Cell<u64>,
    truncated: Cell<u64>,
    refused: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get().wrapping_add(1));
}

pub(super) struct Port {
    me: Weak<Port>,
    fd: RawFd,
    sock: RefCell<Option<OwnedFd>>,
    family: DgramFamily,
    v6_only: bool,
    reactor: Weak<Inner>,
    reg: Cell<Option<Registration>>,
    protocol: RefCell<Option<Box<dyn DatagramProtocol>>>,
    host: Address,
    peer: RefCell<Option<Address>>,
    /// Reading is paused (`pause_reading`).
    paused: Cell<bool>,
    opts: DatagramOptions,
    slots: usize,
    file: Option<OwnFile>,
    counters: Counters,
    /// Truncated datagrams not yet reported in a warning, and when the last one was logged.
    unreported: Cell<u64>,
    last_warning: Cell<Option<Instant>>,
}

/// Refuses a live socket at `path`, removes a dead one (a datagram `connect` to it is refused).
fn clear_stale(path: &std::path::Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    let probe = sys::dgram_socket(DgramFamily::Unix)?;
    let target = Address::Unix(UnixAddress::Path(path.to_path_buf()));
    match sys::dgram_connect(probe.as_raw_fd(), &target) {
        Ok(()) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("a live socket is bound at {}", path.display()),
        )),
        Err(e) if sys::is_refused(&e) => {
            tracing::info!(path = %path.display(), "removing a dead socket file");
            std::fs::remove_file(path)
        }
        // Another kind of socket (a stream socket answers EPROTOTYPE): not ours to remove.
        Err(e) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use ({e})", path.display()),
        )),
    }
}

/// Drops a closed port's protocol when it goes out of scope.
struct ReleaseProtocol(Rc<Port>);

impl Drop for ReleaseProtocol {
    fn drop(&mut self) {
        let p = match self.0.protocol.try_borrow_mut() {
            Ok(mut slot) => slot.take(),
            Err(_) => None,
        };
        drop(p);
    }
}

pub(super) fn open(
    r: &Reactor,
    bind: Bind,
    connect: Option<Address>,
    protocol: Box<dyn DatagramProtocol>,
    opts: DatagramOptions,
) -> Result<DatagramTransport, Error> {
    opts.check()?;
    let family = match &bind {
        Bind::Ip(a) if a.is_ipv4() => DgramFamily::V4,
        Bind::Ip(_) => DgramFamily::V6,
        Bind::Unix(_) => DgramFamily::Unix,
    };
    let sock = sys::dgram_socket(family)?;
    let fd = sock.as_raw_fd();
    if opts.reuse_addr && family != DgramFamily::Unix {
        sys::set_reuseaddr(fd)?;
        sys::set_reuseport(fd)?;
    }
    if family == DgramFamily::V6 {
        sys::set_v6only(fd, opts.v6_only)?;
    }
    if let Some(n) = opts.receive_buffer_size {
        sys::set_recv_buffer(fd, n)?;
    }
    if let Some(n) = opts.send_buffer_size {
        sys::set_send_buffer(fd, n)?;
    }
    let mut file = None;
    match &bind {
        Bind::Ip(a) => sys::dgram_bind(fd, &Address::Tcp(*a))?,
        Bind::Unix(u) => {
            if let UnixAddress::Path(p) = u {
                clear_stale(p)?;
            }
            sys::dgram_bind(fd, &Address::Unix(u.clone()))?;
            if let UnixAddress::Path(p) = u {
                let own = || -> io::Result<OwnFile> {
                    let meta = std::fs::symlink_metadata(p)?;
                    if let Some(mode) = opts.mode {
                        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
                    }
                    Ok(OwnFile {
                        path: p.clone(),
                        dev: meta.dev(),
                        ino: meta.ino(),
                    })
                };
                match own() {
                    Ok(f) => file = Some(f),
                    Err(e) => {
                        // The file was just made by this bind: not left behind.
                        let _ = std::fs::remove_file(p);
                        return Err(e.into());
                    }
                }
            }
        }
    }
    let host = sys::dgram_local_addr(fd)?;
    let port = Rc::new_cyclic(|me| Port {
        me: me.clone(),
        fd,
        sock: RefCell::new(Some(sock)),
        family,
        v6_only: opts.v6_only,
        reactor: Rc::downgrade(&r.inner),
        reg: Cell::new(None),
        protocol: RefCell::new(Some(protocol)),
        host,
        peer: RefCell::new(None),
        paused: Cell::new(false),
        opts,
        slots: opts.slots(),
        file,
        counters: Counters::default(),
        unreported: Cell::new(0),
        last_warning: Cell::new(None),
    });
    let fail = |port: &Port, e: Error| {
        port.protocol.borrow_mut().take();
        port.remove_file();
        Err(e)
    };
    if let Some(peer) = &connect {
        if let Err(e) = port.connect(peer) {
            return fail(&port, Error::Io(datagram_to_io(e)));
        }
    }
    let registered = r.register(port.clone(), Trigger::Level).and_then(|reg| {
        port.reg.set(Some(reg));
        r.set_interest(&reg, Interest::READ)
    });
    if let Err(e) = registered {
        if let Some(reg) = port.reg.take() {
            r.deregister(&reg);
        }
        return fail(&port, e);
    }
    let t = port.transport();
    port.with_protocol(r, &t, |p, cx| p.start_protocol(cx));
    Ok(t)
}

fn datagram_to_io(e: DatagramError) -> io::Error {
    match e {
        DatagramError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
    }
}

/// Runs `f` with this thread's receive batch of `slots` slots of `size` bytes.
fn with_batch<R>(slots: usize, size: usize, f: impl FnOnce(&mut RecvBatch) -> R) -> R {
    let mut batch = BATCH
        .with(Cell::take)
        .filter(|b| b.slots() == slots && b.slot_size() == size)
        .unwrap_or_else(|| RecvBatch::new(slots, size));
    let r = f(&mut batch);
    BATCH.with(|b| b.set(Some(batch)));
    r
}

impl Port {
    fn reactor(&self) -> Option<Reactor> {
        self.reactor.upgrade().map(Reactor::from_inner)
    }

    fn rc(&self) -> Rc<Port> {
        self.me
            .upgrade()
            .expect("a port is alive while its methods run")
    }

    fn transport(&self) -> DatagramTransport {
        DatagramTransport::new(self.rc())
    }

    fn open_fd(&self) -> Result<RawFd, DatagramError> {
        if self.sock.borrow().is_some() {
            Ok(self.fd)
        } else {
            Err(DatagramError::Closed)
        }
    }

    /// Calls into the protocol; a panic is logged and the datagram (or event) dropped: one bad
    /// datagram does not close a server's port (Twisted logs and carries on too).
    fn with_protocol(
        &self,
        r: &Reactor,
        t: &DatagramTransport,
        f: impl FnOnce(&mut dyn DatagramProtocol, &mut DatagramContext<'_>),
    ) {
        let Ok(mut slot) = self.protocol.try_borrow_mut() else {
            debug_assert!(false, "nested datagram protocol callback");
            tracing::error!(host = %self.host, "nested datagram protocol callback skipped");
            return;
        };
        let Some(p) = slot.as_mut() else { return };
        let mut cx = DatagramContext::new(r, t);
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut **p, &mut cx)));
        drop(slot);
        if let Err(payload) = result {
            let msg = panic_message(&*payload);
            tracing::error!(host = %self.host, message = %msg, "a datagram protocol callback panicked; the port carries on");
        }
    }

    fn is_v6(&self) -> bool {
        self.family == DgramFamily::V6
    }

    fn ip_only(&self, what: &'static str) -> Result<RawFd, DatagramError> {
        if self.family == DgramFamily::Unix {
            return Err(DatagramError::Unsupported(what));
        }
        self.open_fd()
    }

    /// The address to give the kernel for `to`, checked against the socket's family.
    fn target(&self, to: &Address) -> Result<Address, DatagramError> {
        let wrong = |why| {
            Err(DatagramError::WrongAddress {
                addr: to.clone(),
                why,
            })
        };
        match (self.family, to) {
            (DgramFamily::Unix, Address::Unix(UnixAddress::Unnamed)) => {
                wrong("an unnamed Unix socket cannot be sent to")
            }
            (DgramFamily::Unix, Address::Unix(_)) => Ok(to.clone()),
            (DgramFamily::Unix, _) => wrong("a Unix datagram socket sends to Unix addresses only"),
            (DgramFamily::V4, Address::Tcp(SocketAddr::V4(_))) => Ok(to.clone()),
            (DgramFamily::V4, Address::Tcp(SocketAddr::V6(_))) => {
                wrong("an IPv4 socket cannot send to an IPv6 address")
            }
            (DgramFamily::V6, Address::Tcp(SocketAddr::V6(_))) => Ok(to.clone()),
            (DgramFamily::V6, Address::Tcp(SocketAddr::V4(a))) => {
                if self.v6_only {
                    return wrong("an IPv6-only socket cannot send to an IPv4 address");
                }
                let mapped = SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0);
                Ok(Address::Tcp(SocketAddr::V6(mapped)))
            }
            _ => wrong("not a socket address"),
        }
    }

    fn send(&self, data: &[u8], to: Option<&Address>) -> Result<(), DatagramError> {
        let fd = self.open_fd()?;
        let max = self.limit_for(to);
        if let Some(max) = max {
            if data.len() > max {
                return Err(DatagramError::TooLarge {
                    len: data.len(),
                    max: Some(max),
                });
            }
        }
        let connected = self.peer.borrow().is_some();
        let target = match to {
            Some(a) => Some(self.target(a)?),
            None => None,
        };
        loop {
            match sys::send_to(fd, data, target.as_ref()) {
                Ok(_) => {
                    bump(&self.counters.sent);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || sys::is_no_buffers(&e) => {
                    bump(&self.counters.send_dropped);
                    return Err(DatagramError::WouldBlock);
                }
                Err(e) if sys::is_msg_size(&e) => {
                    return Err(DatagramError::TooLarge {
                        len: data.len(),
                        max,
                    });
                }
                Err(e) if sys::is_refused(&e) => {
                    bump(&self.counters.refused);
                    if connected {
                        self.refused_later();
                    }
                    return Err(DatagramError::Refused);
                }
                Err(e) => return Err(DatagramError::Io(e)),
            }
        }
    }

    /// The largest datagram that can go to `to` (`None`: the connected peer): IPv4's limit
    /// for an IPv4 destination, even from a dual-stack IPv6 socket.
    fn limit_for(&self, to: Option<&Address>) -> Option<usize> {
        let peer = self.peer.borrow();
        match to.or(peer.as_ref()) {
            Some(Address::Tcp(SocketAddr::V4(_))) => Some(MAX_UDP4_PAYLOAD),
            _ => self.max_write_size(),
        }
    }

    /// Delivers `connection_refused` on a later iteration (a send found it, possibly inside a
    /// callback of this protocol).
    fn refused_later(&self) {
        let Some(r) = self.reactor() else { return };
        let me = self.rc();
        r.call_soon(move |r| {
            let t = me.transport();
            me.with_protocol(r, &t, |p, cx| p.connection_refused(cx));
        });
    }

    fn remove_file(&self) {
        let Some(f) = &self.file else { return };
        // Only the file this port made: another server may have replaced it since.
        if let Ok(meta) = std::fs::symlink_metadata(&f.path) {
            if meta.dev() == f.dev && meta.ino() == f.ino {
                let _ = std::fs::remove_file(&f.path);
            }
        }
    }

    /// Closes the socket; `stop_protocol` runs now (`deliver_now`, from the reactor's own
    /// teardown) or on a later iteration.
    fn close(&self, r: Option<&Reactor>, deliver_now: bool) {
        let Some(sock) = self.sock.borrow_mut().take() else {
            return;
        };
        if let Some(reg) = self.reg.take() {
            if let Some(r) = r {
                r.deregister(&reg);
            }
        }
        drop(sock);
        self.remove_file();
        let Some(r) = r else {
            self.protocol.borrow_mut().take();
            return;
        };
        // The guard drops the protocol when the call has run, or when it is dropped unrun (a
        // reactor dropped before its next iteration): either way the protocol -> transport ->
        // port cycle is broken.
        let guard = ReleaseProtocol(self.rc());
        let finish = move |r: &Reactor| {
            let me = &guard.0;
            let t = me.transport();
            me.with_protocol(r, &t, |p, cx| p.stop_protocol(cx));
            drop(guard);
        };
        if deliver_now {
            finish(r);
        } else {
            r.call_soon(finish);
        }
    }

    /// Starts or stops reading.
    fn watch(&self, on: bool) {
        let pause = !on;
        if self.paused.replace(pause) == pause {
            return; // unchanged
        }
        let (Some(r), Some(reg)) = (self.reactor(), self.reg.get()) else {
            return;
        };
        let interest = if on {
            Interest::READ
        } else {
            Interest::default()
        };
        if let Err(e) = r.set_interest(&reg, interest) {
            tracing::warn!(host = %self.host, error = %e, "cannot change whether a datagram port reads");
        }
    }

    fn warn_truncated(&self, len: usize, from: &Address) {
        self.unreported.set(self.unreported.get() + 1);
        let due = self
            .last_warning
            .get()
            .is_none_or(|t| t.elapsed() >= TRUNCATION_WARNING_EVERY);
        if due {
            tracing::warn!(
                host = %self.host,
                %from,
                len,
                buffer = self.opts.max_datagram_size,
                dropped = self.unreported.get(),
                total = self.counters.truncated.get(),
                "datagrams larger than the receive buffer dropped (raise max_datagram_size)"
            );
            self.unreported.set(0);
            self.last_warning.set(Some(Instant::now()));
        }
    }

    /// One received datagram to the protocol.
    fn deliver(&self, r: &Reactor, t: &DatagramTransport, data: &[u8], got: &Received) {
        if got.truncated {
            bump(&self.counters.truncated);
            self.warn_truncated(got.len, &got.from);
            self.with_protocol(r, t, |p, cx| p.datagram_truncated(cx, got.len, &got.from));
        } else {
            bump(&self.counters.received);
            self.with_protocol(r, t, |p, cx| p.datagram_received(cx, data, &got.from));
        }
    }

    /// The receive loop of one readiness event: at most `reads_per_event` datagrams.
    fn read_some(&self, r: &Reactor) {
        let t = self.transport();
        let budget = self.opts.reads_per_event;
        let mut done = 0;
        let mut got = RECEIVED.with(Cell::take);
        with_batch(self.slots, self.opts.max_datagram_size, |batch| {
            while done < budget && self.sock.borrow().is_some() && !self.paused.get() {
                got.clear();
                let want = (budget - done).min(self.slots);
                let res = if self.slots == 1 {
                    batch.recv_one(self.fd).map(|g| {
                        got.push(g);
                        1
                    })
                } else {
                    batch.recv_many(self.fd, want, &mut got)
                };
                match res {
                    Ok(n) => {
                        for (i, g) in got.iter().enumerate() {
                            if self.sock.borrow().is_none() {
                                // Stopped by an earlier datagram of the batch: the rest go
                                // with the socket, as if they had still been queued in it.
                                break;
                            }
                            // Paused by an earlier datagram of the batch: the rest are
                            // delivered all the same (they were read; dropping them would lose
                            // them), and nothing more is read.
                            self.deliver(r, &t, batch.data(i, g.len), g);
                        }
                        done += n.max(1);
                        if self.slots > 1 && n < want {
                            break; // a short batch: the queue is (very likely) empty
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => done += 1,
                    Err(e) if sys::is_refused(&e) => {
                        done += 1;
                        bump(&self.counters.refused);
                        if self.peer.borrow().is_some() {
                            self.with_protocol(r, &t, |p, cx| p.connection_refused(cx));
                        }
                    }
                    Err(e) => {
                        // A pending error other than a refusal (host unreachable, ...): the
                        // read consumed it; the socket stays open.
                        done += 1;
                        tracing::debug!(host = %self.host, error = %e, "datagram socket error");
                    }
                }
            }
        });
        got.clear();
        RECEIVED.with(|c| c.set(got));
    }
}

impl FileDescriptor for Port {
    fn fileno(&self) -> RawFd {
        self.fd
    }

    fn do_read(&self, r: &Reactor) -> Result<(), Reason> {
        self.read_some(r);
        Ok(())
    }

    fn connection_lost(&self, r: &Reactor, reason: Reason) {
        tracing::debug!(host = %self.host, %reason, "datagram port closed by the reactor");
        self.reg.take();
        self.close(Some(r), true);
    }
}

impl DatagramTransportImpl for Port {
    fn write_to(&self, data: &[u8], to: &Address) -> Result<(), DatagramError> {
        let peer = self.peer.borrow().clone();
        match peer {
            Some(p) if p == *to => self.send(data, None),
            Some(_) => Err(DatagramError::WrongAddress {
                addr: to.clone(),
                why: "the socket is connected to another peer",
            }),
            None => self.send(data, Some(to)),
        }
    }

    fn write(&self, data: &[u8]) -> Result<(), DatagramError> {
        if self.peer.borrow().is_none() {
            return Err(DatagramError::NotConnected);
        }
        self.send(data, None)
    }

    fn connect(&self, peer: &Address) -> Result<(), DatagramError> {
        let fd = self.open_fd()?;
        let target = self.target(peer)?;
        sys::dgram_connect(fd, &target)?;
        *self.peer.borrow_mut() = Some(peer.clone());
        Ok(())
    }

    fn peer(&self) -> Option<Address> {
        self.peer.borrow().clone()
    }

    fn host(&self) -> Address {
        self.host.clone()
    }

    fn stop_listening(&self) {
        let r = self.reactor();
        self.close(r.as_ref(), false);
    }

    fn listening(&self) -> bool {
        self.sock.borrow().is_some()
    }

    fn max_write_size(&self) -> Option<usize> {
        match self.family {
            DgramFamily::V4 => Some(MAX_UDP4_PAYLOAD),
            // A dual-stack socket sending to an IPv4 peer is held to IPv4's limit.
            DgramFamily::V6 => Some(MAX_UDP6_PAYLOAD),
            DgramFamily::Unix => None,
        }
    }

    fn pause_reading(&self) {
        self.watch(false);
    }

    fn resume_reading(&self) {
        self.watch(true);
    }

    fn reading(&self) -> bool {
        self.listening() && !self.paused.get()
    }

    fn stats(&self) -> DatagramStats {
        let c = &self.counters;
        DatagramStats {
            received: c.received.get(),
            sent: c.sent.get(),
            send_dropped: c.send_dropped.get(),
            truncated: c.truncated.get(),
            refused: c.refused.get(),
        }
    }

    fn set_broadcast_allowed(&self, on: bool) -> Result<(), DatagramError> {
        let fd = self.ip_only("broadcast on a Unix socket")?;
        Ok(sys::set_broadcast(fd, on)?)
    }

    fn broadcast_allowed(&self) -> Result<bool, DatagramError> {
        let fd = self.ip_only("broadcast on a Unix socket")?;
        Ok(sys::broadcast(fd)?)
    }

    fn membership(&self, group: IpAddr, iface: Interface, join: bool) -> Result<(), DatagramError> {
        let fd = self.ip_only("multicast on a Unix socket")?;
        check_group(group, self.is_v6())?;
        Ok(sys::membership(fd, group, iface.sys(), join)?)
    }

    fn set_ttl(&self, ttl: u8) -> Result<(), DatagramError> {
        let fd = self.ip_only("multicast on a Unix socket")?;
        Ok(sys::set_multicast_ttl(fd, self.is_v6(), ttl)?)
    }

    fn ttl(&self) -> Result<u8, DatagramError> {
        let fd = self.ip_only("multicast on a Unix socket")?;
        Ok(sys::multicast_ttl(fd, self.is_v6())?)
    }

    fn set_loopback(&self, on: bool) -> Result<(), DatagramError> {
        let fd = self.ip_only("multicast on a Unix socket")?;
        Ok(sys::set_multicast_loop(fd, self.is_v6(), on)?)
    }

    fn loopback(&self) -> Result<bool, DatagramError> {
        let fd = self.ip_only("multicast on a Unix socket")?;
        Ok(sys::multicast_loop(fd, self.is_v6())?)
    }

    fn set_interface(&self, iface: Interface) -> Result<(), DatagramError> {
        let fd = self.ip_only("multicast on a Unix socket")?;
        Ok(sys::set_multicast_if(fd, self.is_v6(), iface.sys())?)
    }
}
