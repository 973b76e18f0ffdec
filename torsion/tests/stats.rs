//! Reactor statistics: counted on the reactor's thread, read there and from other threads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use torsion::testing::run_until;
use torsion::{reactor_test, Context, Factory, FileDescriptor, Protocol, Reactor, Reason};

struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        cx.transport().write(data);
    }
}

struct Sock(UnixStream);

impl FileDescriptor for Sock {
    fn fileno(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    fn do_read(&self, _: &Reactor) -> Result<(), Reason> {
        let mut buf = [0u8; 64];
        let _ = (&self.0).read(&mut buf);
        Ok(())
    }
}

reactor_test! {
    fn iterations_events_timers_and_registrations_are_counted(reactor) {
        let before = reactor.stats();
        assert_eq!(before.iterations, 0);
        assert_eq!(before.backend, reactor.poller_name());
        assert_eq!((before.timers_pending, before.registrations), (0, 0));
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let s = Rc::new(Sock(a));
        reactor.add_reader(s.clone()).unwrap();
        let t1 = reactor.call_later(Duration::from_secs(3600), |_| {});
        let t2 = reactor.call_later(Duration::from_secs(3600), |_| {});
        for _ in 0..5 {
            reactor.iterate(Some(Duration::ZERO)).unwrap();
        }
        let st = reactor.stats();
        assert_eq!(st.iterations, 5);
        assert_eq!((st.timers_pending, st.registrations), (2, 1));
        assert_eq!(st.events, 0, "nothing was ready");
        b.write_all(b"hello").unwrap();
        run_until(reactor, Duration::from_secs(10), || reactor.stats().events >= 1);
        let st = reactor.stats();
        assert_eq!(st.events, 1, "one readable report, then drained");
        assert!(!st.time_accounting);
        assert_eq!((st.poll_time, st.callback_time), (Duration::ZERO, Duration::ZERO));
        t1.cancel().unwrap();
        t2.cancel().unwrap();
        reactor.remove_reader(&*s);
        let st = reactor.stats();
        assert_eq!((st.timers_pending, st.registrations), (0, 0));
    }

    fn time_accounting_splits_blocked_time_from_callback_time(reactor) {
        reactor.set_time_accounting(true);
        reactor.call_later(Duration::from_millis(50), |_| {});
        reactor.call_soon(|_| {
            // A callback that works for a while (it spins: the clock must see it).
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_millis(30) {}
        });
        for _ in 0..20 {
            if reactor.delayed_calls().is_empty() {
                break;
            }
            reactor.iterate(Some(Duration::from_secs(5))).unwrap();
        }
        let st = reactor.stats();
        assert!(st.time_accounting);
        // The loop blocked until the timer was due, at least 50 ms after it started, of which
        // at least 30 ms ran the callback.
        assert!(st.callback_time >= Duration::from_millis(30), "{st:?}");
        assert!(st.poll_time + st.callback_time >= Duration::from_millis(50), "{st:?}");
        assert!(st.to_string().contains("poll_time="), "{st}");
    }

    fn bytes_and_accepted_connections_are_counted(reactor) {
        let port = reactor
            .listen_tcp(("127.0.0.1", 0), Factory::for_protocol(|| Echo))
            .unwrap();
        let addr = port.address().as_tcp().unwrap();
        let client = std::thread::spawn(move || {
            let mut total = 0;
            for _ in 0..3 {
                let mut c = TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let msg = vec![7u8; 10_000];
                c.write_all(&msg).unwrap();
                let mut back = vec![0u8; msg.len()];
                c.read_exact(&mut back).unwrap();
                assert_eq!(back, msg);
                total += back.len();
            }
            total
        });
        let before = reactor.stats();
        run_until(reactor, Duration::from_secs(30), || client.is_finished());
        let echoed = client.join().unwrap() as u64;
        // Let the server see the three ends of stream and close.
        run_until(reactor, Duration::from_secs(30), || reactor.descriptor_count() == 1);
        let st = reactor.stats();
        assert_eq!(st.connections_accepted - before.connections_accepted, 3, "{st}");
        assert_eq!(st.bytes_read - before.bytes_read, echoed, "{st}");
        assert_eq!(st.bytes_written - before.bytes_written, echoed, "{st}");
        assert_eq!(port.accepted(), 3);
        port.stop_listening();
        reactor.iterate(Some(Duration::ZERO)).unwrap();
    }
}

#[test]
fn another_thread_reads_the_stats_through_the_handle() {
    let _serial = torsion::testing::serial(); // opens descriptors: keep leak counts exact
    let reactor = Reactor::new().unwrap();
    let handle = reactor.handle();
    let t1 = reactor.call_later(Duration::from_secs(3600), |_| {});
    let asker = std::thread::spawn(move || {
        let first = handle
            .stats()
            .unwrap()
            .recv_timeout(Duration::from_secs(60))
            .unwrap();
        let second = handle
            .stats()
            .unwrap()
            .recv_timeout(Duration::from_secs(60))
            .unwrap();
        handle.stop().unwrap();
        (first, second)
    });
    reactor.run().unwrap();
    let (first, second) = asker.join().unwrap();
    assert_eq!(first.timers_pending, 1);
    assert!(second.iterations > first.iterations, "{first} / {second}");
    assert!(second.events >= 1, "the waker woke it: {second}");
    t1.cancel().unwrap_or(());
    // A reactor that is gone answers no more.
    let handle = reactor.handle();
    drop(reactor);
    assert!(matches!(handle.stats(), Err(torsion::Error::ReactorGone)));
}

/// The echo example prints its reactor's statistics when it stops.
#[test]
fn the_echo_example_prints_its_statistics_at_exit() {
    let _serial = torsion::testing::serial(); // opens descriptors: keep leak counts exact
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut exe = std::env::current_exe().unwrap();
    exe.pop();
    if exe.ends_with("deps") {
        exe.pop();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "torsion", "--example", "echo"]);
    if exe.ends_with("release") {
        build.arg("--release");
    }
    assert!(build.status().unwrap().success());
    let mut child = Command::new(exe.join("examples").join("echo"))
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap()
        .trim_end_matches(['.', ','])
        .to_string();
    {
        let mut c = TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.write_all(b"hello, stats").unwrap();
        let mut got = [0u8; 12];
        c.read_exact(&mut got).unwrap();
    }
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("reactor statistics:"), "{err}");
    assert!(err.contains("accepted=1 "), "{err}");
    assert!(err.contains("bytes_read=12 "), "{err}");
    assert!(err.contains("bytes_written=12"), "{err}");
    assert!(err.contains("poll_time="), "{err}");
}
