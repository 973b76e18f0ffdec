//! The io_uring backend: what happens where the kernel refuses it (a typed error when asked for
//! explicitly, epoll as the default choice), exact level semantics for `add_reader` and
//! `add_writer` users on every backend, and descriptors released at deregistration.

use std::cell::Cell;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use torsion::poller::{self, Interest, Trigger};
use torsion::{reactor_test, Backend, Error, FileDescriptor, Reactor, Reason};

struct Sock {
    sock: UnixStream,
    reads: Cell<usize>,
    writes: Cell<usize>,
}

impl Sock {
    fn new(sock: UnixStream) -> Rc<Sock> {
        sock.set_nonblocking(true).unwrap();
        Rc::new(Sock {
            sock,
            reads: Cell::new(0),
            writes: Cell::new(0),
        })
    }
}

impl FileDescriptor for Sock {
    fn fileno(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn do_read(&self, _: &Reactor) -> Result<(), Reason> {
        // Reads nothing: the data stays, and a level-triggered reader hears of it again.
        self.reads.set(self.reads.get() + 1);
        Ok(())
    }

    fn do_write(&self, _: &Reactor) -> Result<(), Reason> {
        self.writes.set(self.writes.get() + 1);
        Ok(())
    }

    fn connection_lost(&self, _: &Reactor, _: Reason) {}
}

#[test]
fn an_explicit_io_uring_request_fails_with_a_typed_error_when_the_kernel_refuses() {
    let _serial = torsion::testing::serial(); // opens descriptors: keep leak counts exact
    for (errno, what) in [
        (libc::ENOSYS, "old kernel"),
        (libc::EPERM, "seccomp"),
        (libc::ENOMEM, "locked memory"),
    ] {
        poller::simulate_io_uring_refusal(Some(errno));
        let err = Reactor::with_backend(Backend::IoUring).unwrap_err();
        let shown = err.to_string();
        match err {
            Error::BackendUnavailable { backend, cause } => {
                assert_eq!(backend, "io_uring", "{what}");
                assert_eq!(cause.raw_os_error(), Some(errno), "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert!(
            shown.contains("io_uring") && shown.contains("epoll"),
            "{what}: {shown}"
        );
        // The poller constructor says the same as an io::Error, with the cause inside.
        let io = Backend::IoUring.poller().err().unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::Unsupported);
        let inner = io
            .get_ref()
            .and_then(|i| i.downcast_ref::<poller::BackendUnavailable>())
            .unwrap();
        assert_eq!(inner.cause.raw_os_error(), Some(errno));
    }
    poller::simulate_io_uring_refusal(None);
}

#[test]
fn the_default_choice_falls_back_to_epoll_when_the_kernel_refuses() {
    let _serial = torsion::testing::serial(); // opens descriptors: keep leak counts exact
    poller::simulate_io_uring_refusal(Some(libc::EPERM));
    let (p, backend) = Backend::IoUring.default_poller().unwrap();
    assert_eq!((p.name(), backend), ("epoll", Backend::Epoll));
    drop(p);
    // Other backends are never replaced.
    let (p, backend) = Backend::Poll.default_poller().unwrap();
    assert_eq!((p.name(), backend), ("poll", Backend::Poll));
    poller::simulate_io_uring_refusal(None);
    // Without the refusal the default is io_uring where the kernel has it.
    let (p, backend) = Backend::IoUring.default_poller().unwrap();
    if Backend::IoUring.available() {
        assert_eq!((p.name(), backend), ("io_uring", Backend::IoUring));
    } else {
        assert_eq!(backend, Backend::Epoll);
    }
}

#[test]
fn the_backend_name_parses() {
    for name in ["io_uring", "IO_URING", "uring", "io-uring"] {
        assert_eq!(name.parse::<Backend>().unwrap(), Backend::IoUring);
    }
    assert_eq!(Backend::IoUring.to_string(), "io_uring");
}

#[test]
fn the_probe_reports_what_the_backend_relies_on() {
    let _serial = torsion::testing::serial(); // opens descriptors: keep leak counts exact
    match poller::io_uring_probe() {
        Ok(f) => {
            assert!(f.features.contains(&"EXT_ARG"), "{f:?}");
            assert!(f.features.contains(&"NODROP"), "{f:?}");
            assert!(f.supported.contains(&"POLL_ADD"), "{f:?}");
            assert!(f.supported.contains(&"POLL_REMOVE"), "{f:?}");
            assert!(Backend::IoUring.available());
        }
        Err(e) => {
            eprintln!("no io_uring here: {e}");
            assert!(!Backend::IoUring.available());
        }
    }
}

reactor_test! {
    fn a_reader_that_does_not_drain_is_reported_on_every_iteration(reactor) {
        let (a, mut b) = UnixStream::pair().unwrap();
        let s = Sock::new(a);
        reactor.add_reader(s.clone()).unwrap();
        reactor.iterate(Some(Duration::ZERO)).unwrap();
        assert_eq!(s.reads.get(), 0, "nothing to read yet");
        b.write_all(b"x").unwrap();
        torsion::testing::run_until(reactor, Duration::from_secs(10), || s.reads.get() == 1);
        // Level-triggered: each iteration, even one that does not wait, reports it again.
        for n in 2..=6 {
            reactor.iterate(Some(Duration::ZERO)).unwrap();
            assert_eq!(s.reads.get(), n);
        }
        // Drained: no more reports.
        let mut buf = [0u8; 8];
        assert_eq!((&s.sock).read(&mut buf).unwrap(), 1);
        reactor.iterate(Some(Duration::ZERO)).unwrap();
        reactor.iterate(Some(Duration::from_millis(5))).unwrap();
        assert_eq!(s.reads.get(), 6, "reported after it was drained");
        reactor.remove_reader(&*s);
    }

    fn a_writer_is_reported_while_writable_and_not_after_removal(reactor) {
        let (a, _b) = UnixStream::pair().unwrap();
        let s = Sock::new(a);
        reactor.add_writer(s.clone()).unwrap();
        for n in 1..=5 {
            reactor.iterate(Some(Duration::from_secs(5))).unwrap();
            assert_eq!(s.writes.get(), n);
        }
        reactor.remove_writer(&*s);
        reactor.iterate(Some(Duration::from_millis(5))).unwrap();
        assert_eq!(s.writes.get(), 5);
    }

    fn changing_interest_takes_effect_at_the_next_wait(reactor) {
        let (a, mut b) = UnixStream::pair().unwrap();
        let s = Sock::new(a);
        let reg = reactor.register(s.clone(), Trigger::Level).unwrap();
        reactor.set_interest(&reg, Interest::WRITE).unwrap();
        reactor.iterate(Some(Duration::from_secs(5))).unwrap();
        assert_eq!((s.reads.get(), s.writes.get()), (0, 1));
        b.write_all(b"x").unwrap();
        reactor.set_interest(&reg, Interest::READ).unwrap();
        reactor.iterate(Some(Duration::from_secs(5))).unwrap();
        assert_eq!((s.reads.get(), s.writes.get()), (1, 1));
        reactor.set_interest(&reg, Interest::BOTH).unwrap();
        reactor.iterate(Some(Duration::from_secs(5))).unwrap();
        assert_eq!((s.reads.get(), s.writes.get()), (2, 2));
        reactor.deregister(&reg);
    }

    fn a_deregistered_descriptor_is_released_at_once(reactor) {
        // A poll request holds the open file: ending the registration must let it go before
        // the owner closes the descriptor, or the peer would not see the end of the stream.
        let (a, mut b) = UnixStream::pair().unwrap();
        let s = Sock::new(a);
        reactor.add_reader(s.clone()).unwrap();
        reactor.iterate(Some(Duration::ZERO)).unwrap(); // the request is with the kernel
        reactor.remove_reader(&*s);
        drop(s);
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1];
        // No iteration in between: the close alone must end the stream.
        assert_eq!(b.read(&mut buf).unwrap(), 0);
    }
}

/// An echo server on `reactor`, and a client thread that sends 200,000 patterned bytes and
/// checks the echo; the reactor's statistics after it.
fn echo_once(reactor: &Reactor) -> torsion::reactor::Stats {
    use torsion::{Context, Factory, Protocol};
    struct Echo;
    impl Protocol for Echo {
        fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
            cx.transport().write(data);
        }
    }
    let port = reactor
        .listen_tcp("127.0.0.1:0", Factory::for_protocol(|| Echo))
        .unwrap();
    let addr = port.address();
    let client = std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        c.write_all(&data).unwrap();
        let mut got = vec![0u8; data.len()];
        c.read_exact(&mut got).unwrap();
        assert!(got == data, "the echo came back corrupted");
    });
    torsion::testing::run_until(reactor, Duration::from_secs(30), || client.is_finished());
    client.join().unwrap();
    // The client's thread has ended and closed its socket; let the server see the end of the
    // stream and close its side before the leak check counts registrations.
    torsion::testing::run_until(reactor, Duration::from_secs(30), || {
        reactor.descriptor_count() == 1
    });
    port.stop_listening();
    reactor.stats()
}

