//! Reactor-level behaviour, each test run on select, poll and epoll and ended with a leak check.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use torsion::reactor::{Phase, SystemEvent};
use torsion::{reactor_test, Backend, Error, FileDescriptor, Reactor, Reason};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

type ReadHook = Box<dyn FnMut(&Reactor, &Watched) -> Result<(), Reason>>;
type Newcomers = Rc<RefCell<Vec<(Rc<Watched>, UnixStream)>>>;

/// A socket pair end watched by the reactor; records what happens to it.
struct Watched {
    sock: RefCell<Option<UnixStream>>,
    fd: RawFd,
    reads: Cell<usize>,
    writes: Cell<usize>,
    lost: RefCell<Vec<String>>,
    on_read: RefCell<Option<ReadHook>>,
}

impl Watched {
    fn new(sock: UnixStream) -> Rc<Watched> {
        sock.set_nonblocking(true).unwrap();
        Rc::new(Watched {
            fd: sock.as_raw_fd(),
            sock: RefCell::new(Some(sock)),
            reads: Cell::new(0),
            writes: Cell::new(0),
            lost: RefCell::default(),
            on_read: RefCell::default(),
        })
    }

    fn close(&self) {
        self.sock.borrow_mut().take();
    }
}

impl FileDescriptor for Watched {
    fn fileno(&self) -> RawFd {
        self.fd
    }

    fn do_read(&self, reactor: &Reactor) -> Result<(), Reason> {
        self.reads.set(self.reads.get() + 1);
        let hook = self.on_read.borrow_mut().take();
        if let Some(mut hook) = hook {
            let r = hook(reactor, self);
            self.on_read.borrow_mut().get_or_insert(hook);
            return r;
        }
        let mut buf = [0u8; 4096];
        use std::io::Read;
        let r = self.sock.borrow_mut().as_mut().map(|s| s.read(&mut buf));
        match r {
            Some(Ok(0)) => Err(Reason::ConnectionDone),
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Some(Err(e)) => Err(Reason::lost(e)),
            None => Err(Reason::ConnectionDone),
        }
    }

    fn do_write(&self, reactor: &Reactor) -> Result<(), Reason> {
        self.writes.set(self.writes.get() + 1);
        reactor.remove_writer(self);
        Ok(())
    }

    fn connection_lost(&self, _: &Reactor, reason: Reason) {
        self.lost.borrow_mut().push(format!("{reason:?}"));
        self.close();
    }
}

fn pair() -> (Rc<Watched>, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    (Watched::new(a), b)
}

