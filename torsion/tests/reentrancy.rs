//! Re-entrancy by construction (issue 10, item 5), and the four bugs of REVIEW.md §4.1
//! reproduced against the new API: every test runs on select, poll and epoll and ends with the
//! leak check (the memory-poller test runs on its own poller, with its own leak check).

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::{Rc, Weak};
use std::sync::mpsc;
use std::time::Duration;

use torsion::poller::{Event, Trigger};
use torsion::reactor::{Phase, SystemEvent, TriggerId};
use torsion::testing::{open_fd_count, run_until, LeakCheck, MemoryPoller};
use torsion::{
    reactor_test, Address, ConnectError, Context, Factory, FileDescriptor, HalfClose, Producer,
    Protocol, ProtocolFactory, Reactor, Reason, Transport,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A short name for a reason, to compare logs.
fn kind(r: &Reason) -> &'static str {
    match r {
        Reason::ConnectionDone => "ConnectionDone",
        Reason::ConnectionLost(_) => "ConnectionLost",
        Reason::ConnectionAborted => "ConnectionAborted",
        Reason::Panicked(_) => "Panicked",
        Reason::ReactorShutdown => "ReactorShutdown",
        _ => "other",
    }
}

/// A connected pair of non-blocking Unix sockets.
fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// A pair whose first end has descriptor number `fd` (free, as the lowest free number is always
/// the one given out): the pairs made on the way are returned to be dropped by the caller.
fn pair_with_fd(fd: RawFd) -> ((UnixStream, UnixStream), Vec<UnixStream>) {
    let mut spare = Vec::new();
    for _ in 0..64 {
        let (a, b) = pair();
        if a.as_raw_fd() == fd {
            return ((a, b), spare);
        }
        if b.as_raw_fd() == fd {
            return ((b, a), spare);
        }
        spare.push(a);
        spare.push(b);
    }
    panic!("descriptor number {fd} never came back");
}

/// A descriptor registered from inside a callback, and its peer.
type Newcomer = (Rc<Desc>, UnixStream);
type ReadHook = Box<dyn FnMut(&Reactor, &Desc) -> Result<(), Reason>>;
type LostHook = Box<dyn FnMut(&Reactor)>;

/// A watched socket that records what the reactor does to it. `fileno()` returns -1 once the
/// socket is closed (Twisted's convention), or `fake_fd` when set, and panics on demand.
#[derive(Default)]
struct Desc {
    sock: RefCell<Option<UnixStream>>,
    fake_fd: Cell<Option<RawFd>>,
    panic_fileno: Cell<bool>,
    reads: Cell<usize>,
    writes: Cell<usize>,
    lost: RefCell<Vec<&'static str>>,
    got: RefCell<Vec<u8>>,
    on_read: RefCell<Option<ReadHook>>,
    on_lost: RefCell<Option<LostHook>>,
}

impl Desc {
    fn new(sock: UnixStream) -> Rc<Desc> {
        Rc::new(Desc {
            sock: RefCell::new(Some(sock)),
            ..Desc::default()
        })
    }

    fn with_read(
        sock: UnixStream,
        hook: impl FnMut(&Reactor, &Desc) -> Result<(), Reason> + 'static,
    ) -> Rc<Desc> {
        let d = Desc::new(sock);
        *d.on_read.borrow_mut() = Some(Box::new(hook));
        d
    }

    fn close(&self) {
        self.sock.borrow_mut().take();
    }

    /// Reads what is waiting; `Err(ConnectionDone)` at the end of the stream.
    fn read_all(&self) -> Result<(), Reason> {
        let mut sock = self.sock.borrow_mut();
        let Some(s) = sock.as_mut() else {
            return Ok(());
        };
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Err(Reason::ConnectionDone),
                Ok(n) => self.got.borrow_mut().extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(Reason::lost(e)),
            }
        }
    }
}

impl FileDescriptor for Desc {
    fn fileno(&self) -> RawFd {
        if self.panic_fileno.get() {
            panic!("fileno panics (on purpose)");
        }
        if let Some(fd) = self.fake_fd.get() {
            return fd;
        }
        self.sock.borrow().as_ref().map_or(-1, |s| s.as_raw_fd())
    }

    fn do_read(&self, reactor: &Reactor) -> Result<(), Reason> {
        self.reads.set(self.reads.get() + 1);
        let hook = self.on_read.borrow_mut().take();
        match hook {
            Some(mut hook) => {
                let r = hook(reactor, self);
                self.on_read.borrow_mut().get_or_insert(hook);
                r
            }
            None => self.read_all(),
        }
    }

    fn do_write(&self, _: &Reactor) -> Result<(), Reason> {
        self.writes.set(self.writes.get() + 1);
        Ok(())
    }

    fn connection_lost(&self, reactor: &Reactor, reason: Reason) {
        self.lost.borrow_mut().push(kind(&reason));
        let hook = self.on_lost.borrow_mut().take();
        if let Some(mut hook) = hook {
            hook(reactor);
        }
    }
}

/// A timer that stops a `run()` that would otherwise hang: the test then fails instead.
fn safety_stop(reactor: &Reactor, fired: &Rc<Cell<bool>>) -> torsion::DelayedCall {
    let fired = fired.clone();
    reactor.call_later(secs(30), move |r| {
        fired.set(true);
        let _ = r.stop();
    })
}

// ---------------------------------------------------------------------------------------------
// 1. iterate() and run() from inside a callback (bug 3)