/// A kernel that offers io_uring but not provided-buffer rings (before 5.19): the reactor still
/// runs on io_uring, its TCP connections on readiness, and nothing is lost.
#[test]
fn without_buffer_rings_tcp_runs_on_readiness_over_io_uring() {
    if !Backend::IoUring.available() {
        eprintln!("SKIPPED: io_uring is unavailable here");
        return;
    }
    let _serial = torsion::testing::serial();
    let check = torsion::testing::LeakCheck::new();
    poller::simulate_io_uring_buffer_ring_refusal(Some(EINVAL));
    let refused = Reactor::with_backend(Backend::IoUring);
    poller::simulate_io_uring_buffer_ring_refusal(None);
    let reactor = refused.expect("io_uring without buffer rings still makes a reactor");
    assert_eq!(reactor.backend(), Some(Backend::IoUring));
    let stats = echo_once(&reactor);
    assert_eq!(stats.completions, 0, "{stats}");
    assert!(stats.bytes_read >= 200_000, "{stats}");
    check.check(reactor);
    // With buffer rings, the same exchange runs on completions.
    let check = torsion::testing::LeakCheck::new();
    let reactor = Reactor::with_backend(Backend::IoUring).unwrap();
    let stats = echo_once(&reactor);
    assert!(stats.completions > 0, "{stats}");
    check.check(reactor);
}

