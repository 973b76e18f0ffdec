//! Unix stream sockets: abstract names, the socket file policy, mode, peer credentials and
//! descriptor passing. Every test on every backend, each ending with the leak check.
//!
//! What every stream transport does the same way (echo, flow control, half-close, ...) is in
//! `transport_suite.rs`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use torsion::interfaces::{SendFdsError, UnixAddress};
use torsion::testing::run_until;
use torsion::unix::UnixListenOptions;
use torsion::{
    reactor_test, Address, ClientFactory, ConnectError, Connector, Context, Error, Factory,
    Protocol, ProtocolFactory, Reactor, Reason, Transport,
};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A fresh directory for one test's socket files (removed by [`Dir`]'s drop).
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("torsion-unix-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn join(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type OnData = Box<dyn FnMut(&Transport, &[u8])>;
type OnFd = Box<dyn FnMut(&Transport, OwnedFd)>;
type OnMade = Box<dyn FnMut(&Transport)>;

/// What a connection saw.
#[derive(Default)]
struct Log {
    data: RefCell<Vec<u8>>,
    lost: RefCell<Option<Reason>>,
    /// Bytes received before each descriptor arrived.
    fd_at: RefCell<Vec<usize>>,
}

/// A protocol made of hooks, recording into a [`Log`].
struct Hooks {
    log: Rc<Log>,
    made: Option<OnMade>,
    data: Option<OnData>,
    fd: Option<OnFd>,
}

impl Hooks {
    fn new(log: &Rc<Log>) -> Hooks {
        Hooks {
            log: log.clone(),
            made: None,
            data: None,
            fd: None,
        }
    }
}

impl Protocol for Hooks {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        if let Some(h) = &mut self.made {
            h(cx.transport());
        }
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        self.log.data.borrow_mut().extend_from_slice(data);
        if let Some(h) = &mut self.data {
            h(cx.transport(), data);
        }
    }

    fn file_descriptor_received(&mut self, cx: &mut Context<'_>, fd: OwnedFd) {
        let at = self.log.data.borrow().len();
        self.log.fd_at.borrow_mut().push(at);
        match &mut self.fd {
            Some(h) => h(cx.transport(), fd),
            None => drop(fd),
        }
    }

    fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
        *self.log.lost.borrow_mut() = Some(reason);
    }
}

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        cx.transport().write(data);
    }
}

/// Records the connector's callbacks.
#[derive(Default)]
struct Client {
    log: Rc<Log>,
    failed: RefCell<Option<ConnectError>>,
}
impl ProtocolFactory for Client {
    fn build_protocol(&self, _: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Hooks::new(&self.log)))
    }
}
impl ClientFactory for Client {
    fn client_connection_failed(&self, _: &Connector, reason: ConnectError) {
        *self.failed.borrow_mut() = Some(reason);
    }
}

/// Iterates until only `n` descriptors are registered.
fn settle(r: &Reactor, n: usize) {
    run_until(r, secs(10), || r.descriptor_count() == n);
}

/// Connects a client that writes `msg` and closes once it got as many bytes back.
fn echo_once(reactor: &Reactor, addr: UnixAddress, msg: &'static [u8]) -> Rc<Log> {
    let log = Rc::new(Log::default());
    let l = log.clone();
    let client = Factory::for_protocol(move || {
        let mut p = Hooks::new(&l);
        p.made = Some(Box::new(move |t| t.write(msg)));
        let l = l.clone();
        p.data = Some(Box::new(move |t, _| {
            if l.data.borrow().len() == msg.len() {
                t.lose_connection();
            }
        }));
        p
    });
    reactor.connect_unix(addr, client, secs(10));
    run_until(reactor, secs(10), || log.lost.borrow().is_some());
    assert_eq!(&*log.data.borrow(), msg);
    log
}

/// A pipe: (read end, write end) as files.
fn pipe() -> (std::fs::File, std::fs::File) {
    let (r, w) = std::io::pipe().unwrap();
    (OwnedFd::from(r).into(), OwnedFd::from(w).into())
}

