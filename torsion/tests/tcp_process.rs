//! Stream behaviour that needs a process of its own: descriptor exhaustion (TCP and Unix
//! listeners) and SIGPIPE.
//!
//! Each test re-runs this test binary as a child with `TORSION_CHILD` set; the child's entry
//! point is the ignored test `child_entry`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use torsion::{Backend, Context, Factory, Protocol, Reactor, Transport};

fn spawn_child(kind: &str, backend: Backend) -> Child {
    spawn_child_with(kind, backend, Stdio::inherit())
}

fn spawn_child_with(kind: &str, backend: Backend, stderr: Stdio) -> Child {
    spawn_child_in(kind, backend, stderr, "")
}

/// A child whose `TORSION_SOCKET` is `socket` (the Unix socket it listens on).
fn spawn_child_in(kind: &str, backend: Backend, stderr: Stdio, socket: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TORSION_CHILD", kind)
        .env("TORSION_REACTOR", backend.name())
        .env("TORSION_SOCKET", socket)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// CPU time (user + system) of a process so far, from /proc (clock ticks of 10 ms).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of the line; `after` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        let t = cx.transport();
        t.write(data);
    }
}

#[test]
#[ignore = "entry point of the child processes started by the other tests"]
fn child_entry() {
    let reactor = Reactor::new().unwrap();
    match std::env::var("TORSION_CHILD").as_deref() {
        Ok("emfile") => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .init();
            let port = reactor
                .listen_tcp("127.0.0.1:0", Factory::for_protocol(|| Echo))
                .unwrap();
            // Room for a handful of connections only.
            let limit = torsion::testing::open_fd_count() as u64 + 6;
            torsion::testing::set_open_files_limit(limit).unwrap();
            println!("PORT={}", port.port());
            std::io::stdout().flush().unwrap();
            reactor.run().unwrap();
        }
        Ok("emfile-unix") => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .init();
            let path = std::env::var("TORSION_SOCKET").unwrap();
            let _port = reactor
                .listen_unix(std::path::Path::new(&path), Factory::for_protocol(|| Echo))
                .unwrap();
            let limit = torsion::testing::open_fd_count() as u64 + 6;
            torsion::testing::set_open_files_limit(limit).unwrap();
            println!("READY");
            std::io::stdout().flush().unwrap();
            reactor.run().unwrap();
        }
        Ok("unhandled") => {
            // No tracing subscriber in this process: the failure must still be seen.
            let (d, fire) = torsion::Deferred::<u32>::new();
            fire.errback(torsion::Failure::msg("nobody handled this"))
                .unwrap();
            drop(d);
        }
        Ok("connect-emfile") => {
            // No descriptor left: the lookup (which opens /etc/hosts) or the socket fails.
            let failed = Rc::new(std::cell::RefCell::new(None));
            let f = failed.clone();
            let factory =
                Factory::for_protocol(|| Echo).on_client_connection_failed(move |_, _, reason| {
                    *f.borrow_mut() = Some(torsion::error::Chain(&reason).to_string());
                });
            reactor.set_thread_pool_size(1);
            // Start the pool's thread before the limit (iterating: `run` would shut down).
            let warmed = Rc::new(std::cell::Cell::new(false));
            let w = warmed.clone();
            let warm = reactor.defer_to_thread(|| ()).add_callback(move |()| {
                w.set(true);
                Ok(())
            });
            while !warmed.get() {
                reactor.iterate(Some(Duration::from_millis(50))).unwrap();
            }
            drop(warm);
            let limit = torsion::testing::open_fd_count() as u64 + 8;
            torsion::testing::set_open_files_limit(limit).unwrap();
            // Fill every number left under the limit (holes included).
            let mut fillers = Vec::new();
            while let Ok(f) = std::fs::File::open("/dev/null") {
                fillers.push(f);
            }
            reactor.connect_tcp("localhost", 9, factory, Duration::from_secs(5));
            let start = Instant::now();
            while failed.borrow().is_none() && start.elapsed() < Duration::from_secs(10) {
                reactor.iterate(Some(Duration::from_millis(50))).unwrap();
            }
            println!("FAILED: {}", failed.borrow().clone().unwrap_or_default());
            drop(fillers);
        }
        Ok("sigpipe") => {
            torsion::testing::restore_default_sigpipe().unwrap();
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let closer = std::thread::spawn(move || {
                let (s, _) = l.accept().unwrap();
                drop(s); // the peer vanishes
            });
            let writes = Rc::new(std::cell::Cell::new(0u32));
            let w = writes.clone();
            let factory = Factory::for_protocol(move || Writer { writes: w.clone() });
            reactor.connect_tcp("127.0.0.1", port, factory, Duration::from_secs(5));
            reactor.run().unwrap();
            closer.join().unwrap();
            assert_eq!(writes.get(), 1000);
            println!("alive");
        }
        _ => {}
    }
}