/// `Reactor::with_io_uring` takes the buffer ring it is given: two 64-byte buffers run dry
/// under 200 KB of echo, and nothing is lost.
#[test]
fn with_io_uring_uses_the_buffer_ring_it_is_given() {
    if !Backend::IoUring.available() {
        eprintln!("SKIPPED: io_uring is unavailable here");
        return;
    }
    let _serial = torsion::testing::serial();
    let check = torsion::testing::LeakCheck::new();
    let opts = poller::UringOptions::new(2, 64).unwrap();
    let reactor = Reactor::with_io_uring(opts).unwrap();
    let stats = echo_once(&reactor);
    assert!(stats.completions > 0, "{stats}");
    assert!(stats.buffer_ring_exhausted > 0, "{stats}");
    check.check(reactor);
    for (buffers, size) in [
        (0, 64),
        (3, 64),
        (65536, 64),
        (4, 0),
        (4, (1 << 20) + 1),
        (32768, 1 << 20),
    ] {
        let e = poller::UringOptions::new(buffers, size).unwrap_err();
        assert!(
            matches!(e, Error::InvalidSetting(_)),
            "{buffers} x {size}: {e}"
        );
    }
}

/// EINVAL, what a kernel before 5.19 answers to a buffer-ring registration.
const EINVAL: i32 = 22;