reactor_test! {
    fn timers_fire_in_deadline_then_scheduling_order(reactor) {
        let log = Rc::new(RefCell::new(Vec::new()));
        for (i, d) in [30u64, 10, 20, 10, 0, 10].into_iter().enumerate() {
            let log = log.clone();
            reactor.call_later(ms(d), move |_| log.borrow_mut().push(i));
        }
        reactor.call_later(ms(40), |r| r.stop().unwrap());
        reactor.run().unwrap();
        assert_eq!(*log.borrow(), [4, 1, 3, 5, 2, 0]);
    }

    fn timers_never_fire_early(reactor) {
        let early = Rc::new(Cell::new(0));
        let start = Instant::now();
        for i in 0..60u64 {
            let delay = Duration::from_micros(i * 397 % 15_000);
            let due = start + delay;
            let early = early.clone();
            reactor.call_later(delay, move |_| {
                if Instant::now() < due {
                    early.set(early.get() + 1);
                }
            });
        }
        reactor.call_later(ms(20), |r| r.stop().unwrap());
        reactor.run().unwrap();
        assert_eq!(early.get(), 0);
    }

    fn huge_delays_neither_overflow_nor_fire(reactor) {
        let never = reactor.call_later(Duration::MAX, |_| panic!("must not run"));
        let far = reactor.call_later(Duration::from_secs(u64::MAX / 2), |_| panic!("must not run"));
        assert!(never.time() > Instant::now() + Duration::from_secs(3600 * 24 * 365));
        never.delay(Duration::MAX).unwrap();
        reactor.call_later(ms(1), |r| r.stop().unwrap());
        reactor.run().unwrap();
        assert!(never.active() && far.active());
        never.cancel().unwrap();
        far.cancel().unwrap();
    }

    fn cancel_reset_and_schedule_from_inside_callbacks(reactor) {
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        let b = reactor.call_later(ms(5), move |_| l.borrow_mut().push("b"));
        let l = log.clone();
        let c = reactor.call_later(ms(5), move |_| l.borrow_mut().push("c"));
        let l = log.clone();
        let self_ref: Rc<RefCell<Option<torsion::DelayedCall>>> = Rc::default();
        let me = self_ref.clone();
        let a = reactor.call_later(ms(1), move |r| {
            l.borrow_mut().push("a");
            b.cancel().unwrap();
            c.reset(ms(10)).unwrap();
            // Our own handle: already called.
            assert_eq!(
                me.borrow().as_ref().unwrap().cancel(),
                Err(torsion::DelayedCallError::AlreadyCalled)
            );
            let l = l.clone();
            r.call_later(Duration::ZERO, move |_| l.borrow_mut().push("d"));
        });
        *self_ref.borrow_mut() = Some(a);
        reactor.call_later(ms(30), |r| r.stop().unwrap());
        reactor.run().unwrap();
        assert_eq!(*log.borrow(), ["a", "d", "c"]);
        self_ref.borrow_mut().take();
    }

    fn call_soon_queued_while_draining_runs_next_iteration(reactor) {
        let n = Rc::new(Cell::new(0));
        let stop = Rc::new(Cell::new(false));
        fn again(r: &Reactor, n: Rc<Cell<u32>>, stop: Rc<Cell<bool>>) {
            n.set(n.get() + 1);
            if !stop.get() {
                r.call_soon(move |r| again(r, n, stop));
            }
        }
        let (n2, s2) = (n.clone(), stop.clone());
        reactor.call_soon(move |r| again(r, n2, s2));
        for i in 1..=5 {
            reactor.iterate(Some(Duration::ZERO)).unwrap();
            assert_eq!(n.get(), i);
            assert_eq!(reactor.queued_calls(), 1);
        }
        // Leave the reactor clean: the last queued call runs and does not re-queue.
        stop.set(true);
        reactor.iterate(Some(Duration::ZERO)).unwrap();
        assert_eq!(n.get(), 6);
        assert_eq!(reactor.queued_calls(), 0);
    }

    fn stop_semantics_follow_twisted(reactor) {
        assert!(matches!(reactor.stop(), Err(Error::ReactorNotRunning)));
        let log = Rc::new(RefCell::new(Vec::new()));
        for (phase, name) in [(Phase::After, "after"), (Phase::Before, "before"), (Phase::During, "during")] {
            let l = log.clone();
            reactor.add_system_event_trigger(phase, SystemEvent::Shutdown, move |_| l.borrow_mut().push(name));
        }
        let l = log.clone();
        let removed = reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move |_| l.borrow_mut().push("removed"));
        assert!(reactor.remove_system_event_trigger(removed));
        let l = log.clone();
        reactor.call_when_running(move |r| {
            l.borrow_mut().push("running");
            let l2 = l.clone();
            // Already running: runs at once.
            r.call_when_running(move |_| l2.borrow_mut().push("at once"));
            l.borrow_mut().push("after at once");
            assert!(matches!(r.run(), Err(Error::ReactorAlreadyRunning)));
            r.stop().unwrap();
            assert!(matches!(r.stop(), Err(Error::ReactorNotRunning)));
        });
        reactor.run().unwrap();
        assert_eq!(*log.borrow(), ["running", "at once", "after at once", "before", "during", "after"]);
        assert!(matches!(reactor.run(), Err(Error::ReactorNotRestartable)));
    }

    fn shutdown_disconnects_remaining_descriptors(reactor) {
        let (w, _peer) = pair();
        reactor.add_reader(w.clone()).unwrap();
        reactor.call_later(ms(1), |r| r.stop().unwrap());
        reactor.run().unwrap();
        assert_eq!(*w.lost.borrow(), ["ReactorShutdown"]);
        assert_eq!(reactor.descriptor_count(), 0);
    }

    fn reader_sees_data_eof_and_connection_lost_once(reactor) {
        let (w, mut peer) = pair();
        reactor.add_reader(w.clone()).unwrap();
        std::io::Write::write_all(&mut peer, b"hello").unwrap();
        drop(peer);
        for _ in 0..10 {
            reactor.iterate(Some(ms(100))).unwrap();
            if !w.lost.borrow().is_empty() {
                break;
            }
        }
        assert_eq!(*w.lost.borrow(), ["ConnectionDone"]);
        assert!(w.reads.get() >= 2);
        assert_eq!(reactor.descriptor_count(), 0);
    }

    fn writer_and_reader_on_one_descriptor(reactor) {
        let (w, _peer) = pair();
        reactor.add_writer(w.clone()).unwrap();
        reactor.add_reader(w.clone()).unwrap();
        reactor.iterate(Some(ms(100))).unwrap();
        assert_eq!(w.writes.get(), 1); // do_write removed the writer
        reactor.iterate(Some(Duration::ZERO)).unwrap();
        assert_eq!(w.writes.get(), 1);
        assert_eq!(reactor.descriptor_count(), 1);
        reactor.remove_reader(&*w);
        assert_eq!(reactor.descriptor_count(), 0);
        reactor.remove_reader(&*w); // removing twice is harmless
    }

    fn panics_never_stop_the_loop(reactor) {
        let survived = Rc::new(Cell::new(0));
        reactor.call_later(ms(1), |_| panic!("timer boom"));
        reactor.call_soon(|_| panic!("call boom"));
        reactor.handle().call_from_thread(|_| panic!("thread call boom")).unwrap();
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, |_| panic!("trigger boom"));
        let (bad, mut bad_peer) = pair();
        *bad.on_read.borrow_mut() = Some(Box::new(|_, _| panic!("do_read boom")));
        reactor.add_reader(bad.clone()).unwrap();
        std::io::Write::write_all(&mut bad_peer, b"x").unwrap();
        let (good, good_peer) = pair();
        let good_peer = Rc::new(RefCell::new(good_peer));
        reactor.add_reader(good.clone()).unwrap();
        let s = survived.clone();
        reactor.call_later(ms(5), move |_| s.set(s.get() + 1));
        let s = survived.clone();
        let gp = good_peer.clone();
        reactor.call_later(ms(20), move |r| {
            s.set(s.get() + 1);
            std::io::Write::write_all(&mut *gp.borrow_mut(), b"y").unwrap();
            let r2 = r.clone();
            r.call_later(ms(10), move |_| r2.stop().unwrap());
        });
        let logs = capture_logs(|| reactor.run().unwrap());
        for msg in ["timer boom", "call boom", "thread call boom", "trigger boom", "do_read boom"] {
            assert!(logs.contains(msg), "{msg:?} not logged in {logs}");
        }
        assert_eq!(survived.get(), 2);
        assert_eq!(*bad.lost.borrow(), [r#"Panicked(Panicked("do_read boom"))"#]);
        assert!(good.reads.get() >= 1);
        assert_eq!(*good.lost.borrow(), ["ReactorShutdown"]);
        drop(bad_peer);
    }

    fn stale_events_never_reach_a_reused_fd(reactor) {
        // Two readable descriptors in one batch: whichever runs first removes the other, closes
        // it and registers a fresh descriptor on the same fd number. The batch's event for the
        // removed one must reach neither it nor the newcomer.
        let (x, mut xp) = pair();
        let (y, mut yp) = pair();
        let newcomers: Newcomers = Rc::default();
        let first = Rc::new(Cell::new(None::<RawFd>));
        for (me, other) in [(x.clone(), y.clone()), (y.clone(), x.clone())] {
            let newcomers = newcomers.clone();
            let first = first.clone();
            let other = Rc::downgrade(&other);
            *me.on_read.borrow_mut() = Some(Box::new(move |r, me| {
                if first.get().is_none() {
                    first.set(Some(me.fd));
                    let other = other.upgrade().unwrap();
                    r.remove_reader(&*other);
                    let old_fd = other.fd;
                    other.close();
                    let (n, np) = pair();
                    assert_eq!(n.fd, old_fd, "the kernel reuses the lowest free fd number");
                    r.add_reader(n.clone()).unwrap();
                    newcomers.borrow_mut().push((n, np));
                }
                Ok(())
            }));
            let _ = me;
        }
        reactor.add_reader(x.clone()).unwrap();
        reactor.add_reader(y.clone()).unwrap();
        std::io::Write::write_all(&mut xp, b"x").unwrap();
        std::io::Write::write_all(&mut yp, b"y").unwrap();
        reactor.iterate(Some(ms(100))).unwrap();
        let (n, _np) = newcomers.borrow_mut().pop().unwrap();
        assert_eq!(n.reads.get(), 0, "the newcomer got an event meant for the old descriptor");
        assert_eq!(x.reads.get() + y.reads.get(), 1);
        let survivor = if first.get() == Some(x.fd) { &x } else { &y };
        reactor.remove_reader(&**survivor);
        reactor.remove_reader(&*n);
        x.on_read.borrow_mut().take();
        y.on_read.borrow_mut().take();
    }

    fn select_refuses_descriptors_above_fd_setsize(reactor) {
        struct Far;
        impl FileDescriptor for Far {
            fn fileno(&self) -> RawFd { 1024 }
        }
        let far = Rc::new(Far);
        let r = reactor.add_reader(far.clone());
        if reactor.backend() == Some(Backend::Select) {
            let err = r.unwrap_err();
            assert!(matches!(err, Error::FdOutOfRange { fd: 1024, limit: 1024, .. }), "{err}");
            assert!(err.to_string().contains("use the poll or epoll backend"));
        } else if r.is_ok() {
            reactor.remove_reader(&*far);
        }
        assert_eq!(reactor.descriptor_count(), 0);
    }

    fn calls_from_threads_run_once_in_fifo_order(reactor) {
        const THREADS: usize = 8;
        const CALLS: usize = 100_000;
        let seen = Rc::new(RefCell::new(vec![0usize; THREADS]));
        let done = Arc::new(AtomicUsize::new(0));
        let mut joins = Vec::new();
        for t in 0..THREADS {
            let h = reactor.handle();
            let done = done.clone();
            joins.push(std::thread::spawn(move || {
                for i in 0..CALLS {
                    let done = done.clone();
                    h.call_from_thread(move |r| {
                        SEEN.with(|s| {
                            let mut s = s.borrow_mut();
                            assert_eq!(s[t], i, "thread {t}: out of order");
                            s[t] += 1;
                        });
                        if done.fetch_add(1, Ordering::Relaxed) + 1 == THREADS * CALLS {
                            r.stop().unwrap();
                        }
                    }).unwrap();
                }
            }));
        }
        thread_local! { static SEEN: RefCell<Vec<usize>> = RefCell::new(vec![0; 8]); }
        SEEN.with(|s| *s.borrow_mut() = vec![0; THREADS]);
        reactor.run().unwrap();
        for j in joins { j.join().unwrap(); }
        SEEN.with(|s| assert_eq!(*s.borrow(), vec![CALLS; THREADS]));
        assert_eq!(done.load(Ordering::Relaxed), THREADS * CALLS);
        drop(seen);
    }

    fn a_call_from_a_thread_wakes_an_idle_reactor_promptly(reactor) {
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let h = reactor.handle();
        let l = latencies.clone();
        let sender = std::thread::spawn(move || {
            for _ in 0..5 {
                std::thread::sleep(ms(30));
                let sent = Instant::now();
                let l = l.clone();
                h.call_from_thread(move |_| l.lock().unwrap().push(sent.elapsed())).unwrap();
            }
            std::thread::sleep(ms(30));
            h.stop().unwrap();
        });
        reactor.run().unwrap();
        sender.join().unwrap();
        let best = latencies.lock().unwrap().iter().min().copied().unwrap();
        // The wake-up costs microseconds; 10 ms is a generous margin for a noisy machine.
        assert!(best < ms(10), "best wake-up latency {best:?}");
    }

    fn sub_millisecond_timers_do_not_sleep_a_whole_millisecond(reactor) {
        let best = Rc::new(Cell::new(Duration::MAX));
        fn shot(r: &Reactor, best: Rc<Cell<Duration>>, left: u32) {
            let start = Instant::now();
            r.call_later(Duration::from_micros(200), move |r| {
                let took = start.elapsed();
                assert!(took >= Duration::from_micros(200));
                best.set(best.get().min(took));
                if left == 0 { r.stop().unwrap() } else { shot(r, best, left - 1) }
            });
        }
        shot(reactor, best.clone(), 30);
        reactor.run().unwrap();
        assert!(best.get() < Duration::from_micros(900), "best 200 µs timer took {:?}", best.get());
    }

    fn idle_reactor_uses_no_cpu(reactor) {
        let far = reactor.call_later(Duration::from_secs(5), |_| panic!("must not fire"));
        let cpu = Rc::new(Cell::new(Duration::ZERO));
        let h = reactor.handle();
        let observer = std::thread::spawn(move || {
            std::thread::sleep(ms(1000));
            h.stop().unwrap();
        });
        let before = torsion::testing::thread_cpu_time().unwrap();
        reactor.run().unwrap();
        cpu.set(torsion::testing::thread_cpu_time().unwrap() - before);
        observer.join().unwrap();
        far.cancel().unwrap();
        // Under 1% of a core over the second observed.
        assert!(cpu.get() < ms(10), "idle reactor used {:?} of CPU in 1 s", cpu.get());
    }

    fn a_signal_storm_never_surfaces_eintr(reactor) {
        torsion::testing::install_noop_signal_handler(libc_sigusr1()).unwrap();
        let (w, _peer) = pair();
        reactor.add_reader(w.clone()).unwrap();
        let start = Instant::now();
        let fired = Rc::new(Cell::new(None));
        let f = fired.clone();
        reactor.call_later(ms(300), move |r| {
            f.set(Some(start.elapsed()));
            r.remove_reader(&*w);
            r.stop().unwrap();
        });
        let (result, sent) =
            torsion::testing::signal_storm(libc_sigusr1(), ms(1), || reactor.run()).unwrap();
        result.unwrap();
        assert!(fired.get().unwrap() >= ms(300));
        assert!(sent > 50, "only {sent} signals sent");
    }

    fn spawned_futures_run_and_cancel(reactor) {
        struct Yield(bool);
        impl std::future::Future for Yield {
            type Output = ();
            fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
                if self.0 { return std::task::Poll::Ready(()); }
                self.0 = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        }
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        let t = reactor.spawn_local(async move {
            l.borrow_mut().push(1);
            Yield(false).await;
            l.borrow_mut().push(2);
        });
        assert_eq!(*log.borrow(), [1]); // polled synchronously up to the first await
        assert!(!t.is_finished());
        let l = log.clone();
        let never = reactor.spawn_local(async move {
            std::future::pending::<()>().await;
            l.borrow_mut().push(99);
        });
        reactor.iterate(Some(ms(100))).unwrap();
        reactor.iterate(Some(Duration::ZERO)).unwrap();
        assert_eq!(*log.borrow(), [1, 2]);
        assert!(t.is_finished());
        assert_eq!(reactor.task_count(), 1);
        never.cancel();
        assert!(never.is_finished());
        // A panicking task is dropped and logged; the loop lives.
        reactor.spawn_local(async { panic!("task boom") });
        assert_eq!(reactor.task_count(), 0);
    }
}

