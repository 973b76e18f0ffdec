//! Standard I/O as a transport: the `stdio_lines` example run as a child with stdin from a
//! pipe, a file and /dev/null, stdout to a pipe and a file, on every backend; and the transport
//! in-process over socket pairs (`start_on`), ending with the leak check.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::rc::Rc;
use std::time::Duration;

use torsion::testing::run_until;
use torsion::{reactor_test, Context, HalfClose, Producer, Protocol, Reason};

const LIMIT: Duration = Duration::from_secs(60);

/// The example binary, built on demand (as tests/examples.rs does).
fn example(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "torsion", "--example", name]);
    if p.ends_with("release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().unwrap().success(), "building example {name}");
    p.join("examples").join(name)
}

/// Runs `cmd` to completion, killed after 120 s so a hang fails instead of stalling.
fn run(cmd: &mut Command, input: Option<Vec<u8>>) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let writer = input.map(|data| {
        let mut stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        })
    });
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || {
        for _ in 0..1200 {
            std::thread::sleep(Duration::from_millis(100));
            if d.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
        }
        let _ = torsion::testing::signal_process(pid, libc::SIGKILL);
    });
    let out = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(w) = writer {
        w.join().unwrap();
    }
    out
}

fn expected(lines: &[&str]) -> String {
    let mut s = String::new();
    let mut bytes = 0;
    for (i, l) in lines.iter().enumerate() {
        s += &format!("{}: {}\n", i + 1, l.to_ascii_uppercase());
        bytes += l.len();
    }
    s + &format!("{} lines, {bytes} bytes\n", lines.len())
}

#[test]
fn stdin_from_a_pipe_on_every_backend() {
    // Serialised with the leak-checked tests: the children's pipes are descriptors too.
    let _serial = torsion::testing::serial();
    let bin = example("stdio_lines");
    for backend in ["select", "poll", "epoll"] {
        let out = run(
            Command::new(&bin)
                .env("TORSION_REACTOR", backend)
                .stdin(Stdio::piped()),
            Some(b"hello\nworld\r\nlast".to_vec()),
        );
        assert!(
            out.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            expected(&["hello", "world", "last"]),
            "{backend}"
        );
    }
}

#[test]
fn a_megabyte_through_pipes_both_ways() {
    // Serialised with the leak-checked tests: the children's pipes are descriptors too.
    let _serial = torsion::testing::serial();
    let bin = example("stdio_lines");
    let line = "x".repeat(99);
    let input: Vec<u8> = format!("{line}\n").repeat(10_000).into_bytes();
    for backend in ["poll", "epoll"] {
        let out = run(
            Command::new(&bin)
                .env("TORSION_REACTOR", backend)
                .stdin(Stdio::piped()),
            Some(input.clone()),
        );
        assert!(out.status.success(), "{backend}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.lines().count(), 10_001, "{backend}");
        assert!(text.ends_with("10000 lines, 990000 bytes\n"), "{backend}");
    }
}

#[test]
fn stdin_from_a_regular_file_and_dev_null_and_stdout_to_a_file() {
    // Serialised with the leak-checked tests: the children's pipes are descriptors too.
    let _serial = torsion::testing::serial();
    let bin = example("stdio_lines");
    let dir = std::env::temp_dir().join(format!("torsion-stdio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.txt");
    // Larger than one 64 KiB chunk, so the file is read over several iterations.
    let lines: Vec<String> = (0..5000).map(|i| format!("line {i}")).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    for backend in ["select", "poll", "epoll"] {
        let file = std::fs::File::open(&input).unwrap();
        let out = run(
            Command::new(&bin)
                .env("TORSION_REACTOR", backend)
                .stdin(file),
            None,
        );
        assert!(
            out.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            expected(&refs),
            "{backend}"
        );

        let out = run(
            Command::new(&bin)
                .env("TORSION_REACTOR", backend)
                .stdin(Stdio::null()),
            None,
        );
        assert!(out.status.success(), "{backend}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "0 lines, 0 bytes\n",
            "{backend}"
        );

        let target = dir.join(format!("out-{backend}.txt"));
        let status = Command::new(&bin)
            .env("TORSION_REACTOR", backend)
            .stdin(std::fs::File::open(&input).unwrap())
            .stdout(std::fs::File::create(&target).unwrap())
            .status()
            .unwrap();
        assert!(status.success(), "{backend}");
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            expected(&refs),
            "{backend}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The flags of one of this process's descriptors, from /proc/self/fdinfo.
fn nonblocking(fd: i32) -> bool {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap()
        .trim();
    u32::from_str_radix(flags, 8).unwrap() & libc::O_NONBLOCK as u32 != 0
}

#[derive(Default)]
struct Log {
    data: RefCell<Vec<u8>>,
    eof: Cell<bool>,
    lost: RefCell<Option<Reason>>,
}

struct Rec(Rc<Log>, HalfClose);
impl Protocol for Rec {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        cx.transport().write(b"ready\n");
    }
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        self.0.data.borrow_mut().extend_from_slice(data);
        cx.transport().write(data);
    }
    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        self.0.eof.set(true);
        cx.transport().write(b"bye\n");
        if self.1 == HalfClose::KeepWriting {
            cx.transport().lose_connection();
        }
        self.1
    }
    fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
        *self.0.lost.borrow_mut() = Some(reason);
    }
}