/// What a nested `iterate`/`run` returned and whether it changed anything.
type Probe = Rc<dyn Fn(&'static str, &Reactor, bool)>;

fn prober(canary: &Rc<Desc>, log: &Rc<RefCell<Vec<String>>>) -> Probe {
    let canary = canary.clone();
    let log = log.clone();
    let calls = Rc::new(Cell::new(0));
    Rc::new(move |what, r: &Reactor, canaries| {
        if canaries {
            // Work a nested iteration would do at once: a queued call, a due timer, and the
            // canary descriptor, which is always readable.
            let c = calls.clone();
            r.call_soon(move |_| c.set(c.get() + 1));
            let c = calls.clone();
            r.call_later(Duration::ZERO, move |_| c.set(c.get() + 1));
        }
        let before = (calls.get(), canary.reads.get(), r.running());
        let it = r.iterate(Some(Duration::ZERO));
        let run = r.run();
        let after = (calls.get(), canary.reads.get(), r.running());
        log.borrow_mut().push(format!(
            "{what}: iterate {it:?}, run {run:?}, changed {}",
            before != after
        ));
    })
}

reactor_test! {
    fn iterate_and_run_from_callbacks_are_refused_and_change_nothing(reactor) {
        let (sock, mut peer) = pair();
        peer.write_all(b"x").unwrap();
        // Never drained: level-triggered, so every iteration reports it.
        let canary = Desc::with_read(sock, |_, _| Ok(()));
        reactor.add_reader(canary.clone()).unwrap();
        let log = Rc::new(RefCell::new(Vec::new()));
        let probe = prober(&canary, &log);
        // Were a nested run() to start, this ends it (and the test fails) instead of hanging.
        let hung = Rc::new(Cell::new(false));
        let safety = safety_stop(reactor, &hung);

        // Under iterate(): a queued call, a timer, a descriptor's do_read, a task, a thread call.
        let p = probe.clone();
        reactor.call_soon(move |r| p("call_soon", r, true));
        let p = probe.clone();
        reactor.call_later(Duration::ZERO, move |r| p("timer", r, true));
        let (sock, mut reader_peer) = pair();
        reader_peer.write_all(b"y").unwrap();
        let p = probe.clone();
        let reader = Desc::with_read(sock, move |r, d| {
            if d.reads.get() == 1 {
                p("do_read", r, true);
            }
            d.read_all()
        });
        reactor.add_reader(reader.clone()).unwrap();
        let p = probe.clone();
        reactor.call_soon(move |r| {
            let p = p.clone();
            let r2 = r.clone();
            // Polled at once, inside this call_soon: inside the loop.
            r.spawn_local(async move { p("task", &r2, true) });
        });
        let (tx, rx) = mpsc::channel();
        reactor
            .handle()
            .call_from_thread(move |r| {
                let it = r.iterate(Some(Duration::ZERO));
                let run = r.run();
                tx.send(format!("thread call: iterate {it:?}, run {run:?}")).unwrap();
            })
            .unwrap();
        run_until(reactor, secs(10), || log.borrow().len() == 4 && reader.reads.get() >= 1);
        assert_eq!(
            rx.recv_timeout(secs(10)).unwrap(),
            "thread call: iterate Err(Reentrant), run Err(Reentrant)"
        );
        let mut got = log.borrow_mut().drain(..).collect::<Vec<_>>();
        got.sort();
        let want = ["call_soon", "do_read", "task", "timer"]
            .map(|w| format!("{w}: iterate Err(Reentrant), run Err(Reentrant), changed false"));
        assert_eq!(got, want);
        assert_eq!(*reader.got.borrow(), b"y", "the nested calls read nothing");
        assert!(!hung.get() && !reactor.running(), "a nested run() ran");
        let _ = safety.cancel();

        // Under run(): triggers of every phase, call_when_running, a shutdown trigger; the
        // reactor was left as it was (run() still starts it).
        for phase in [Phase::Before, Phase::During, Phase::After] {
            let p = probe.clone();
            reactor.add_system_event_trigger(phase, SystemEvent::Startup, move |r| {
                p("startup trigger", r, true)
            });
        }
        let p = probe.clone();
        reactor.call_when_running(move |r| p("call_when_running", r, true));
        // Stop once the canary calls and timers of the startup probes ran.
        reactor.add_system_event_trigger(Phase::After, SystemEvent::Startup, |r| {
            r.call_later(Duration::ZERO, |r| r.stop().unwrap());
        });
        let p = probe.clone();
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move |r| {
            p("shutdown trigger", r, false)
        });
        let p = probe.clone();
        *canary.on_lost.borrow_mut() = Some(Box::new(move |r| p("connection_lost", r, false)));
        reactor.run().unwrap();
        let want = [
            "startup trigger",
            "startup trigger",
            "call_when_running",
            "startup trigger",
            "shutdown trigger",
            "connection_lost",
        ]
        .map(|w| format!("{w}: iterate Err(Reentrant), run Err(ReactorAlreadyRunning), changed false"));
        assert_eq!(*log.borrow(), want);
        assert_eq!(*canary.lost.borrow(), ["ReactorShutdown"]);
        assert_eq!(reactor.descriptor_count(), 0);
    }
}

reactor_test! {
    fn iterate_from_a_task_polled_at_spawn_is_refused(reactor) {
        // spawn_local polls the future at once, even outside the loop: that poll is a callback
        // of the reactor too. A nested iteration there would run the task's own wake-up while
        // the task is being polled, lose it, and leave the task asleep for ever.
        let nested: Rc<RefCell<Vec<String>>> = Rc::default();
        let (n, r2) = (nested.clone(), reactor.clone());
        let mut first = true;
        reactor.spawn_local(std::future::poll_fn(move |cx| {
            if !std::mem::take(&mut first) {
                return std::task::Poll::Ready(());
            }
            cx.waker().wake_by_ref(); // yield: poll me again
            n.borrow_mut().push(format!("{:?}", r2.iterate(Some(Duration::ZERO))));
            std::task::Poll::Pending
        }));
        run_until(reactor, secs(10), || reactor.task_count() == 0);
        assert_eq!(*nested.borrow(), ["Err(Reentrant)"]);
    }
}

/// Records the bytes it gets; on its first bytes, has the client send more, then tries to
/// iterate the reactor from inside `data_received`.
struct Nester {
    got: Rc<RefCell<Vec<u8>>>,
    client: Rc<RefCell<Option<TcpStream>>>,
    nested: Rc<RefCell<Vec<String>>>,
    stop_first: bool,
    lost: Rc<RefCell<Vec<&'static str>>>,
}

