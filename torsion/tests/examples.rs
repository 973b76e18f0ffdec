//! Runs the examples as a user would, against servers started here.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use torsion::testing::output_within;

/// How long one run of an example may take: a hang fails the test instead of stalling it.
const LIMIT: Duration = Duration::from_secs(180);

/// The path of an example binary built by `cargo test` next to this test binary.
fn example(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().unwrap();
    p.pop(); // the test binary
    if p.ends_with("deps") {
        p.pop();
    }
    let path = p.join("examples").join(name);
    {
        // `cargo test --test examples` alone does not build the examples, and a stale binary
        // would test old code: build this one (a no-op when it is fresh).
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "torsion", "--example", name]);
        if p.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "building example {name}");
    }
    path
}

/// A slow poetry server on a free port: sends `poem` in `chunk`-byte pieces, then closes.
fn slow_server(
    poem: &'static [u8],
    chunk: usize,
    clients: usize,
) -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for _ in 0..clients {
            let (s, _) = l.accept().unwrap();
            conns.push(std::thread::spawn(move || {
                let mut s = s;
                for piece in poem.chunks(chunk) {
                    s.write_all(piece).unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
            }));
        }
        for c in conns {
            c.join().unwrap();
        }
    });
    (port, t)
}

const ECSTASY: &[u8] = include_bytes!("../../poetry/poems/ecstasy.txt");
const SCIENCE: &[u8] = include_bytes!("../../poetry/poems/science.txt");

#[test]
fn select_client_fetches_poems_on_every_backend() {
    for backend in ["select", "poll", "epoll"] {
        let (p1, t1) = slow_server(ECSTASY, 300, 1);
        let (p2, t2) = slow_server(SCIENCE, 100, 1);
        let out = output_within(
            Command::new(example("select_client"))
                .args([p1.to_string(), format!("127.0.0.1:{p2}")])
                .env("TORSION_REACTOR", backend),
            LIMIT,
        )
        .unwrap();
        t1.join().unwrap();
        t2.join().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(out.status.success(), "{backend}: {stderr}");
        assert!(
            stderr.contains(&format!("Running on the {backend} reactor.")),
            "{stderr}"
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines[0],
            format!("Task 1: {} bytes of poetry", ECSTASY.len())
        );
        assert_eq!(
            lines[1],
            format!("Task 2: {} bytes of poetry", SCIENCE.len())
        );
        let elapsed = lines[2].strip_prefix("Got 2 poems in 0:00:").unwrap();
        assert!(elapsed.parse::<f64>().is_ok(), "{}", lines[2]);
    }
}

#[test]
fn select_client_rejects_bad_ports_and_unknown_backends() {
    let out = output_within(Command::new(example("select_client")).arg("10x1"), LIMIT).unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Ports must be integers."));
    let out = output_within(
        Command::new(example("select_client"))
            .arg("1")
            .env("TORSION_REACTOR", "kqueue"),
        LIMIT,
    )
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("valid backends are select, poll, epoll and io_uring"));
}

/// Runs an example server that prints its address on its first line; returns the child and
/// the port.
fn start_server(name: &str, args: &[&str]) -> (KillOnDrop, u16) {
    use std::io::BufRead;
    let mut child = Command::new(example(name))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap();
    let port = addr
        .trim_end_matches(['.', ','])
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (KillOnDrop(child), port)
}

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn echo_example_echoes_on_each_backend() {
    use std::io::Read;
    let mut backends = vec!["select", "poll", "epoll"];
    if torsion::Backend::IoUring.available() {
        backends.push("io_uring");
    }
    for backend in backends {
        let (_server, port) = start_server("echo", &["--port", "0", "--backend", backend]);
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"hello, echo").unwrap();
        let mut got = [0u8; 11];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello, echo", "{backend}");
    }
}

#[test]
fn chat_example_broadcasts_lines_to_the_others() {
    use std::io::{BufRead, BufReader};
    let (_server, port) = start_server("chat", &["--port", "0"]);
    let connect = || {
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        let mut welcome = String::new();
        r.read_line(&mut welcome).unwrap();
        assert!(welcome.starts_with("Welcome"), "{welcome}");
        (c, r)
    };
    let (mut a, _ra) = connect();
    let (_b, mut rb) = connect();
    let (_c, mut rc) = connect();
    a.write_all(b"hello, ").unwrap();
    a.write_all(b"room\n").unwrap();
    for r in [&mut rb, &mut rc] {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(
            line.starts_with("<127.0.0.1:") && line.ends_with("> hello, room\n"),
            "{line:?}"
        );
    }
}

#[test]
fn tcp_client_example_talks_and_reports_failures() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::Read;
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });
    let out = output_within(
        Command::new(example("tcp_client")).args(["localhost", &port.to_string(), "howdy"]),
        LIMIT,
    )
    .unwrap();
    server.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("Reply: howdy"), "{stdout}");
    assert!(
        stdout.contains("Connection closed: connection was closed cleanly."),
        "{stdout}"
    );
    // Nothing listens on a just-freed port: refused.
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = output_within(
        Command::new(example("tcp_client")).args(["127.0.0.1", &free.to_string()]),
        LIMIT,
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Connection failed: connection was refused")
    );
}

