//! Child processes: spawning, pipes, exit statuses, signals, flow control, spawn errors, the
//! shutdown policy and the Protocol adapter. Every test runs on select, poll and epoll and ends
//! with the leak check, which also fails on a child left unreaped (running or zombie).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use torsion::process::{
    ChildFd, ExitStatus, OnShutdown, ProcessContext, ProcessProtocol, ProcessTransport,
    ProtocolProcess, Signal, SignalError, Spawn, SpawnError,
};
use torsion::testing::run_until;
use torsion::{reactor_test, Context, Producer, Protocol, Reason};

const LIMIT: Duration = Duration::from_secs(60);

/// Everything that happened to one child, in order.
#[derive(Default)]
struct Log {
    events: RefCell<Vec<String>>,
    data: RefCell<BTreeMap<i32, Vec<u8>>>,
    exited: Cell<Option<ExitStatus>>,
    ended: Cell<Option<ExitStatus>>,
    process: RefCell<Option<ProcessTransport>>,
}

impl Log {
    fn out(&self, fd: i32) -> String {
        String::from_utf8_lossy(self.data.borrow().get(&fd).map_or(&[][..], |v| v)).into_owned()
    }
}

type Made = Box<dyn FnMut(&ProcessTransport)>;

struct Rec {
    log: Rc<Log>,
    on_made: Option<Made>,
    stop_at_end: bool,
}

fn rec(log: &Rc<Log>) -> Rec {
    Rec {
        log: log.clone(),
        on_made: None,
        stop_at_end: false,
    }
}

impl ProcessProtocol for Rec {
    fn connection_made(&mut self, cx: &mut ProcessContext<'_>) {
        self.log.events.borrow_mut().push("made".into());
        *self.log.process.borrow_mut() = Some(cx.process().clone());
        if let Some(f) = &mut self.on_made {
            f(cx.process());
        }
    }
    fn child_data_received(&mut self, _: &mut ProcessContext<'_>, fd: i32, data: &[u8]) {
        self.log
            .data
            .borrow_mut()
            .entry(fd)
            .or_default()
            .extend_from_slice(data);
    }
    fn child_connection_lost(&mut self, _: &mut ProcessContext<'_>, fd: i32) {
        self.log.events.borrow_mut().push(format!("lost {fd}"));
    }
    fn process_exited(&mut self, _: &mut ProcessContext<'_>, status: ExitStatus) {
        self.log.events.borrow_mut().push("exited".into());
        self.log.exited.set(Some(status));
    }
    fn process_ended(&mut self, cx: &mut ProcessContext<'_>, status: ExitStatus) {
        self.log.events.borrow_mut().push("ended".into());
        self.log.ended.set(Some(status));
        // The transport is dropped with the protocol: no cycle left.
        self.log.process.borrow_mut().take();
        if self.stop_at_end {
            cx.reactor().stop().unwrap();
        }
    }
}

fn sh(script: &str) -> Spawn {
    Spawn::new("sh").args(["-c", script])
}

fn wait_ended(reactor: &torsion::Reactor, log: &Rc<Log>) -> ExitStatus {
    run_until(reactor, LIMIT, || log.ended.get().is_some());
    log.ended.get().unwrap()
}