reactor_test! {
    fn echo_over_socket_pairs_then_eof_restores_the_flags(reactor) {
        for choice in [HalfClose::Close, HalfClose::KeepWriting] {
            let (mut feed, stdin) = UnixStream::pair().unwrap();
            let (stdout, mut drain) = UnixStream::pair().unwrap();
            assert!(!nonblocking(stdin.as_raw_fd()));
            let log = Rc::new(Log::default());
            let t = torsion::stdio::start_on(reactor, Rec(log.clone(), choice), stdin.as_raw_fd(), stdout.as_raw_fd()).unwrap();
            assert!(nonblocking(stdin.as_raw_fd()) && nonblocking(stdout.as_raw_fd()));
            assert!(t.connected());
            feed.write_all(b"abc").unwrap();
            run_until(reactor, LIMIT, || log.data.borrow().len() == 3);
            drop(feed);
            run_until(reactor, LIMIT, || log.lost.borrow().is_some());
            assert!(log.eof.get());
            assert!(log.lost.borrow().as_ref().unwrap().is_clean(), "{:?}", log.lost.borrow());
            assert!(!nonblocking(stdin.as_raw_fd()) && !nonblocking(stdout.as_raw_fd()), "flags restored");
            assert!(!t.connected());
            let mut got = Vec::new();
            drain.set_read_timeout(Some(LIMIT)).unwrap();
            let mut buf = [0u8; 64];
            while !got.ends_with(b"bye\n") {
                let n = drain.read(&mut buf).unwrap();
                assert_ne!(n, 0);
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, b"ready\nabcbye\n");
        }
    }

    fn stdout_backpressure_pauses_a_producer_and_a_gone_reader_ends_it(reactor) {
        struct P(Cell<bool>);
        impl Producer for P {
            fn pause_producing(&self) { self.0.set(true) }
            fn resume_producing(&self) { self.0.set(false) }
        }
        let (_feed, stdin) = UnixStream::pair().unwrap();
        let (stdout, drain) = UnixStream::pair().unwrap();
        let log = Rc::new(Log::default());
        let t = torsion::stdio::start_on(reactor, Rec(log.clone(), HalfClose::Close), stdin.as_raw_fd(), stdout.as_raw_fd()).unwrap();
        let p = Rc::new(P(Cell::new(false)));
        t.register_producer(p.clone(), true).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        let mut written = 0;
        while !p.0.get() {
            t.write(&chunk);
            written += chunk.len();
            reactor.iterate(Some(Duration::ZERO)).unwrap();
            assert!(written < 64 << 20, "never paused");
        }
        assert!(t.buffered() <= 64 * 1024 + chunk.len());
        drop(drain);
        t.unregister_producer();
        t.write(b"more");
        run_until(reactor, LIMIT, || log.lost.borrow().is_some());
        assert!(!log.lost.borrow().as_ref().unwrap().is_clean());
    }

    fn bad_descriptors_are_refused(reactor) {
        let log = Rc::new(Log::default());
        assert!(torsion::stdio::start_on(reactor, Rec(log.clone(), HalfClose::Close), 900, 901).is_err());
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(torsion::stdio::start_on(reactor, Rec(log, HalfClose::Close), a.as_raw_fd(), a.as_raw_fd()).is_err());
    }

    fn the_reactor_shutdown_ends_it(reactor) {
        let (_feed, stdin) = UnixStream::pair().unwrap();
        let (stdout, _drain) = UnixStream::pair().unwrap();
        let log = Rc::new(Log::default());
        torsion::stdio::start_on(reactor, Rec(log.clone(), HalfClose::Close), stdin.as_raw_fd(), stdout.as_raw_fd()).unwrap();
        reactor.call_later(Duration::from_millis(10), |r| r.stop().unwrap());
        reactor.run().unwrap();
        assert!(matches!(*log.lost.borrow(), Some(Reason::ReactorShutdown)));
        assert!(!nonblocking(stdin.as_raw_fd()));
    }
}

#[test]
fn stdin_and_stdout_on_a_terminal() {
    // util-linux's `script` runs the example on a pseudo-terminal, feeds it our input and
    // sends the terminal's end-of-file (Ctrl-D) when the input ends.
    let Ok(script) = which("script") else {
        eprintln!("`script` (util-linux) is not installed: the terminal case is not run");
        return;
    };
    let _serial = torsion::testing::serial();
    let bin = example("stdio_lines");
    for backend in ["select", "poll", "epoll"] {
        let out = run(
            Command::new(&script)
                .args(["-qec", &bin.display().to_string(), "/dev/null"])
                .env("TORSION_REACTOR", backend)
                .stdin(Stdio::piped()),
            Some(b"abc\ndef\n".to_vec()),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{backend}: {text}");
        // The terminal echoes the input and turns "\n" into "\r\n": proof it was one.
        assert!(text.contains("abc\r\n"), "{backend}: {text:?}");
        assert!(text.contains("1: ABC\r\n2: DEF\r\n"), "{backend}: {text:?}");
        assert!(text.contains("2 lines, 6 bytes\r\n"), "{backend}: {text:?}");
    }
}

fn which(name: &str) -> Result<PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}