reactor_test! {
    fn echo_on_a_path_with_addresses_and_the_file_removed_at_stop(reactor) {
        let dir = Dir::new("echo");
        let path = dir.join("echo.sock");
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        let port = reactor
            .listen_unix(path.as_path(), Factory::for_protocol(move || {
                let s = s.clone();
                let mut p = Hooks::new(&Rc::default());
                p.made = Some(Box::new(move |t| s.borrow_mut().push((t.peer(), t.host()))));
                p.data = Some(Box::new(|t, d| t.write(d)));
                p
            }))
            .unwrap();
        assert_eq!(port.address(), Address::Unix(UnixAddress::path(&path)));
        assert_eq!(port.address().to_string(), format!("unix:{}", path.display()));
        assert_eq!(port.port(), 0);
        echo_once(reactor, UnixAddress::path(&path), b"hello over a path");
        assert_eq!(
            seen.borrow()[0],
            (Address::Unix(UnixAddress::Unnamed), Address::Unix(UnixAddress::path(&path)))
        );
        settle(reactor, 1);
        assert!(path.exists());
        port.stop_listening();
        assert!(!path.exists(), "the socket file is removed when the port stops");
        port.stop_listening(); // idempotent
    }

    fn abstract_names_listen_connect_and_refuse_a_second_listener(reactor) {
        let name = format!("torsion-test-{}-abstract", std::process::id());
        let addr = UnixAddress::abstract_name(&name);
        let port = reactor.listen_unix(addr.clone(), Factory::for_protocol(|| Echo)).unwrap();
        assert_eq!(port.address().to_string(), format!("unix:@{name}"));
        // The `@` form of a &str is the same address.
        let again = reactor.listen_unix(format!("@{name}").as_str(), Factory::for_protocol(|| Echo));
        match again {
            Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}"),
            other => panic!("a second listener on a taken abstract name: {other:?}"),
        }
        echo_once(reactor, addr, b"abstract");
        settle(reactor, 1);
        port.stop_listening();
    }

    fn a_live_server_is_refused_a_dead_socket_replaced_a_plain_file_kept(reactor) {
        let dir = Dir::new("stale");
        // Live: the first server keeps its socket and keeps serving.
        let live = dir.join("live.sock");
        let port = reactor.listen_unix(live.as_path(), Factory::for_protocol(|| Echo)).unwrap();
        match reactor.listen_unix(live.as_path(), Factory::for_protocol(|| Echo)) {
            Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}"),
            other => panic!("listening over a live server: {other:?}"),
        }
        echo_once(reactor, UnixAddress::path(&live), b"still served");
        // Dead: a socket file nobody listens on (std's listener leaves its file behind).
        let dead = dir.join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        assert!(dead.exists());
        let client = Rc::new(Client::default());
        reactor.connect_unix(dead.as_path(), client.clone(), secs(10));
        run_until(reactor, secs(10), || client.failed.borrow().is_some());
        assert!(matches!(*client.failed.borrow(), Some(ConnectError::Refused)));
        let port2 = reactor.listen_unix(dead.as_path(), Factory::for_protocol(|| Echo)).unwrap();
        echo_once(reactor, UnixAddress::path(&dead), b"replaced");
        // Not a socket: refused, and the file is left as it was.
        let plain = dir.join("plain");
        std::fs::write(&plain, b"precious").unwrap();
        match reactor.listen_unix(plain.as_path(), Factory::for_protocol(|| Echo)) {
            Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}"),
            other => panic!("listening over a plain file: {other:?}"),
        }
        assert_eq!(std::fs::read(&plain).unwrap(), b"precious");
        // A directory neither.
        assert!(reactor.listen_unix(dir.0.as_path(), Factory::for_protocol(|| Echo)).is_err());
        assert!(dir.0.is_dir());
        settle(reactor, 2);
        port.stop_listening();
        port2.stop_listening();
        assert!(!live.exists() && !dead.exists());
    }

    fn a_missing_path_and_bad_addresses_fail_cleanly(reactor) {
        let dir = Dir::new("missing");
        let client = Rc::new(Client::default());
        reactor.connect_unix(dir.join("nobody.sock").as_path(), client.clone(), secs(10));
        run_until(reactor, secs(10), || client.failed.borrow().is_some());
        match &*client.failed.borrow() {
            Some(ConnectError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
            other => panic!("{other:?}"),
        }
        let long = dir.join(&"x".repeat(200));
        assert!(matches!(
            reactor.listen_unix(long.as_path(), Factory::for_protocol(|| Echo)),
            Err(Error::BadAddress(_))
        ));
        assert!(matches!(
            reactor.listen_unix(UnixAddress::Unnamed, Factory::for_protocol(|| Echo)),
            Err(Error::BadAddress(_))
        ));
        for opts in [
            UnixListenOptions { mode: Some(0o10000), ..UnixListenOptions::default() },
            UnixListenOptions { fds_per_message: 0, ..UnixListenOptions::default() },
            UnixListenOptions { fds_per_message: 254, ..UnixListenOptions::default() },
            UnixListenOptions { max_queued_fds: 0, ..UnixListenOptions::default() },
            UnixListenOptions { backlog: 0, ..UnixListenOptions::default() },
        ] {
            let r = reactor.listen_unix_with(dir.join("opt.sock").as_path(), Factory::for_protocol(|| Echo), opts);
            assert!(matches!(r, Err(Error::BadAddress(_))), "{opts:?}");
        }
        assert!(!dir.join("opt.sock").exists());
        // A timed-out connect leaves nothing behind either (the fake-free way: 0 s).
        let client = Rc::new(Client::default());
        reactor.connect_unix(dir.join("nobody.sock").as_path(), client.clone(), Duration::ZERO);
        run_until(reactor, secs(10), || client.failed.borrow().is_some());
    }

    fn a_lock_file_refuses_a_live_holder_and_takes_over_a_dead_ones(reactor) {
        let dir = Dir::new("lock");
        let path = dir.join("locked.sock");
        let lock = dir.join("locked.sock.lock");
        let opts = UnixListenOptions { lock: true, ..UnixListenOptions::default() };
        let port = reactor.listen_unix_with(path.as_path(), Factory::for_protocol(|| Echo), opts).unwrap();
        assert_eq!(std::fs::read_link(&lock).unwrap(), PathBuf::from(std::process::id().to_string()));
        // Held by a live process (this one): refused, and the lock and socket stay.
        match reactor.listen_unix_with(path.as_path(), Factory::for_protocol(|| Echo), opts) {
            Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}"),
            other => panic!("a second holder of a live lock: {other:?}"),
        }
        assert!(std::fs::symlink_metadata(&lock).is_ok() && path.exists());
        echo_once(reactor, UnixAddress::path(&path), b"locked");
        settle(reactor, 1);
        port.stop_listening();
        assert!(std::fs::symlink_metadata(&lock).is_err() && !path.exists());
        // A dead holder's lock (an exited child's id) and its dead socket: both taken over.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        std::os::unix::fs::symlink(dead_pid.to_string(), &lock).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let port = reactor.listen_unix_with(path.as_path(), Factory::for_protocol(|| Echo), opts).unwrap();
        assert_eq!(std::fs::read_link(&lock).unwrap(), PathBuf::from(std::process::id().to_string()));
        echo_once(reactor, UnixAddress::path(&path), b"taken over");
        settle(reactor, 1);
        port.stop_listening();
        assert!(std::fs::symlink_metadata(&lock).is_err());
        // Abstract names have no file to lock.
        let name = UnixAddress::abstract_name("torsion-test-lock");
        assert!(matches!(
            reactor.listen_unix_with(name, Factory::for_protocol(|| Echo), opts),
            Err(Error::BadAddress(_))
        ));
    }

    fn a_wrapped_protocol_gets_the_unix_side_and_the_descriptors(reactor) {
        use torsion::protocol::wrap::{ForwardingTransport, ProtocolWrapper, WrappingFactory};
        struct Fwd(Transport);
        impl ForwardingTransport for Fwd {
            fn wrapped(&self) -> &Transport {
                &self.0
            }
        }
        let name = UnixAddress::abstract_name(format!("torsion-test-{}-wrap", std::process::id()));
        let got = Rc::new(RefCell::new(Vec::new()));
        let g = got.clone();
        let inner = Factory::for_protocol(move || {
            let g = g.clone();
            let mut p = Hooks::new(&Rc::default());
            p.made = Some(Box::new(|t| {
                assert!(t.unix().unwrap().peer_credentials().is_ok(), "forwarded by the wrapper");
            }));
            p.fd = Some(Box::new(move |t, fd| {
                let mut s = Vec::new();
                std::fs::File::from(fd).read_to_end(&mut s).unwrap();
                g.borrow_mut().push(s);
                t.lose_connection();
            }));
            p
        });
        let factory = WrappingFactory::new(inner, |inner, _| {
            Box::new(ProtocolWrapper::new(inner, |outer| {
                Transport::new(Rc::new(Fwd(outer.clone())))
            }))
        });
        let port = reactor.listen_unix(name.clone(), factory).unwrap();
        let (r, mut w) = pipe();
        w.write_all(b"through the wrapper").unwrap();
        drop(w);
        let fd = RefCell::new(Some(OwnedFd::from(r)));
        let log = Rc::new(Log::default());
        let l = log.clone();
        let client = Factory::for_protocol(move || {
            let mut p = Hooks::new(&l);
            let mut fd = fd.borrow_mut().take();
            p.made = Some(Box::new(move |t| {
                let fd = fd.take().unwrap();
                t.unix().unwrap().send_file_descriptors(vec![fd], b"!").unwrap();
            }));
            p
        });
        reactor.connect_unix(name, client, secs(10));
        run_until(reactor, secs(10), || log.lost.borrow().is_some());
        assert_eq!(*got.borrow(), vec![b"through the wrapper".to_vec()]);
        settle(reactor, 1);
        port.stop_listening();
    }

    fn a_flood_of_passed_descriptors_never_piles_up(reactor) {
        // 2,000 one-byte messages, each with a descriptor, to a protocol that ignores them: each
        // is closed as it arrives, so the process never holds many at once.
        const MESSAGES: usize = 2000;
        struct Sender {
            t: Transport,
            left: Cell<usize>,
            most_open: Rc<Cell<usize>>,
        }
        impl torsion::Producer for Sender {
            fn resume_producing(&self) {
                let n = self.left.get();
                if n == 0 {
                    self.t.unregister_producer();
                    self.t.lose_connection();
                    return;
                }
                self.left.set(n - 1);
                let fd: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
                self.t.unix().unwrap().send_file_descriptors(vec![fd], b"f").unwrap();
                let open = torsion::testing::open_fd_count();
                self.most_open.set(self.most_open.get().max(open));
            }
        }
        let name = UnixAddress::abstract_name(format!("torsion-test-{}-flood", std::process::id()));
        let received = Rc::new(Cell::new(0usize));
        let r = received.clone();
        let port = reactor
            .listen_unix(name.clone(), Factory::for_protocol(move || {
                let r = r.clone();
                let mut p = Hooks::new(&Rc::default());
                p.data = Some(Box::new(move |_, d| r.set(r.get() + d.len())));
                p
            }))
            .unwrap();
        let before = torsion::testing::open_fd_count();
        let most_open = Rc::new(Cell::new(0));
        let m = most_open.clone();
        let log = Rc::new(Log::default());
        let l = log.clone();
        let client = Factory::for_protocol(move || {
            let m = m.clone();
            let mut p = Hooks::new(&l);
            p.made = Some(Box::new(move |t| {
                let sender = Rc::new(Sender { t: t.clone(), left: Cell::new(MESSAGES), most_open: m.clone() });
                t.register_producer(sender, false).unwrap();
            }));
            p
        });
        reactor.connect_unix(name, client, secs(10));
        run_until(reactor, secs(30), || log.lost.borrow().is_some() && received.get() == MESSAGES);
        assert!(
            most_open.get() < before + 64,
            "descriptors piled up: {} open at most, {before} before",
            most_open.get()
        );
        settle(reactor, 1);
        port.stop_listening();
    }

    fn the_socket_file_gets_the_mode_asked_for(reactor) {
        let dir = Dir::new("mode");
        for mode in [0o600, 0o660, 0o666] {
            let path = dir.join(&format!("m{mode:o}.sock"));
            let opts = UnixListenOptions { mode: Some(mode), ..UnixListenOptions::default() };
            let port = reactor.listen_unix_with(path.as_path(), Factory::for_protocol(|| Echo), opts).unwrap();
            let m = std::fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o7777;
            assert_eq!(m, mode);
            echo_once(reactor, UnixAddress::path(&path), b"m");
            settle(reactor, 1);
            port.stop_listening();
        }
    }

    fn both_ends_read_their_peers_credentials(reactor) {
        let name = UnixAddress::abstract_name(format!("torsion-test-{}-creds", std::process::id()));
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        let port = reactor
            .listen_unix(name.clone(), Factory::for_protocol(move || {
                let s = s.clone();
                let mut p = Hooks::new(&Rc::default());
                p.made = Some(Box::new(move |t| {
                    s.borrow_mut().push(t.unix().unwrap().peer_credentials().unwrap());
                    assert!(t.tcp().is_none());
                }));
                p.data = Some(Box::new(|t, d| t.write(d)));
                p
            }))
            .unwrap();
        let log = echo_once(reactor, name, b"who");
        assert!(log.lost.borrow().is_some());
        let me = std::fs::metadata("/proc/self").unwrap();
        let c = seen.borrow()[0];
        assert_eq!((c.pid, c.uid, c.gid), (Some(std::process::id()), me.uid(), me.gid()));
        settle(reactor, 1);
        port.stop_listening();
    }

    fn a_passed_descriptor_is_used_and_a_dropped_one_is_closed(reactor) {
        // The client passes two pipe read ends: "U" says use the next descriptor (read the
        // pipe, send what it holds back), "D" says drop it.
        let name = UnixAddress::abstract_name(format!("torsion-test-{}-fds", std::process::id()));
        let port = reactor
            .listen_unix(name.clone(), Factory::for_protocol(|| {
                let fds = Rc::new(RefCell::new(VecDeque::new()));
                let f = fds.clone();
                let mut p = Hooks::new(&Rc::default());
                p.fd = Some(Box::new(move |_, fd| f.borrow_mut().push_back(fd)));
                p.data = Some(Box::new(move |t, data| {
                    for b in data {
                        let fd = fds.borrow_mut().pop_front().expect("a descriptor came first");
                        match b {
                            b'U' => {
                                let mut s = Vec::new();
                                std::fs::File::from(fd).read_to_end(&mut s).unwrap();
                                t.write(&s);
                            }
                            _ => drop(fd),
                        }
                    }
                }));
                p
            }))
            .unwrap();
        let (used_r, mut used_w) = pipe();
        let (dropped_r, mut dropped_w) = pipe();
        used_w.write_all(b"read through a passed pipe").unwrap();
        drop(used_w); // the server reads to the end
        let log = Rc::new(Log::default());
        let l = log.clone();
        let fds = RefCell::new(Some((used_r, dropped_r)));
        let client = Factory::for_protocol(move || {
            let mut p = Hooks::new(&l);
            let (u, d) = fds.borrow_mut().take().unwrap();
            let mut pending = Some((u, d));
            p.made = Some(Box::new(move |t| {
                let (u, d) = pending.take().unwrap();
                let unix = t.unix().unwrap();
                unix.send_file_descriptors(vec![u.into()], b"U").unwrap();
                unix.send_file_descriptors(vec![d.into()], b"D").unwrap();
            }));
            let l = l.clone();
            p.data = Some(Box::new(move |t, _| {
                if l.data.borrow().len() == 26 {
                    t.lose_connection();
                }
            }));
            p
        });
        reactor.connect_unix(name, client, secs(10));
        run_until(reactor, secs(10), || log.lost.borrow().is_some());
        assert_eq!(&*log.data.borrow(), b"read through a passed pipe");
        // The dropped read end is closed everywhere: writing to the pipe fails with EPIPE.
        let err = dropped_w.write_all(b"x").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
        drop(dropped_w);
        // The leak check then counts every descriptor: none of the passed ones is left open.
        settle(reactor, 1);
        port.stop_listening();
    }

    fn descriptors_stay_in_stream_order_behind_buffered_bytes(reactor) {
        // The server's buffer is full of bytes when it passes a descriptor with the byte "X":
        // the client gets it after everything written before, and before that byte.
        const BULK: usize = 4 << 20;
        let name = UnixAddress::abstract_name(format!("torsion-test-{}-order", std::process::id()));
        let (r1, mut w1) = pipe();
        w1.write_all(b"fd1").unwrap();
        drop(w1);
        let r1 = RefCell::new(Some(r1));
        let port = reactor
            .listen_unix(name.clone(), Factory::for_protocol(move || {
                let fd = r1.borrow_mut().take();
                let mut p = Hooks::new(&Rc::default());
                let mut fd = fd;
                p.made = Some(Box::new(move |t| {
                    t.write(&vec![b'a'; BULK]);
                    assert!(t.buffered() > 0, "the bulk is waiting in the buffer");
                    let fd = fd.take().unwrap();
                    t.unix().unwrap().send_file_descriptors(vec![fd.into()], b"X").unwrap();
                    t.write(&vec![b'b'; 1000]);
                    t.lose_connection();
                }));
                p
            }))
            .unwrap();
        let log = Rc::new(Log::default());
        let l = log.clone();
        let got = Rc::new(RefCell::new(Vec::new()));
        let g = got.clone();
        let client = Factory::for_protocol(move || {
            let mut p = Hooks::new(&l);
            let g = g.clone();
            p.fd = Some(Box::new(move |_, fd| {
                let mut s = Vec::new();
                std::fs::File::from(fd).read_to_end(&mut s).unwrap();
                g.borrow_mut().push(s);
            }));
            p
        });
        reactor.connect_unix(name, client, secs(10));
        run_until(reactor, secs(20), || log.lost.borrow().is_some());
        let data = log.data.borrow();
        assert_eq!(data.len(), BULK + 1 + 1000);
        assert_eq!(data[BULK], b'X');
        assert!(data[..BULK].iter().all(|b| *b == b'a'));
        assert_eq!(*got.borrow(), vec![b"fd1".to_vec()]);
        let at = log.fd_at.borrow()[0];
        assert!(at <= BULK, "the descriptor came after the byte it was sent with ({at})");
        settle(reactor, 1);
        port.stop_listening();
    }

    fn the_per_message_cap_refuses_sends_and_closes_the_excess_received(reactor) {
        let name = UnixAddress::abstract_name(format!("torsion-test-{}-cap", std::process::id()));
        let received = Rc::new(Cell::new(0));
        let r = received.clone();
        let server_t = Rc::new(RefCell::new(None));
        let st = server_t.clone();
        let opts = UnixListenOptions { fds_per_message: 2, max_queued_fds: 3, ..UnixListenOptions::default() };
        let port = reactor
            .listen_unix_with(name.clone(), Factory::for_protocol(move || {
                let r = r.clone();
                let st = st.clone();
                let mut p = Hooks::new(&Rc::default());
                p.made = Some(Box::new(move |t| *st.borrow_mut() = Some(t.clone())));
                p.fd = Some(Box::new(move |_, fd| {
                    r.set(r.get() + 1);
                    drop(fd);
                }));
                p
            }), opts)
            .unwrap();
        let log = Rc::new(Log::default());
        let client_t = Rc::new(RefCell::new(None));
        let ct = client_t.clone();
        let l = log.clone();
        let client = Factory::for_protocol(move || {
            let ct = ct.clone();
            let mut p = Hooks::new(&l);
            p.made = Some(Box::new(move |t| *ct.borrow_mut() = Some(t.clone())));
            p
        });
        reactor.connect_unix(name, client, secs(10));
        run_until(reactor, secs(10), || server_t.borrow().is_some() && client_t.borrow().is_some());
        let server = server_t.borrow().clone().unwrap();
        let client = client_t.borrow().clone().unwrap();
        let su = server.unix().unwrap();
        assert_eq!(su.max_descriptors_per_message(), 2);
        // Sending: typed refusals.
        let three: Vec<OwnedFd> = (0..3).map(|_| pipe().0.into()).collect();
        assert_eq!(su.send_file_descriptors(three, b"x"), Err(SendFdsError::TooMany { given: 3, max: 2 }));
        let one: Vec<OwnedFd> = vec![pipe().0.into()];
        assert_eq!(su.send_file_descriptors(one, b""), Err(SendFdsError::NoData));
        assert_eq!(su.send_file_descriptors(Vec::new(), b"x"), Err(SendFdsError::NoDescriptors));
        // The queue: the client stops reading, the server's buffer fills, descriptors wait.
        client.pause_producing();
        server.write(&vec![0u8; 8 << 20]);
        assert!(server.buffered() > 0);
        su.send_file_descriptors(vec![pipe().0.into(), pipe().0.into()], b"q").unwrap();
        su.send_file_descriptors(vec![pipe().0.into()], b"q").unwrap();
        assert_eq!(
            su.send_file_descriptors(vec![pipe().0.into()], b"q"),
            Err(SendFdsError::QueueFull { queued: 4, max: 3 })
        );
        // Receiving: the client (32 per message) sends 5 in one message; the server takes 2
        // and the kernel closes the other 3.
        let mut writers = Vec::new();
        let mut readers = Vec::new();
        for _ in 0..5 {
            let (r, w) = pipe();
            readers.push(OwnedFd::from(r));
            writers.push(w);
        }
        client.unix().unwrap().send_file_descriptors(readers, b"five").unwrap();
        run_until(reactor, secs(10), || received.get() == 2);
        for mut w in writers {
            assert_eq!(w.write_all(b"x").unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
        }
        // The queued descriptors are closed with the connection.
        server.abort_connection();
        client.abort_connection();
        run_until(reactor, secs(10), || log.lost.borrow().is_some());
        assert_eq!(
            su_closed(&server),
            Err(SendFdsError::NotConnected)
        );
        settle(reactor, 1);
        port.stop_listening();
    }

    fn a_protocol_that_ignores_descriptors_closes_them(reactor) {
        let name = UnixAddress::abstract_name(format!("torsion-test-{}-ignore", std::process::id()));
        let port = reactor.listen_unix(name.clone(), Factory::for_protocol(|| Echo)).unwrap();
        let (r, mut w) = pipe();
        let fd = RefCell::new(Some(OwnedFd::from(r)));
        let log = Rc::new(Log::default());
        let l = log.clone();
        let client = Factory::for_protocol(move || {
            let mut p = Hooks::new(&l);
            let mut fd = fd.borrow_mut().take();
            p.made = Some(Box::new(move |t| {
                let fd = fd.take().unwrap();
                t.unix().unwrap().send_file_descriptors(vec![fd], b"echo me").unwrap();
            }));
            p.data = Some(Box::new(|t, _| t.lose_connection()));
            p
        });
        reactor.connect_unix(name, client, secs(10));
        run_until(reactor, secs(10), || log.lost.borrow().is_some());
        assert_eq!(&log.data.borrow()[..], b"echo me");
        assert_eq!(w.write_all(b"x").unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
        settle(reactor, 1);
        port.stop_listening();
    }
}

fn su_closed(t: &Transport) -> Result<(), SendFdsError> {
    t.unix()
        .unwrap()
        .send_file_descriptors(vec![pipe().0.into()], b"late")
}

/// The path of an example binary, built first (a no-op when fresh), as tests/examples.rs does.
fn example(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "-p", "torsion", "--example", name]);
    if p.ends_with("release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().unwrap().success(), "building example {name}");
    p.join("examples").join(name)
}