/// Writes 1,000 times to a peer that closed, one write per iteration.
struct Writer {
    writes: Rc<std::cell::Cell<u32>>,
}
impl Protocol for Writer {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        let t = cx.transport();
        fn again(r: &Reactor, t: Transport, n: Rc<std::cell::Cell<u32>>) {
            t.write(&[b'x'; 4096]);
            n.set(n.get() + 1);
            if n.get() == 1000 {
                r.stop().unwrap();
            } else {
                r.call_later(Duration::from_micros(100), move |r| again(r, t, n));
            }
        }
        let (t, n) = (t.clone(), self.writes.clone());
        // Give the peer time to close first.
        cx.reactor()
            .call_later(Duration::from_millis(50), move |r| again(r, t, n));
    }
    fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
}

/// Collects the child's standard error on a thread of its own (the warnings it logs).
fn collect_stderr(child: &mut KillOnDrop) -> std::thread::JoinHandle<String> {
    let stderr = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    })
}

/// What the TCP and Unix cases share, once the child server listens with room for a handful
/// of connections: clients that stay open exhaust its descriptors, and more keep knocking for
/// a second, in which the server must not spin; `check_shed` then looks at what the clients
/// saw. Once they are gone a new client is served at once, and the shedding was logged once.
fn at_the_limit<S: Read + Write>(
    backend: Backend,
    child: KillOnDrop,
    log: std::thread::JoinHandle<String>,
    connect: impl Fn() -> std::io::Result<S>,
    check_shed: impl FnOnce(&[S]),
) {
    let pid = child.0.id();
    let mut clients: Vec<S> = (0..30).filter_map(|_| connect().ok()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_ticks(pid);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        if let Ok(s) = connect() {
            clients.push(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let used = cpu_ticks(pid) - before;
    assert!(
        used < 10,
        "{backend}: server used {used} ticks (10 ms each) in 1 s at the fd limit"
    );
    check_shed(&clients);
    // Free the descriptors: the server sees EOF and closes its side.
    drop(clients);
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    let mut c = connect().unwrap();
    c.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{backend}: served after {:?}",
        start.elapsed()
    );
    // The shedding was logged, once (rate-limited), where the program's user sees it.
    drop(child);
    let log = log.join().unwrap();
    let warnings = log.matches("shedding pending clients unserved").count();
    assert_eq!(warnings, 1, "{backend}: stderr was:\n{log}");
}

/// How a shed client's read ends, without waiting.
fn read_now(c: &mut impl Read) -> std::io::Result<usize> {
    c.read(&mut [0u8; 16])
}

fn emfile_on(backend: Backend) {
    let mut child = KillOnDrop(spawn_child_with("emfile", backend, Stdio::piped()));
    let log = collect_stderr(&mut child);
    let out = BufReader::new(child.0.stdout.take().unwrap());
    let port: u16 = out
        .lines()
        .map(Result::unwrap)
        .find_map(|l| l.split("PORT=").nth(1).map(|p| p.trim().parse().unwrap()))
        .expect("the child prints its port");
    let connect = || {
        let c = TcpStream::connect(("127.0.0.1", port))?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(c)
    };
    at_the_limit(backend, child, log, connect, |clients| {
        // Clients shed at the limit were reset: none may see a clean, empty reply.
        let (mut reset, mut clean) = (0, 0);
        for mut c in clients {
            c.set_nonblocking(true).unwrap();
            match read_now(&mut c) {
                Ok(0) => clean += 1,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => reset += 1,
                _ => {}
            }
        }
        assert_eq!(clean, 0, "{backend}: {clean} shed clients got a clean EOF");
        assert!(reset > 0, "{backend}: no client was shed with a reset");
    });
}

/// Kills the child when the test ends, passed or failed, so no server outlives it.
struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn at_the_fd_limit_the_listener_does_not_spin_and_recovers_select() {
    emfile_on(Backend::Select);
}

#[test]
fn at_the_fd_limit_the_listener_does_not_spin_and_recovers_poll() {
    emfile_on(Backend::Poll);
}

#[test]
fn at_the_fd_limit_the_listener_does_not_spin_and_recovers_epoll() {
    emfile_on(Backend::Epoll);
}

#[test]
fn at_the_fd_limit_the_listener_does_not_spin_and_recovers_io_uring() {
    if !Backend::IoUring.available() {
        eprintln!("SKIPPED: io_uring is unavailable here");
        return;
    }
    emfile_on(Backend::IoUring);
}

/// A Unix listener at the descriptor limit: it sheds the waiting clients (closing them, the
/// only end a Unix stream has) instead of spinning or leaving them hanging, logs it once, and
/// serves again once descriptors are free.
fn unix_emfile_on(backend: Backend) {
    let dir = std::env::temp_dir().join(format!(
        "torsion-emfile-{}-{}",
        std::process::id(),
        backend.name()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let mut child = KillOnDrop(spawn_child_in(
        "emfile-unix",
        backend,
        Stdio::piped(),
        path.to_str().unwrap(),
    ));
    let log = collect_stderr(&mut child);
    let out = BufReader::new(child.0.stdout.take().unwrap());
    assert!(
        out.lines()
            .map(Result::unwrap)
            .any(|l| l.ends_with("READY")),
        "{backend}: the child did not start"
    );
    let connect = || {
        let c = std::os::unix::net::UnixStream::connect(&path)?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(c)
    };
    at_the_limit(backend, child, log, connect, |clients| {
        // Shed clients were closed: they see the end of the stream, not a hang.
        let closed = clients
            .iter()
            .filter(|&(mut c)| {
                c.set_nonblocking(true).unwrap();
                matches!(read_now(&mut c), Ok(0))
            })
            .count();
        assert!(closed > 0, "{backend}: no waiting client was shed");
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn at_the_fd_limit_a_unix_listener_sheds_and_recovers_select() {
    unix_emfile_on(Backend::Select);
}

#[test]
fn at_the_fd_limit_a_unix_listener_sheds_and_recovers_poll() {
    unix_emfile_on(Backend::Poll);
}

#[test]
fn at_the_fd_limit_a_unix_listener_sheds_and_recovers_epoll() {
    unix_emfile_on(Backend::Epoll);
}

#[test]
fn at_the_fd_limit_a_unix_listener_sheds_and_recovers_io_uring() {
    if !Backend::IoUring.available() {
        eprintln!("SKIPPED: io_uring is unavailable here");
        return;
    }
    unix_emfile_on(Backend::IoUring);
}

fn sigpipe_on(backend: Backend) {
    let child = spawn_child("sigpipe", backend);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{backend}: child died: {:?}",
        out.status
    );
    assert!(stdout.contains("alive"), "{backend}: {stdout}");
}

#[test]
fn writes_to_a_vanished_peer_never_raise_sigpipe_select() {
    sigpipe_on(Backend::Select);
}

#[test]
fn writes_to_a_vanished_peer_never_raise_sigpipe_poll() {
    sigpipe_on(Backend::Poll);
}

#[test]
fn writes_to_a_vanished_peer_never_raise_sigpipe_epoll() {
    sigpipe_on(Backend::Epoll);
}

#[test]
fn out_of_descriptors_a_connect_says_so() {
    let child = spawn_child("connect-emfile", Backend::Epoll);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("FAILED: ").map(|(_, why)| why))
        .unwrap_or("");
    assert!(line.contains("Too many open files"), "{stdout}");
    assert!(!line.contains("host not found"), "{stdout}");
}

#[test]
fn an_unhandled_deferred_failure_reaches_stderr_without_a_subscriber() {
    let child = spawn_child_with("unhandled", Backend::Epoll, Stdio::piped());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Unhandled error in Deferred"), "{stderr}");
    assert!(stderr.contains("nobody handled this"), "{stderr}");
}
