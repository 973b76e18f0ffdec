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
    // Serialised with the leak-checked tests: the child's pipe is a descriptor too.
    let _serial = torsion::testing::serial();
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
    // Serialised with the leak-checked tests: the child's pipe is a descriptor too.
    let _serial = torsion::testing::serial();
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

// ------------------------------------------------------------ signals as reactor events

mod handlers {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use std::time::Duration;

    use torsion::reactor::{raise, Signal};
    use torsion::testing::run_until;
    use torsion::{reactor_test, Reactor};

    const LIMIT: Duration = Duration::from_secs(60);

    reactor_test! {
        fn a_handler_runs_on_the_loop_and_is_removed(reactor) {
            let got = Rc::new(RefCell::new(Vec::new()));
            let g = got.clone();
            let id = reactor
                .add_signal_handler(Signal::USR1, move |r: &Reactor, sig| {
                    // On the loop: the reactor may be used freely.
                    r.call_soon(|_| {});
                    g.borrow_mut().push(sig);
                })
                .unwrap();
            let g2 = got.clone();
            let id2 = reactor
                .add_signal_handler(Signal::USR1, move |_: &Reactor, _| g2.borrow_mut().push(Signal::HUP))
                .unwrap();
            assert_eq!(reactor.signal_handler_count(), 2);
            raise(Signal::USR1).unwrap();
            run_until(reactor, LIMIT, || got.borrow().len() == 2);
            assert_eq!(*got.borrow(), [Signal::USR1, Signal::HUP], "in the order added");
            raise(Signal::USR1).unwrap();
            run_until(reactor, LIMIT, || got.borrow().len() == 4);
            assert!(reactor.remove_signal_handler(id));
            assert!(reactor.remove_signal_handler(id2));
            assert!(!reactor.remove_signal_handler(id2));
            reactor.iterate(Some(Duration::ZERO)).unwrap();
        }

        fn removing_the_last_handler_puts_the_old_action_back(reactor) {
            // A handler of the program's own (a no-op) was in place before.
            torsion::testing::install_noop_signal_handler(libc::SIGUSR2).unwrap();
            let hits = Rc::new(Cell::new(0));
            let h = hits.clone();
            let id = reactor
                .add_signal_handler(Signal::USR2, move |_: &Reactor, _| h.set(h.get() + 1))
                .unwrap();
            raise(Signal::USR2).unwrap();
            run_until(reactor, LIMIT, || hits.get() == 1);
            assert!(reactor.remove_signal_handler(id));
            // Back to the no-op: the process survives it and the torsion handler is not run.
            raise(Signal::USR2).unwrap();
            for _ in 0..5 {
                reactor.iterate(Some(Duration::from_millis(20))).unwrap();
            }
            assert_eq!(hits.get(), 1);
        }

        fn uncatchable_signals_and_a_second_reactor_are_refused(reactor) {
            assert!(reactor.add_signal_handler(Signal::KILL, |_: &Reactor, _| {}).is_err());
            assert!(reactor.add_signal_handler(Signal::STOP, |_: &Reactor, _| {}).is_err());
            let id = reactor.add_signal_handler(Signal::WINCH, |_: &Reactor, _| {}).unwrap();
            let other = Reactor::new().unwrap();
            let err = other.add_signal_handler(Signal::WINCH, |_: &Reactor, _| {}).unwrap_err();
            assert!(err.to_string().contains("busy"), "{err}");
            assert!(reactor.remove_signal_handler(id));
            // Free again once the owner has none.
            let id = other.add_signal_handler(Signal::WINCH, |_: &Reactor, _| {}).unwrap();
            assert!(other.remove_signal_handler(id));
        }

        fn a_sigint_handler_replaces_the_graceful_stop_while_running(reactor) {
            let hits = Rc::new(Cell::new(0));
            let h = hits.clone();
            let id = reactor
                .add_signal_handler(Signal::INT, move |r: &Reactor, _| {
                    h.set(h.get() + 1);
                    if h.get() == 2 {
                        r.stop().unwrap();
                    }
                })
                .unwrap();
            // Two SIGINTs: with the stop handling they would stop, then exit the process; with
            // a handler each one reaches it.
            reactor.call_when_running(|_| raise(Signal::INT).unwrap());
            reactor.call_later(Duration::from_millis(50), |_| raise(Signal::INT).unwrap());
            reactor.run().unwrap();
            assert_eq!(hits.get(), 2);
            assert!(reactor.remove_signal_handler(id));
        }
    }
}