impl Protocol for Nester {
    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        self.got.borrow_mut().extend_from_slice(data);
        if !self.nested.borrow().is_empty() {
            return;
        }
        if self.stop_first {
            cx.reactor().stop().unwrap();
        } else if let Some(c) = self.client.borrow_mut().as_mut() {
            c.write_all(b"b").unwrap();
            // Let the bytes reach this socket, so that a nested iteration would read them (a
            // wait on the kernel, not on the reactor's time: nothing else can replace it).
            std::thread::sleep(ms(30));
        }
        let r = cx.reactor().iterate(Some(ms(10)));
        self.nested.borrow_mut().push(format!("{r:?}"));
    }

    fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
        self.lost.borrow_mut().push(kind(&reason));
    }
}

struct NesterLogs {
    got: Rc<RefCell<Vec<u8>>>,
    client: Rc<RefCell<Option<TcpStream>>>,
    nested: Rc<RefCell<Vec<String>>>,
    lost: Rc<RefCell<Vec<&'static str>>>,
}

fn nester_port(reactor: &Reactor, stop_first: bool) -> (torsion::ListeningPort, NesterLogs) {
    let logs = NesterLogs {
        got: Rc::default(),
        client: Rc::default(),
        nested: Rc::default(),
        lost: Rc::default(),
    };
    let (got, client, nested, lost) = (
        logs.got.clone(),
        logs.client.clone(),
        logs.nested.clone(),
        logs.lost.clone(),
    );
    let port = reactor
        .listen_tcp(
            "127.0.0.1:0",
            Factory::for_protocol(move || Nester {
                got: got.clone(),
                client: client.clone(),
                nested: nested.clone(),
                stop_first,
                lost: lost.clone(),
            }),
        )
        .unwrap();
    (port, logs)
}

reactor_test! {
    fn nested_iterate_in_data_received_loses_no_bytes(reactor) {
        let (port, logs) = nester_port(reactor, false);
        let mut client = TcpStream::connect(port.address()).unwrap();
        *logs.client.borrow_mut() = Some(client.try_clone().unwrap());
        client.write_all(b"a").unwrap();
        run_until(reactor, secs(10), || logs.got.borrow().len() >= 2);
        assert_eq!(*logs.got.borrow(), b"ab");
        assert_eq!(*logs.nested.borrow(), ["Err(Reentrant)"]);
        // The end of the stream still arrives, once.
        logs.client.borrow_mut().take();
        drop(client);
        port.stop_listening();
        run_until(reactor, secs(10), || reactor.descriptor_count() == 0);
        assert_eq!(*logs.lost.borrow(), ["ConnectionDone"]);
    }

    fn stop_then_iterate_in_data_received_keeps_connection_lost(reactor) {
        let (port, logs) = nester_port(reactor, true);
        let mut client = TcpStream::connect(port.address()).unwrap();
        client.write_all(b"a").unwrap();
        let hung = Rc::new(Cell::new(false));
        let safety = safety_stop(reactor, &hung);
        reactor.run().unwrap();
        assert!(!hung.get(), "run() only returned through the safety timer");
        let _ = safety.cancel();
        assert_eq!(*logs.nested.borrow(), ["Err(Reentrant)"]);
        assert_eq!(*logs.lost.borrow(), ["ReactorShutdown"]);
        // The socket was closed: the client sees the end of the stream.
        client.set_read_timeout(Some(secs(10))).unwrap();
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest);
        assert!(rest.is_empty());
        drop(port);
    }
}

/// Sends "a" once connected; records how it ended.
struct Sender(Rc<RefCell<Vec<&'static str>>>);

impl Protocol for Sender {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        cx.transport().write(b"a");
    }

    fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}

    fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
        self.0.borrow_mut().push(kind(&reason));
    }
}

