//! Ctrl-C and SIGTERM stop a running reactor gracefully; a second one ends the process at once.
//! Each test runs this binary again as a child (`TORSION_CHILD` set), on every backend.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use torsion::reactor::{Phase, SystemEvent};
use torsion::{Backend, Context, Factory, Protocol, Reactor, Reason};

fn spawn_child(kind: &str, backend: Backend) -> Child {
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
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

struct Quiet;
impl Protocol for Quiet {
    fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
        println!("connection lost: {reason:?}");
    }
}

#[test]
#[ignore = "entry point of the child processes started by the other tests"]
fn child_entry() {
    let reactor = Reactor::new().unwrap();
    let slow = std::env::var("TORSION_CHILD").as_deref() == Ok("slow");
    let port = reactor
        .listen_tcp("127.0.0.1:0", Factory::for_protocol(|| Quiet))
        .unwrap();
    // One open connection, which the graceful stop must close.
    let client = std::net::TcpStream::connect(port.address()).unwrap();
    reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move |_| {
        println!("shutdown trigger ran");
        if slow {
            std::thread::sleep(Duration::from_secs(30));
        }
    });
    reactor.call_when_running(|_| println!("READY"));
    reactor.run().unwrap();
    println!("run returned");
    drop(client);
}

/// Waits for the child's "READY", sends `signals` (a pause between them), and returns its
/// stdout and exit code.
fn stop_with(kind: &str, backend: Backend, signals: &[i32]) -> (String, Option<i32>, Duration) {
    let mut child = spawn_child(kind, backend);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("READY") {
        line.clear();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "{backend}: the child ended early"
        );
    }
    std::thread::sleep(Duration::from_millis(100)); // the connection gets accepted
    let start = Instant::now();
    for (i, &sig) in signals.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        torsion::testing::signal_process(child.id(), sig).unwrap();
    }
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let code = child.wait().unwrap().code();
    (rest, code, start.elapsed())
}

#[test]
fn sigint_and_sigterm_stop_the_reactor_gracefully() {
    for backend in Backend::ALL {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            let (out, code, _) = stop_with("graceful", backend, &[sig]);
            assert_eq!(code, Some(0), "{backend} {sig}: {out}");
            assert!(
                out.contains("shutdown trigger ran"),
                "{backend} {sig}: {out}"
            );
            assert!(
                out.contains("connection lost: ReactorShutdown"),
                "{backend} {sig}: {out}"
            );
            assert!(out.contains("run returned"), "{backend} {sig}: {out}");
        }
    }
}

#[test]
fn a_second_ctrl_c_during_a_slow_shutdown_exits_at_once() {
    for backend in Backend::ALL {
        let (out, code, took) = stop_with("slow", backend, &[libc::SIGINT, libc::SIGINT]);
        assert_eq!(code, Some(130), "{backend}: {out}");
        assert!(out.contains("shutdown trigger ran"), "{backend}: {out}");
        assert!(!out.contains("run returned"), "{backend}: {out}");
        assert!(
            took < Duration::from_secs(20),
            "{backend}: exited after {took:?}"
        );
    }
}