/// Resident memory of a process, in KiB (`VmRSS` of /proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn echo_example_stays_small_under_clients_that_never_read() {
    // 20 clients each send up to 16 MiB and read nothing. Without flow control the server
    // keeps every echoed byte it cannot send (hundreds of MiB); with it, each connection holds
    // at most its high-water mark plus one read before reading stops.
    const CLIENTS: usize = 20;
    const BOUND_KIB: u64 = 48 * 1024;
    for backend in ["poll", "epoll"] {
        let (server, port) = start_server("echo", &["--port", "0", "--backend", backend]);
        let pid = server.0.id();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                    c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut sent = 0usize;
                    while sent < 16 << 20 {
                        match c.write(&chunk) {
                            Ok(n) => sent += n,
                            Err(_) => break, // both sides' buffers are full: the server stopped reading
                        }
                    }
                    (c, sent)
                })
            })
            .collect();
        let conns: Vec<_> = clients.into_iter().map(|h| h.join().unwrap()).collect();
        let rss = rss_kib(pid);
        let sent: usize = conns.iter().map(|(_, n)| n).sum();
        assert!(
            rss < BOUND_KIB,
            "{backend}: the echo server's RSS is {rss} KiB after {CLIENTS} clients sent {sent} bytes without reading"
        );
        drop(conns);
    }
}

/// Runs an example that must fail at once: its exit status and its stderr.
fn run_failing(name: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = output_within(Command::new(example(name)).args(args), LIMIT).unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn examples_reject_bad_arguments_with_one_line() {
    for (name, args, needle) in [
        ("chat", &["--port", "abc"][..], "not a port"),
        ("chat", &["--port", "99999"], "not a port"),
        ("chat", &["--bogus"], "unexpected argument"),
        ("echo", &["--port", "-1"], "not a port"),
        ("echo", &["--backend", "kqueue"], "unknown reactor backend"),
        ("tcp_client", &["localhost", "abc"], "not a port"),
    ] {
        let (code, stderr) = run_failing(name, args);
        assert_eq!(code, Some(2), "{name} {args:?}: {stderr}");
        assert!(
            stderr.lines().next().unwrap_or("").contains(needle),
            "{name} {args:?}: {stderr}"
        );
    }
}

#[test]
fn examples_print_run_time_errors_with_display() {
    // A port in use: a one-line error, exit status 1, no Rust Debug output, no usage line.
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    for name in ["echo", "chat"] {
        let (code, stderr) = run_failing(name, &["--port", &port]);
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{name}: error: ")),
            "{name}: {stderr}"
        );
        assert!(
            !stderr.contains("Os {") && !stderr.contains("usage:"),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn chat_example_stays_small_under_silent_members() {
    // Two members talk as fast as they can; ten others never read. Without a limit the server
    // keeps every line for the silent ones; with it, each silent member is reset once 1 MiB
    // waits for it.
    const BOUND_KIB: u64 = 48 * 1024;
    let (server, port) = start_server("chat", &["--port", "0"]);
    let pid = server.0.id();
    let silent: Vec<_> = (0..10)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let talkers: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                let mut r = c.try_clone().unwrap();
                // Read (and drop) what the others say, so that the talkers are not the slow ones.
                std::thread::spawn(move || std::io::copy(&mut r, &mut std::io::sink()));
                c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
                let line = [b"x".repeat(1000), b"\n".to_vec()].concat();
                for _ in 0..20_000 {
                    if c.write_all(&line).is_err() {
                        break;
                    }
                }
                c
            })
        })
        .collect();
    let talkers: Vec<_> = talkers.into_iter().map(|h| h.join().unwrap()).collect();
    let rss = rss_kib(pid);
    assert!(rss < BOUND_KIB, "the chat server's RSS is {rss} KiB");
    drop((silent, talkers));
}

#[test]
fn the_library_warnings_reach_the_examples_stderr() {
    // A silent member of the chat falls 1 MiB behind: the library resets it and logs a
    // warning, which the user of the example must see on stderr.
    use std::io::{BufRead, Read};
    let mut child = Command::new(example("chat"))
        .args(["--port", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim_end()
        .trim_end_matches('.')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let child = KillOnDrop(child);
    let silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut talker = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    talker
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let line = [b"y".repeat(1000), b"\n".to_vec()].concat();
    for _ in 0..30_000 {
        if talker.write_all(&line).is_err() {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    drop(child); // killed: its stderr ends
    let mut log = String::new();
    stderr.read_to_string(&mut log).unwrap();
    assert!(
        log.contains("a write buffer passed its limit"),
        "chat's stderr: {log}"
    );
    drop((silent, talker));
}