/// Runs `f` with a tracing subscriber that writes to a buffer, and returns what was logged.
fn capture_logs(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let b = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || b.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let out = buf.0.lock().unwrap().clone();
    String::from_utf8(out).unwrap()
}

fn libc_sigusr1() -> i32 {
    10 // SIGUSR1 on Linux (x86, arm, riscv)
}

#[test]
fn unknown_backend_in_environment_is_a_clear_error() {
    let err = "iocp".parse::<Backend>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown reactor backend \"iocp\": valid backends are select, poll, epoll and io_uring"
    );
}

#[test]
fn handle_after_drop_reports_reactor_gone() {
    let reactor = Reactor::with_backend(Backend::Epoll).unwrap();
    let h = reactor.handle();
    drop(reactor);
    assert!(matches!(
        h.call_from_thread(|_| {}),
        Err(Error::ReactorGone)
    ));
}

reactor_test! {
    fn a_descriptor_closed_while_registered_does_not_stop_the_loop(reactor) {
        let (w, _peer) = pair();
        reactor.add_reader(w.clone()).unwrap();
        // A user bug: the fd is closed before it is deregistered.
        w.close();
        let fired = Rc::new(Cell::new(false));
        let f = fired.clone();
        reactor.call_later(ms(20), move |_| f.set(true));
        let start = Instant::now();
        while !fired.get() {
            assert!(start.elapsed() < Duration::from_secs(10));
            reactor.iterate(Some(ms(5))).unwrap(); // never an error
        }
        if reactor.backend() == Some(Backend::Epoll) {
            // epoll forgets a closed fd by itself: no event, so the registration stays.
            reactor.remove_reader(&*w);
        } else {
            // select and poll report it: the descriptor is dropped and told why.
            assert_eq!(reactor.descriptor_count(), 0);
            assert_eq!(w.lost.borrow().len(), 1, "{:?}", w.lost.borrow());
        }
    }
}