#[test]
fn the_unix_echo_example_echoes_reports_credentials_and_removes_its_file() {
    use std::io::BufRead;
    use std::os::unix::net::UnixStream;
    let dir = Dir::new("example");
    let path = dir.join("echo.sock");
    for backend in ["select", "poll", "epoll"] {
        let mut child = std::process::Command::new(example("unix_echo"))
            .arg(&path)
            .args(["--mode", "600", "--backend", backend])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim_end(),
            format!(
                "Echo server on unix:{} ({backend} reactor).",
                path.display()
            )
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        let mut c = UnixStream::connect(&path).unwrap();
        c.set_read_timeout(Some(secs(10))).unwrap();
        c.write_all(b"hello, unix echo").unwrap();
        let mut got = [0u8; 16];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello, unix echo");
        line.clear();
        out.read_line(&mut line).unwrap();
        let me = std::fs::metadata("/proc/self").unwrap();
        assert_eq!(
            line.trim_end(),
            format!(
                "client: pid {}, uid {}, gid {}",
                std::process::id(),
                me.uid(),
                me.gid()
            )
        );
        // SIGTERM: the reactor stops, the port with it, and the socket file is removed.
        torsion::testing::signal_process(child.id(), 15).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "{backend}: {status:?}");
        assert!(!path.exists(), "{backend}: the socket file is left behind");
    }
    // Bad arguments: one line and status 2.
    let out = torsion::testing::output_within(
        std::process::Command::new(example("unix_echo")).args(["x.sock", "--mode", "99"]),
        Duration::from_secs(120),
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("unix_echo: --mode"));
}