reactor_test! {
    fn echo_through_cat(reactor) {
        let log = Rc::new(Log::default());
        let mut r = rec(&log);
        r.on_made = Some(Box::new(|p| {
            p.write(b"hello, ");
            p.write_sequence(&[b"cat", b"\n"]);
            p.close_stdin();
        }));
        let p = reactor.spawn_process(r, &Spawn::new("cat")).unwrap();
        assert!(p.pid().is_some());
        let status = wait_ended(reactor, &log);
        assert_eq!(status, ExitStatus::Exited(0));
        assert!(status.success());
        assert_eq!(log.out(1), "hello, cat\n");
        assert_eq!(log.out(2), "");
        let events = log.events.borrow().clone();
        assert_eq!(events[0], "made");
        assert_eq!(events.last().unwrap(), "ended");
        for fd in ["lost 0", "lost 1", "lost 2", "exited"] {
            assert_eq!(events.iter().filter(|e| *e == fd).count(), 1, "{events:?}");
        }
        assert_eq!(p.pid(), None, "no pid once reaped");
        assert_eq!(p.status(), Some(ExitStatus::Exited(0)));
        assert!(p.open_child_fds().is_empty());
    }

    fn stderr_is_separate_and_exit_codes_are_typed(reactor) {
        let log = Rc::new(Log::default());
        reactor
            .spawn_process(rec(&log), &sh("echo out; echo err >&2; exit 7"))
            .unwrap();
        let status = wait_ended(reactor, &log);
        assert_eq!(status, ExitStatus::Exited(7));
        assert_eq!(status.code(), Some(7));
        assert!(!status.success());
        assert_eq!(log.out(1), "out\n");
        assert_eq!(log.out(2), "err\n");
        assert_eq!(log.exited.get(), Some(status));
    }

    fn killed_by_a_signal(reactor) {
        let log = Rc::new(Log::default());
        reactor.spawn_process(rec(&log), &sh("kill -TERM $$; sleep 30")).unwrap();
        let status = wait_ended(reactor, &log);
        assert_eq!(status.signal(), Some(Signal::TERM));
        assert_eq!(status.code(), None);
        assert_eq!(status.to_string(), "killed by SIGTERM");
    }

    fn extra_descriptors_read_written_and_inherited(reactor) {
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let log = Rc::new(Log::default());
        let mut r = rec(&log);
        r.on_made = Some(Box::new(|p| {
            p.write_to_child(4, b"ping\n");
            p.close_child_fd(4);
        }));
        let spec = sh("echo three >&3; read x <&4; echo \"got $x\" >&3; echo inherited >&5; \
                       [ -e /dev/fd/6 ] && echo six-open >&3; exit 0")
            .child_fd(3, ChildFd::Read)
            .child_fd(4, ChildFd::Write)
            .child_fd(5, ChildFd::Inherit(theirs.as_raw_fd()))
            .no_child_fd(0);
        reactor.spawn_process(r, &spec).unwrap();
        drop(theirs);
        let status = wait_ended(reactor, &log);
        assert!(status.success(), "{status}: {}", log.out(2));
        assert_eq!(log.out(3), "three\ngot ping\n");
        let mut got = String::new();
        ours.read_to_string(&mut got).unwrap();
        assert_eq!(got, "inherited\n");
        let events = log.events.borrow().clone();
        assert!(events.contains(&"lost 3".to_string()) && events.contains(&"lost 4".to_string()));
        assert!(!events.contains(&"lost 0".to_string()), "no stdin in this map: {events:?}");
    }

    fn environment_and_working_directory(reactor) {
        let log = Rc::new(Log::default());
        let spec = Spawn::new("/bin/sh")
            .args(["-c", "echo \"$GREETING $(pwd)\"; echo \"[$HOME_UNSET]\""])
            .env_clear()
            .env("GREETING", "hi")
            .env("HOME_UNSET", "x")
            .env_remove("HOME_UNSET")
            .cwd("/tmp");
        reactor.spawn_process(rec(&log), &spec).unwrap();
        assert!(wait_ended(reactor, &log).success());
        assert_eq!(log.out(1), "hi /tmp\n[]\n");
    }

    fn spawn_errors_are_typed_and_leave_nothing(reactor) {
        let err = |spec: &Spawn| reactor.spawn_process(rec(&Rc::default()), spec).unwrap_err();
        assert!(matches!(err(&Spawn::new("torsion-no-such-program")), SpawnError::NotFound(_)));
        assert!(matches!(err(&Spawn::new("/nonexistent/prog")), SpawnError::NotFound(_)));
        let dir = std::env::temp_dir().join(format!("torsion-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("not-executable");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        assert!(matches!(err(&Spawn::new(&script)), SpawnError::PermissionDenied(_)));
        std::fs::remove_dir_all(&dir).unwrap();
        match err(&Spawn::new("true").cwd("/nonexistent-dir")) {
            SpawnError::BadDirectory { dir, error } => {
                assert_eq!(dir, std::path::Path::new("/nonexistent-dir"));
                assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(err(&Spawn::new("true").child_fd(5000, ChildFd::Read)), SpawnError::BadChildFd(5000)));
        assert!(matches!(err(&Spawn::new("true").child_fd(-1, ChildFd::Read)), SpawnError::BadChildFd(-1)));
        assert!(matches!(err(&Spawn::new("true").child_fd(3, ChildFd::Inherit(999))), SpawnError::BadChildFd(999)));
        assert!(matches!(err(&Spawn::new("true").arg("a\0b")), SpawnError::Nul));
        assert!(err(&Spawn::new("torsion-no-such-program")).to_string().contains("no such program"));
    }

    fn signal_process_then_already_exited(reactor) {
        let log = Rc::new(Log::default());
        let p = reactor.spawn_process(rec(&log), &Spawn::new("sleep").arg("30")).unwrap();
        p.signal_process(Signal::USR1).unwrap(); // sleep's default action for USR1: die
        let status = wait_ended(reactor, &log);
        assert_eq!(status.signal(), Some(Signal::USR1));
        assert!(matches!(p.signal_process(Signal::TERM), Err(SignalError::ProcessExitedAlready)));
    }

    fn stdin_backpressure_to_a_child_that_does_not_read(reactor) {
        struct Flood {
            p: ProcessTransport,
            paused: Cell<bool>,
            written: Cell<usize>,
            pauses: Cell<u32>,
        }
        impl Producer for Flood {
            fn pause_producing(&self) {
                self.paused.set(true);
                self.pauses.set(self.pauses.get() + 1);
            }
            fn resume_producing(&self) {
                self.paused.set(false);
            }
        }
        let log = Rc::new(Log::default());
        let p = reactor.spawn_process(rec(&log), &Spawn::new("sleep").arg("30")).unwrap();
        let flood = Rc::new(Flood {
            p: p.clone(),
            paused: Cell::new(false),
            written: Cell::new(0),
            pauses: Cell::new(0),
        });
        p.register_producer(flood.clone(), true).unwrap();
        assert!(p.register_producer(flood.clone(), true).is_err());
        let chunk = vec![b'x'; 16 * 1024];
        // Write while not paused: the pipe fills (64 KiB in the kernel), then the buffer passes
        // the high-water mark and the producer is paused; memory stays bounded.
        for _ in 0..10_000 {
            if flood.paused.get() {
                break;
            }
            flood.p.write(&chunk);
            flood.written.set(flood.written.get() + chunk.len());
            reactor.iterate(Some(Duration::ZERO)).unwrap();
        }
        assert!(flood.paused.get(), "never paused after {} bytes", flood.written.get());
        assert!(p.buffered() <= 64 * 1024 + chunk.len(), "buffered {}", p.buffered());
        assert!(flood.written.get() < 1024 * 1024);
        p.signal_process(Signal::KILL).unwrap();
        let status = wait_ended(reactor, &log);
        assert_eq!(status.signal(), Some(Signal::KILL));
        assert_eq!(p.buffered(), 0, "the buffer went with the pipe");
        p.write(b"dropped"); // after the close: dropped, no panic
        drop(flood);
    }

    fn a_pull_producer_feeds_stdin_until_done(reactor) {
        struct Pull {
            p: RefCell<Option<ProcessTransport>>,
            left: Cell<u32>,
        }
        impl Producer for Pull {
            fn resume_producing(&self) {
                let Some(p) = self.p.borrow().clone() else { return };
                if self.left.get() == 0 {
                    p.unregister_producer();
                    p.close_stdin();
                    self.p.borrow_mut().take();
                    return;
                }
                self.left.set(self.left.get() - 1);
                p.write(&[b'y'; 1000]);
            }
        }
        let log = Rc::new(Log::default());
        let p = reactor.spawn_process(rec(&log), &Spawn::new("wc").arg("-c")).unwrap();
        p.close_child_fd(2);
        let pull = Rc::new(Pull { p: RefCell::new(Some(p.clone())), left: Cell::new(300) });
        p.register_producer(pull, false).unwrap();
        assert!(wait_ended(reactor, &log).success());
        assert_eq!(log.out(1).trim(), "300000");
    }

    fn children_left_running_at_shutdown_are_terminated_and_reaped(reactor) {
        let log = Rc::new(Log::default());
        let mut r = rec(&log);
        r.stop_at_end = false;
        let p = reactor.spawn_process(r, &Spawn::new("sleep").arg("30")).unwrap();
        let stubborn_log = Rc::new(Log::default());
        reactor
            .spawn_process(
                rec(&stubborn_log),
                &sh("trap '' TERM; exec sleep 30")
                    .on_shutdown(OnShutdown::Terminate { grace: Duration::from_millis(200) }),
            )
            .unwrap();
        reactor.call_later(Duration::from_millis(50), |r| r.stop().unwrap());
        reactor.run().unwrap();
        assert_eq!(log.exited.get().and_then(|s| s.signal()), Some(Signal::TERM));
        assert_eq!(log.ended.get().and_then(|s| s.signal()), Some(Signal::TERM));
        assert_eq!(stubborn_log.ended.get().and_then(|s| s.signal()), Some(Signal::KILL));
        assert_eq!(p.pid(), None);
    }

    fn children_can_be_left_running_at_shutdown(reactor) {
        let log = Rc::new(Log::default());
        let p = reactor
            .spawn_process(rec(&log), &Spawn::new("sleep").arg("30").on_shutdown(OnShutdown::Leave))
            .unwrap();
        let pid = p.pid().unwrap();
        reactor.call_later(Duration::from_millis(50), |r| r.stop().unwrap());
        reactor.run().unwrap();
        assert_eq!(log.exited.get(), None, "left running");
        assert!(log.events.borrow().contains(&"lost 0".to_string()), "its pipes were closed");
        torsion::testing::signal_process(pid, 0).expect("still running");
        torsion::testing::signal_process(pid, libc::SIGKILL).unwrap();
        let status = torsion::testing::reap_left_child(pid).unwrap();
        assert_eq!(status.signal(), Some(Signal::KILL));
    }

    fn many_children_are_all_reaped(reactor) {
        let logs: Vec<Rc<Log>> = (0..20).map(|_| Rc::new(Log::default())).collect();
        for (i, log) in logs.iter().enumerate() {
            reactor.spawn_process(rec(log), &sh(&format!("exit {i}"))).unwrap();
        }
        run_until(reactor, LIMIT, || logs.iter().all(|l| l.ended.get().is_some()));
        for (i, log) in logs.iter().enumerate() {
            assert_eq!(log.ended.get(), Some(ExitStatus::Exited(i as i32)));
        }
        assert!(torsion::process::unreaped_children().is_empty());
    }

    fn a_line_protocol_talks_to_a_child_unchanged(reactor) {
        /// A line protocol as it would be written for TCP.
        struct Lines {
            buf: Vec<u8>,
            got: Rc<RefCell<Vec<String>>>,
            lost: Rc<RefCell<Option<Reason>>>,
        }
        impl Protocol for Lines {
            fn connection_made(&mut self, cx: &mut Context<'_>) {
                assert!(matches!(cx.transport().peer(), torsion::Address::Process { pid: Some(_) }));
                cx.transport().write(b"one\ntwo\n");
                cx.transport().write(b"three\n");
            }
            fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
                self.buf.extend_from_slice(data);
                while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.buf.drain(..=i).collect();
                    self.got.borrow_mut().push(String::from_utf8_lossy(&line[..i]).into_owned());
                }
                if self.got.borrow().len() == 3 {
                    cx.transport().lose_connection();
                }
            }
            fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
                *self.lost.borrow_mut() = Some(reason);
            }
        }
        let got = Rc::new(RefCell::new(Vec::new()));
        let lost = Rc::new(RefCell::new(None));
        let lines = Lines { buf: Vec::new(), got: got.clone(), lost: lost.clone() };
        reactor
            .spawn_process(
                ProtocolProcess::new(lines),
                &sh("while read l; do echo \"<$l>\"; done"),
            )
            .unwrap();
        run_until(reactor, LIMIT, || lost.borrow().is_some());
        assert_eq!(*got.borrow(), ["<one>", "<two>", "<three>"]);
        assert!(lost.borrow().as_ref().unwrap().is_clean());
    }

    fn the_adapter_reports_a_failing_child(reactor) {
        struct Quiet(Rc<RefCell<Option<Reason>>>);
        impl Protocol for Quiet {
            fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}
            fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
                *self.0.borrow_mut() = Some(reason);
            }
        }
        let lost = Rc::new(RefCell::new(None));
        reactor
            .spawn_process(ProtocolProcess::new(Quiet(lost.clone())), &sh("exit 3"))
            .unwrap();
        run_until(reactor, LIMIT, || lost.borrow().is_some());
        // The closes made inside the callbacks queued a (now empty) delivery: let it run.
        reactor.iterate(Some(Duration::ZERO)).unwrap();
        let reason = lost.borrow().clone().unwrap();
        assert!(!reason.is_clean());
        assert!(format!("{reason:?}").contains("exit code 3"), "{reason:?}");
    }

    fn zombies_are_seen_until_reaped(reactor) {
        let log = Rc::new(Log::default());
        let p = reactor.spawn_process(rec(&log), &Spawn::new("true")).unwrap();
        let pid = p.pid().unwrap();
        // Not iterating: the child exits and stays a zombie until the loop reaps it.
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            if stat.rsplit_once(')').unwrap().1.trim_start().starts_with('Z') {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never became a zombie");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(torsion::process::unreaped_children(), [pid], "a zombie counts");
        assert!(wait_ended(reactor, &log).success());
        assert!(torsion::process::unreaped_children().is_empty());
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || {
            // The pid may have been reused by now, but not as our child.
            !torsion::process::unreaped_children().contains(&pid)
        });
    }

    fn paused_output_holds_process_ended_back(reactor) {
        let log = Rc::new(Log::default());
        let mut r = rec(&log);
        r.on_made = Some(Box::new(|p| p.pause_producing()));
        let p = reactor.spawn_process(r, &sh("echo hi; echo there >&2")).unwrap();
        // It exits, but its output is not read: exited comes, ended does not.
        run_until(reactor, LIMIT, || log.exited.get().is_some());
        for _ in 0..10 {
            reactor.iterate(Some(Duration::from_millis(10))).unwrap();
        }
        assert_eq!(log.out(1), "");
        assert_eq!(log.ended.get(), None, "pipes still open: {:?}", log.events.borrow());
        p.resume_producing();
        let status = wait_ended(reactor, &log);
        assert!(status.success());
        assert_eq!((log.out(1).as_str(), log.out(2).as_str()), ("hi\n", "there\n"));
        let events = log.events.borrow().clone();
        let exited = events.iter().position(|e| e == "exited").unwrap();
        let lost1 = events.iter().position(|e| e == "lost 1").unwrap();
        assert!(exited < lost1 && events.last().unwrap() == "ended", "{events:?}");
    }
}