/// Dropping the handle a constructor returned shuts the reactor down even while clones of it
/// are held by a timer, a queued call, a task and a watched descriptor (each a cycle through the
/// reactor): the descriptor is told, everything is dropped, the clones with it, and no
/// descriptor of the reactor (poller, waker, ring) stays open.
#[test]
fn dropping_the_owner_while_clones_remain_closes_everything() {
    for backend in Backend::ALL {
        if !backend.available() {
            continue;
        }
        let _serial = torsion::testing::serial();
        let check = torsion::testing::LeakCheck::new();
        let reactor = Reactor::with_backend(backend).unwrap();
        let r = reactor.clone();
        reactor.call_later(Duration::from_secs(3600), move |_| drop(r));
        let r = reactor.clone();
        reactor.call_soon(move |_| drop(r));
        let r = reactor.clone();
        let task = reactor.spawn_local(async move {
            std::future::pending::<()>().await;
            drop(r);
        });
        let (watched, peer) = pair();
        let r = reactor.clone();
        *watched.on_read.borrow_mut() = Some(Box::new(move |_, _| {
            let _ = &r;
            Ok(())
        }));
        reactor.add_reader(watched.clone()).unwrap();
        let clone = reactor.clone();
        drop(reactor);
        assert_eq!(
            *watched.lost.borrow(),
            ["ReactorShutdown"],
            "{backend}: the watched descriptor was not told"
        );
        assert!(watched.on_read.borrow().is_some());
        // A clone kept by the user is a handle on an emptied reactor.
        assert_eq!(clone.descriptor_count(), 0, "{backend}");
        assert!(clone.delayed_calls().is_empty(), "{backend}");
        assert_eq!(clone.task_count(), 0, "{backend}");
        drop((clone, task, watched, peer));
        check.check(Reactor::with_backend(backend).unwrap());
    }
}