reactor_test! {
    fn stop_then_iterate_in_data_received_keeps_the_connectors_callbacks(reactor) {
        // The same from a torsion client: its protocol and its factory's
        // client_connection_lost (the connector's bookkeeping) both hear of the shutdown.
        let (port, logs) = nester_port(reactor, true);
        let client_lost: Rc<RefCell<Vec<&'static str>>> = Rc::default();
        let factory_lost: Rc<RefCell<Vec<&'static str>>> = Rc::default();
        let (c, f) = (client_lost.clone(), factory_lost.clone());
        let factory = Factory::for_protocol(move || Sender(c.clone()))
            .on_client_connection_lost(move |_, _, reason| f.borrow_mut().push(kind(&reason)));
        let connector = reactor.connect_tcp("127.0.0.1", port.port(), factory, secs(10));
        let hung = Rc::new(Cell::new(false));
        let safety = safety_stop(reactor, &hung);
        reactor.run().unwrap();
        assert!(!hung.get(), "run() only returned through the safety timer");
        let _ = safety.cancel();
        assert_eq!(*logs.nested.borrow(), ["Err(Reentrant)"]);
        assert_eq!(*logs.lost.borrow(), ["ReactorShutdown"]);
        assert_eq!(*client_lost.borrow(), ["ReactorShutdown"]);
        assert_eq!(*factory_lost.borrow(), ["ReactorShutdown"]);
        assert!(connector.transport().is_none());
        drop((port, connector));
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Triggers that add and remove triggers (bug 1)

reactor_test! {
    fn triggers_add_and_remove_triggers_then_stop(reactor) {
        let log: Rc<RefCell<Vec<String>>> = Rc::default();
        let say = |log: &Rc<RefCell<Vec<String>>>, what: &'static str| {
            let log = log.clone();
            move |_: &Reactor| log.borrow_mut().push(what.into())
        };
        let same_phase: Rc<Cell<Option<TriggerId>>> = Rc::default();
        let (l, s) = (log.clone(), same_phase.clone());
        let later_phase = reactor.add_system_event_trigger(
            Phase::After,
            SystemEvent::Startup,
            say(&log, "removed startup after"),
        );
        let shutdown_removed = reactor.add_system_event_trigger(
            Phase::During,
            SystemEvent::Shutdown,
            say(&log, "removed shutdown during"),
        );
        reactor.add_system_event_trigger(Phase::During, SystemEvent::Startup, move |r| {
            l.borrow_mut().push("startup during".into());
            r.add_system_event_trigger(Phase::During, SystemEvent::Startup, say(&l, "added startup during"));
            r.add_system_event_trigger(Phase::After, SystemEvent::Startup, say(&l, "added startup after"));
            let removed = [s.get().unwrap(), later_phase].map(|id| r.remove_system_event_trigger(id));
            l.borrow_mut().push(format!("removed {removed:?}"));
            let l2 = l.clone();
            r.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move |r| {
                l2.borrow_mut().push("shutdown before".into());
                r.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, say(&l2, "added shutdown before"));
                r.add_system_event_trigger(Phase::After, SystemEvent::Shutdown, say(&l2, "added shutdown after"));
                let removed = r.remove_system_event_trigger(shutdown_removed);
                l2.borrow_mut().push(format!("removed {removed}"));
            });
            // After all that, in the same trigger: stop() works and run() returns.
            l.borrow_mut().push(format!("stop {:?}", r.stop()));
        });
        same_phase.set(Some(reactor.add_system_event_trigger(
            Phase::During,
            SystemEvent::Startup,
            say(&log, "removed startup during"),
        )));
        let hung = Rc::new(Cell::new(false));
        let safety = safety_stop(reactor, &hung);
        reactor.run().unwrap();
        assert!(!hung.get(), "run() only returned through the safety timer");
        let _ = safety.cancel();
        assert_eq!(
            *log.borrow(),
            [
                "startup during",
                "removed [true, true]",
                "stop Ok(())",
                "added startup during",
                "added startup after",
                "shutdown before",
                "removed true",
                "added shutdown before",
                "added shutdown after",
            ]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Removal by identity (bug 2)

reactor_test! {
    fn a_descriptor_that_closed_itself_and_failed_is_removed_once(reactor) {
        // The review's case: the peer is gone; do_read closes the socket (fileno() is -1 from
        // then on) and reports the end of the stream.
        let (sock, peer) = pair();
        drop(peer);
        let fd = sock.as_raw_fd();
        let old = Desc::with_read(sock, |_, d| {
            d.close();
            Err(Reason::ConnectionDone)
        });
        reactor.add_reader(old.clone()).unwrap();
        run_until(reactor, secs(10), || old.reads.get() == 1);
        for _ in 0..10 {
            reactor.iterate(Some(ms(5))).unwrap();
        }
        assert_eq!(old.reads.get(), 1, "read again after it was removed");
        assert_eq!(*old.lost.borrow(), ["ConnectionDone"]);
        assert_eq!(reactor.descriptor_count(), 0);
        // Its number is free at once.
        let ((sock, mut peer), spare) = pair_with_fd(fd);
        drop(spare);
        let new = Desc::new(sock);
        reactor.add_reader(new.clone()).unwrap();
        peer.write_all(b"new").unwrap();
        run_until(reactor, secs(10), || new.got.borrow().len() == 3);
        assert_eq!(old.reads.get(), 1);
        reactor.remove_reader(&*new);
        assert_eq!(reactor.descriptor_count(), 0);
    }

    fn a_descriptor_closed_while_registered_is_removed_once(reactor) {
        // Twisted's convention without an error: do_read closes the socket and returns Ok;
        // from then on fileno() is -1. poll and select report the closed number (POLLNVAL,
        // EBADF) and the reactor ends the registration; epoll forgets a closed descriptor
        // silently, so the reactor learns it when the number is registered again.
        let (sock, _peer) = pair();
        let fd = sock.as_raw_fd();
        _peer.try_clone().unwrap().write_all(b"x").unwrap();
        let old = Desc::with_read(sock, |_, d| {
            d.close();
            Ok(())
        });
        reactor.add_reader(old.clone()).unwrap();
        run_until(reactor, secs(10), || old.reads.get() == 1);
        for _ in 0..10 {
            reactor.iterate(Some(ms(5))).unwrap();
        }
        assert_eq!(old.reads.get(), 1, "a closed descriptor was read again (busy loop)");
        assert!(old.lost.borrow().len() <= 1, "{:?}", old.lost.borrow());
        if reactor.backend() != Some(torsion::Backend::Epoll) {
            assert_eq!(*old.lost.borrow(), ["ConnectionLost"]);
            assert_eq!(reactor.descriptor_count(), 0);
        }
        let ((sock, mut peer), spare) = pair_with_fd(fd);
        drop(spare);
        let new = Desc::new(sock);
        reactor.add_reader(new.clone()).unwrap();
        peer.write_all(b"new").unwrap();
        run_until(reactor, secs(10), || new.got.borrow().len() == 3);
        for _ in 0..3 {
            reactor.iterate(Some(ms(5))).unwrap();
        }
        assert_eq!(old.reads.get(), 1);
        assert_eq!(*old.lost.borrow(), ["ConnectionLost"], "ended exactly once");
        assert_eq!(reactor.descriptor_count(), 1, "only the new descriptor");
        reactor.remove_reader(&*new);
        assert_eq!(reactor.descriptor_count(), 0);
        assert!(new.lost.borrow().is_empty());
    }

    fn a_writer_closed_while_registered_is_removed_once(reactor) {
        // The same for a descriptor watched for writing only: do_write closes the socket and
        // returns Ok; it must not be called again on the closed number.
        let (sock, _peer) = pair();
        let fd = sock.as_raw_fd();
        let old = Desc::new(sock);
        reactor.add_writer(old.clone()).unwrap();
        let o = old.clone();
        run_until(reactor, secs(10), || {
            if o.writes.get() >= 1 {
                o.close();
            }
            o.writes.get() >= 1
        });
        for _ in 0..10 {
            reactor.iterate(Some(ms(5))).unwrap();
        }
        assert_eq!(old.writes.get(), 1, "a closed descriptor was written again (busy loop)");
        if reactor.backend() != Some(torsion::Backend::Epoll) {
            assert_eq!(*old.lost.borrow(), ["ConnectionLost"]);
            assert_eq!(reactor.descriptor_count(), 0);
        }
        let ((sock, _peer2), spare) = pair_with_fd(fd);
        drop(spare);
        let new = Desc::new(sock);
        reactor.add_writer(new.clone()).unwrap();
        run_until(reactor, secs(10), || new.writes.get() >= 1);
        reactor.iterate(Some(Duration::ZERO)).unwrap();
        assert_eq!(old.writes.get(), 1);
        assert_eq!(*old.lost.borrow(), ["ConnectionLost"], "ended exactly once");
        reactor.remove_writer(&*new);
        assert_eq!(reactor.descriptor_count(), 0);
    }

    fn a_descriptor_closed_in_a_callback_frees_its_number_at_once(reactor) {
        // Closed without telling the reactor, and its number registered again before any poll
        // could report it: the new registration takes the number, the old one ends once.
        let (sock, _peer) = pair();
        let fd = sock.as_raw_fd();
        let old = Desc::new(sock);
        reactor.add_reader(old.clone()).unwrap();
        let newcomer: Rc<RefCell<Option<Newcomer>>> = Rc::default();
        let (o, n) = (old.clone(), newcomer.clone());
        reactor.call_soon(move |r| {
            o.close();
            let ((sock, peer), spare) = pair_with_fd(fd);
            drop(spare);
            let new = Desc::new(sock);
            r.add_reader(new.clone()).unwrap();
            *n.borrow_mut() = Some((new, peer));
        });
        reactor.iterate(Some(Duration::ZERO)).unwrap();
        let (new, mut peer) = newcomer.borrow_mut().take().unwrap();
        peer.write_all(b"new").unwrap();
        run_until(reactor, secs(10), || new.got.borrow().len() == 3);
        for _ in 0..3 {
            reactor.iterate(Some(ms(5))).unwrap();
        }
        assert_eq!(old.reads.get(), 0);
        assert_eq!(*old.lost.borrow(), ["ConnectionLost"], "ended exactly once");
        assert_eq!(reactor.descriptor_count(), 1);
        assert!(reactor.readers().iter().all(|d| std::ptr::addr_eq(Rc::as_ptr(d), Rc::as_ptr(&new))));
        reactor.remove_reader(&*new);
        assert_eq!(reactor.descriptor_count(), 0);
    }

    fn a_descriptor_whose_number_changed_gives_it_up_to_a_newcomer(reactor) {
        // `one` moved to another socket (its fileno() changed) and its old number was reused:
        // the newcomer gets the number, `one` is forgotten (as Twisted's reactors overwrite
        // it), without a callback; nothing is left registered behind.
        let (a, _pa) = pair();
        let fd = a.as_raw_fd();
        let one = Desc::new(a);
        reactor.add_reader(one.clone()).unwrap();
        let (x, _px) = pair();
        one.fake_fd.set(Some(x.as_raw_fd()));
        one.close();
        let ((sock, mut peer), spare) = pair_with_fd(fd);
        drop(spare);
        let two = Desc::new(sock);
        reactor.add_reader(two.clone()).unwrap();
        assert_eq!(reactor.descriptor_count(), 1, "the old registration stayed behind");
        peer.write_all(b"two").unwrap();
        run_until(reactor, secs(10), || two.got.borrow().len() == 3);
        reactor.remove_reader(&*one); // gone already: nothing happens
        assert_eq!(reactor.descriptor_count(), 1);
        reactor.remove_reader(&*two);
        assert_eq!(reactor.descriptor_count(), 0);
        assert_eq!((one.reads.get(), one.lost.borrow().len()), (0, 0));
        assert!(two.lost.borrow().is_empty());
    }

    fn remove_reader_and_remove_writer_go_by_identity(reactor) {
        let (a, _pa) = pair();
        let (b, mut pb) = pair();
        let one = Desc::new(a);
        let two = Desc::new(b);
        reactor.add_reader(one.clone()).unwrap();
        reactor.add_writer(one.clone()).unwrap();
        reactor.add_reader(two.clone()).unwrap();
        assert_eq!(reactor.descriptor_count(), 2);
        // `one` now claims `two`'s number: removal must still find `one`, and only it.
        one.fake_fd.set(Some(two.fileno()));
        reactor.remove_reader(&*one);
        let is = |d: &Rc<dyn FileDescriptor>, x: &Rc<Desc>| std::ptr::addr_eq(Rc::as_ptr(d), Rc::as_ptr(x));
        assert!(reactor.readers().iter().all(|d| is(d, &two)));
        assert_eq!(reactor.readers().len(), 1);
        assert!(reactor.writers().iter().all(|d| is(d, &one)));
        assert_eq!(reactor.writers().len(), 1);
        reactor.remove_writer(&*one);
        assert_eq!(reactor.descriptor_count(), 1);
        pb.write_all(b"two").unwrap();
        run_until(reactor, secs(10), || two.got.borrow().len() == 3);
        // A closed descriptor (-1), and one whose fileno() panics: found by identity.
        two.fake_fd.set(Some(-1));
        reactor.remove_reader(&*two);
        assert_eq!(reactor.descriptor_count(), 0);
        let (c, _pc) = pair();
        let three = Desc::new(c);
        reactor.add_reader(three.clone()).unwrap();
        three.panic_fileno.set(true);
        reactor.remove_reader(&*three);
        assert_eq!(reactor.descriptor_count(), 0);
        assert!(one.lost.borrow().is_empty() && two.lost.borrow().is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Dropping a reactor that was never stopped (bug 4)

#[derive(Default)]
struct DropLogs {
    made: Cell<usize>,
    lost: RefCell<Vec<&'static str>>,
    nested: RefCell<Vec<String>>,
    alive: RefCell<Vec<Weak<()>>>,
}

/// Keeps its own transport (a protocol -> transport -> connection -> protocol cycle).
struct Keeper {
    me: Option<Transport>,
    logs: Rc<DropLogs>,
    _alive: Rc<()>,
}

impl Keeper {
    fn new(logs: &Rc<DropLogs>) -> Keeper {
        let alive = Rc::new(());
        logs.alive.borrow_mut().push(Rc::downgrade(&alive));
        Keeper {
            me: None,
            logs: logs.clone(),
            _alive: alive,
        }
    }
}

impl Protocol for Keeper {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        self.me = Some(cx.transport().clone());
        self.logs.made.set(self.logs.made.get() + 1);
    }

    fn data_received(&mut self, _: &mut Context<'_>, _: &[u8]) {}

    fn connection_lost(&mut self, cx: &mut Context<'_>, reason: Reason) {
        self.logs.lost.borrow_mut().push(kind(&reason));
        let r = cx.reactor().iterate(Some(Duration::ZERO));
        self.logs.nested.borrow_mut().push(format!("{r:?}"));
        assert!(self.me.is_some());
    }
}

fn alive(logs: &DropLogs) -> usize {
    logs.alive
        .borrow()
        .iter()
        .filter(|w| w.upgrade().is_some())
        .count()
}

reactor_test! {
    fn dropping_an_iterated_reactor_closes_connections_and_breaks_cycles(reactor) {
        let baseline = open_fd_count();
        let logs = Rc::new(DropLogs::default());
        let mut client = {
            let r2 = Reactor::with_backend(reactor.backend().unwrap()).unwrap();
            let l = logs.clone();
            let port = r2.listen_tcp("127.0.0.1:0", Factory::for_protocol(move || Keeper::new(&l))).unwrap();
            let l = logs.clone();
            let connector = r2.connect_tcp(
                "127.0.0.1",
                port.port(),
                Factory::for_protocol(move || Keeper::new(&l)),
                secs(10),
            );
            let client = TcpStream::connect(port.address()).unwrap();
            // Two accepted connections and one outgoing, each keeping its own transport.
            run_until(&r2, secs(10), || logs.made.get() == 3);
            drop((port, connector));
            drop(r2); // never run, never stopped: run with iterate only
            client
        };
        assert_eq!(*logs.lost.borrow(), ["ReactorShutdown"; 3]);
        assert_eq!(*logs.nested.borrow(), ["Err(Reentrant)"; 3]);
        assert_eq!(alive(&logs), 0, "a protocol outlived its reactor (a cycle)");
        client.set_read_timeout(Some(secs(10))).unwrap();
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest);
        assert!(rest.is_empty());
        drop(client);
        assert_eq!(open_fd_count(), baseline, "descriptors leaked by the dropped reactor");
    }

    fn dropping_a_reactor_never_iterated_leaks_nothing(reactor) {
        let baseline = open_fd_count();
        let (sock, _peer) = pair();
        let desc = Desc::new(sock);
        let nested: Rc<RefCell<Vec<String>>> = Rc::default();
        let n = nested.clone();
        *desc.on_lost.borrow_mut() = Some(Box::new(move |r| {
            n.borrow_mut().push(format!("{:?}", r.iterate(Some(Duration::ZERO))));
        }));
        let client = {
            let r2 = Reactor::with_backend(reactor.backend().unwrap()).unwrap();
            let port = r2.listen_tcp("127.0.0.1:0", Factory::for_protocol(|| Keeper::new(&Rc::default()))).unwrap();
            // An outgoing attempt in flight, a client in the listener's backlog, a descriptor.
            let connector = r2.connect_tcp(
                "127.0.0.1",
                port.port(),
                Factory::for_protocol(|| Keeper::new(&Rc::default())),
                secs(10),
            );
            let client = TcpStream::connect(port.address()).unwrap();
            r2.add_reader(desc.clone()).unwrap();
            drop((port, connector));
            drop(r2);
            client
        };
        assert_eq!(*desc.lost.borrow(), ["ReactorShutdown"]);
        assert_eq!(*nested.borrow(), ["Err(Reentrant)"]);
        drop((client, desc, _peer));
        assert_eq!(open_fd_count(), baseline, "descriptors leaked by the dropped reactor");
    }
}

reactor_test! {
    fn handles_taken_while_dropping_do_not_keep_the_reactor_open(reactor) {
        // connection_lost, run by the drop, hands its reactor to a timer, a queued call, a
        // trigger and a task (a cycle through the reactor's own queues): the poller and the
        // waker are closed all the same.
        let baseline = open_fd_count();
        let (sock, _peer) = pair();
        let desc = Desc::new(sock);
        let ran = Rc::new(Cell::new(0));
        let n = ran.clone();
        *desc.on_lost.borrow_mut() = Some(Box::new(move |r| {
            let keep = r.clone();
            let n = n.clone();
            r.call_later(secs(3600), move |_| drop(keep));
            let keep = r.clone();
            r.call_soon(move |_| drop(keep));
            let keep = r.clone();
            r.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move |_| drop(keep));
            let keep = r.clone();
            r.spawn_local(async move {
                n.set(n.get() + 1);
                std::future::pending::<()>().await;
                drop(keep);
            });
        }));
        {
            let r2 = Reactor::with_backend(reactor.backend().unwrap()).unwrap();
            r2.add_reader(desc.clone()).unwrap();
            drop(r2);
        }
        assert_eq!(*desc.lost.borrow(), ["ReactorShutdown"]);
        assert_eq!(ran.get(), 1, "the task was polled once, then dropped");
        drop((desc, _peer));
        assert_eq!(open_fd_count(), baseline, "the dropped reactor's descriptors were kept open");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Panics in user callbacks (every one contained)

reactor_test! {
    fn a_panicking_fileno_is_an_error_when_added_and_contained_in_dispatch(reactor) {
        let (s, _p) = pair();
        let bad = Desc::new(s);
        bad.panic_fileno.set(true);
        assert!(reactor.add_reader(bad.clone()).is_err());
        assert!(reactor.add_writer(bad.clone()).is_err());
        assert!(reactor.register(bad.clone(), Trigger::Level).is_err());
        assert_eq!(reactor.descriptor_count(), 0);

        // Both always readable; one's fileno() starts panicking while registered.
        let (s1, mut p1) = pair();
        let (s2, mut p2) = pair();
        p1.write_all(b"1").unwrap();
        p2.write_all(b"2").unwrap();
        let one = Desc::with_read(s1, |_, _| Ok(()));
        let two = Desc::with_read(s2, |_, _| Ok(()));
        reactor.add_reader(one.clone()).unwrap();
        reactor.add_reader(two.clone()).unwrap();
        run_until(reactor, secs(10), || one.reads.get() >= 1 && two.reads.get() >= 1);
        one.panic_fileno.set(true);
        let reads = two.reads.get();
        run_until(reactor, secs(10), || two.reads.get() >= reads + 5);
        assert_eq!(*one.lost.borrow(), ["Panicked"]);
        assert!(two.lost.borrow().is_empty());
        assert_eq!(reactor.descriptor_count(), 1);

        // A registered descriptor whose fileno() panics when a newcomer claims its number (it
        // was closed meanwhile) is ended with Panicked; the newcomer gets the number.
        let fd = two.fileno();
        two.close();
        two.panic_fileno.set(true);
        let ((s3, _p3), spare) = pair_with_fd(fd);
        drop(spare);
        let three = Desc::new(s3);
        reactor.add_reader(three.clone()).unwrap();
        reactor.iterate(Some(Duration::ZERO)).unwrap();
        assert_eq!(*two.lost.borrow(), ["Panicked"]);
        assert_eq!(reactor.descriptor_count(), 1);
        reactor.remove_reader(&*three);
        assert_eq!(reactor.descriptor_count(), 0);
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Bomb {
    None,
    Made,
    Data,
    Lost,
    Producer,
    ReadHalf,
    WriteHalf,
}

#[derive(Default)]
struct VictimLog {
    lost: RefCell<Vec<&'static str>>,
    producer_calls: Cell<usize>,
}

/// Echoes; panics where its bomb says.
struct Victim {
    bomb: Bomb,
    log: Rc<VictimLog>,
}

struct BadProducer {
    transport: Transport,
    log: Rc<VictimLog>,
}

impl Producer for BadProducer {
    fn resume_producing(&self) {
        let n = self.log.producer_calls.get() + 1;
        self.log.producer_calls.set(n);
        if n == 1 {
            self.transport.write(b"produced");
        } else {
            panic!("resume_producing panics (on purpose)");
        }
    }
}

impl Protocol for Victim {
    fn connection_made(&mut self, cx: &mut Context<'_>) {
        match self.bomb {
            Bomb::Made => panic!("connection_made panics (on purpose)"),
            Bomb::Producer => {
                let p = BadProducer {
                    transport: cx.transport().clone(),
                    log: self.log.clone(),
                };
                cx.transport().register_producer(Rc::new(p), false).unwrap();
            }
            _ => {}
        }
    }

    fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        match self.bomb {
            Bomb::Data => panic!("data_received panics (on purpose)"),
            Bomb::Lost => cx.transport().lose_connection(),
            _ => cx.transport().write(data),
        }
    }

    fn read_connection_lost(&mut self, cx: &mut Context<'_>) -> HalfClose {
        match self.bomb {
            Bomb::ReadHalf => panic!("read_connection_lost panics (on purpose)"),
            Bomb::WriteHalf => {
                cx.transport().lose_write_connection();
                HalfClose::KeepWriting
            }
            _ => HalfClose::Close,
        }
    }

    fn write_connection_lost(&mut self, _: &mut Context<'_>) {
        if self.bomb == Bomb::WriteHalf {
            panic!("write_connection_lost panics (on purpose)");
        }
    }

    fn connection_lost(&mut self, _: &mut Context<'_>, reason: Reason) {
        self.log.lost.borrow_mut().push(kind(&reason));
        if self.bomb == Bomb::Lost {
            panic!("connection_lost panics (on purpose)");
        }
    }
}

/// Builds a victim; its first protocol panics in `build_protocol` when `bomb_build` is set.
struct VictimFactory {
    bomb: Bomb,
    bomb_build: Cell<bool>,
    log: Rc<VictimLog>,
}

impl ProtocolFactory for VictimFactory {
    fn build_protocol(&self, _: &Address) -> Option<Box<dyn Protocol>> {
        if self.bomb_build.replace(false) {
            panic!("build_protocol panics (on purpose)");
        }
        Some(Box::new(Victim {
            bomb: self.bomb,
            log: self.log.clone(),
        }))
    }
}

/// Reads until the peer closes (or resets): what arrived.
fn read_to_close(client: &mut TcpStream) -> Vec<u8> {
    client.set_read_timeout(Some(secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match client.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}

fn echoes(client: &mut TcpStream, reactor: &Reactor) {
    client.write_all(b"ping").unwrap();
    client.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    run_until(reactor, secs(10), || {
        let mut buf = [0u8; 16];
        if let Ok(n) = client.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        got.len() >= 4
    });
    client.set_nonblocking(false).unwrap();
    assert_eq!(got, b"ping");
}

reactor_test! {
    fn protocol_and_factory_panics_close_only_their_connection(reactor) {
        let healthy_log = Rc::new(VictimLog::default());
        let healthy_port = reactor
            .listen_tcp("127.0.0.1:0", VictimFactory { bomb: Bomb::None, bomb_build: Cell::new(false), log: healthy_log.clone() })
            .unwrap();
        let mut healthy = TcpStream::connect(healthy_port.address()).unwrap();
        echoes(&mut healthy, reactor);

        let bombs = [
            Bomb::None,
            Bomb::Made,
            Bomb::Data,
            Bomb::Lost,
            Bomb::Producer,
            Bomb::ReadHalf,
            Bomb::WriteHalf,
        ];
        for bomb in bombs {
            let log = Rc::new(VictimLog::default());
            // Bomb::None: the first build_protocol panics, the listener carries on.
            let factory = VictimFactory { bomb, bomb_build: Cell::new(bomb == Bomb::None), log: log.clone() };
            let port = reactor.listen_tcp("127.0.0.1:0", factory).unwrap();
            let mut client = TcpStream::connect(port.address()).unwrap();
            if matches!(bomb, Bomb::Data | Bomb::Lost) {
                client.write_all(b"go").unwrap();
            }
            if matches!(bomb, Bomb::ReadHalf | Bomb::WriteHalf) {
                client.shutdown(std::net::Shutdown::Write).unwrap();
            }
            let closed = Rc::new(RefCell::new(None));
            // The client blocks in read: read on a helper thread while the reactor runs.
            let mut c = client.try_clone().unwrap();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || tx.send(read_to_close(&mut c)).unwrap());
            let cl = closed.clone();
            run_until(reactor, secs(20), || {
                if let Ok(got) = rx.try_recv() {
                    *cl.borrow_mut() = Some(got);
                }
                cl.borrow().is_some() && (bomb == Bomb::None || !log.lost.borrow().is_empty())
            });
            let got = closed.borrow_mut().take().unwrap();
            match bomb {
                Bomb::None => {
                    assert!(got.is_empty());
                    assert!(log.lost.borrow().is_empty());
                    let mut again = TcpStream::connect(port.address()).unwrap();
                    echoes(&mut again, reactor);
                }
                Bomb::Made | Bomb::Data | Bomb::ReadHalf | Bomb::WriteHalf => {
                    assert_eq!(*log.lost.borrow(), ["Panicked"], "{bomb:?}")
                }
                Bomb::Lost => assert_eq!(*log.lost.borrow(), ["ConnectionDone"], "{bomb:?}"),
                Bomb::Producer => {
                    assert_eq!(got, b"produced");
                    assert_eq!(log.producer_calls.get(), 2);
                    assert_eq!(*log.lost.borrow(), ["Panicked"], "{bomb:?}");
                }
            }
            port.stop_listening();
            // The healthy connection was not touched.
            echoes(&mut healthy, reactor);
            assert!(healthy_log.lost.borrow().is_empty(), "{bomb:?}");
        }

        // A client factory whose build_protocol panics: a connect failure, nothing else.
        let failed: Rc<RefCell<Vec<String>>> = Rc::default();
        let f = failed.clone();
        let factory = Factory::for_protocol(|| -> Victim { panic!("client build_protocol panics (on purpose)") })
            .on_client_connection_failed(move |_, _, e| {
                f.borrow_mut().push(format!("{}", matches!(e, ConnectError::Panicked(_))))
            });
        reactor.connect_tcp("127.0.0.1", healthy_port.port(), factory, secs(10));
        run_until(reactor, secs(10), || !failed.borrow().is_empty());
        assert_eq!(*failed.borrow(), ["true"]);
        echoes(&mut healthy, reactor);

        drop(healthy);
        healthy_port.stop_listening();
        run_until(reactor, secs(10), || reactor.descriptor_count() == 0);
        assert_eq!(*healthy_log.lost.borrow(), ["ConnectionDone"; 2]);
    }

    fn panics_in_triggers_timers_and_queued_calls_are_contained(reactor) {
        let log: Rc<RefCell<Vec<&'static str>>> = Rc::default();
        let say = |log: &Rc<RefCell<Vec<&'static str>>>, what: &'static str| {
            let log = log.clone();
            move |_: &Reactor| log.borrow_mut().push(what)
        };
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Startup, |_| panic!("startup trigger (on purpose)"));
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Startup, say(&log, "startup"));
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, |_| panic!("shutdown trigger (on purpose)"));
        reactor.add_system_event_trigger(Phase::After, SystemEvent::Shutdown, say(&log, "shutdown"));
        let l = log.clone();
        reactor.call_when_running(move |r| {
            r.call_soon(|_| panic!("call_soon (on purpose)"));
            r.call_soon(say(&l, "soon"));
            r.call_later(Duration::ZERO, |_| panic!("timer (on purpose)"));
            r.call_later(Duration::ZERO, say(&l, "timer"));
            let h = r.handle();
            h.call_from_thread(|_| panic!("thread call (on purpose)")).unwrap();
            let l2 = l.clone();
            r.spawn_local(async { panic!("task (on purpose)") });
            r.call_later(ms(20), move |r| {
                l2.borrow_mut().push("late timer");
                r.stop().unwrap();
            });
        });
        let (tx, rx) = mpsc::channel();
        reactor.handle().call_from_thread(move |_| tx.send("thread").unwrap()).unwrap();
        let hung = Rc::new(Cell::new(false));
        let safety = safety_stop(reactor, &hung);
        reactor.run().unwrap();
        assert!(!hung.get(), "run() only returned through the safety timer");
        let _ = safety.cancel();
        assert_eq!(rx.try_recv().unwrap(), "thread");
        assert_eq!(*log.borrow(), ["startup", "soon", "timer", "late timer", "shutdown"]);
        assert_eq!(reactor.task_count(), 0);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. The real reactor on a fake poller

#[test]
fn memory_poller_events_reach_live_registrations_only() {
    let _serial = torsion::testing::serial();
    let leaks = LeakCheck::new();
    let (poller, handle) = MemoryPoller::new();
    let reactor = Reactor::with_poller(Box::new(poller)).unwrap();
    let (sock, _peer) = pair();
    let fd = sock.as_raw_fd();
    let one = Desc::with_read(sock, |_, _| Ok(()));
    reactor.add_reader(one.clone()).unwrap();
    assert!(handle.ready_to_read(fd));
    reactor.iterate(None).unwrap();
    assert_eq!(one.reads.get(), 1);
    // Nothing injected: nothing dispatched (the memory poller is never ready by itself).
    reactor.iterate(None).unwrap();
    assert_eq!(one.reads.get(), 1);

    // An event queued for a registration that ends before the poll is skipped, even when a
    // new registration holds the same fd number by then.
    assert!(handle.ready_to_read(fd));
    reactor.remove_reader(&*one);
    let two = Desc::with_read(one.sock.borrow_mut().take().unwrap(), |_, _| Ok(()));
    reactor.add_reader(two.clone()).unwrap();
    reactor.iterate(None).unwrap();
    assert_eq!((one.reads.get(), two.reads.get()), (1, 0));
    assert!(one.lost.borrow().is_empty() && two.lost.borrow().is_empty());
    // An event for a token that never named a registration is skipped; a live one is read.
    handle.inject(Event {
        token: u64::MAX - 1,
        readable: true,
        writable: true,
        hangup: true,
        read_closed: false,
        priority: false,
    });
    assert!(handle.ready_to_read(fd));
    reactor.iterate(None).unwrap();
    assert_eq!((two.reads.get(), two.writes.get()), (1, 0));
    reactor.remove_reader(&*two);
    assert_eq!(
        handle.registered(),
        1,
        "only the waker is left in the poller"
    );
    drop((one, two, _peer));
    leaks.check(reactor);
}
