//! Futures and Deferreds both ways: awaiting a Deferred, and running a future as a Deferred
//! with cancellation crossing in both directions.
//!
//! These tests run futures on a minimal single-threaded executor defined here (implementing
//! `LocalSpawn`), so they do not depend on the reactor.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use torsion::defer::{
    ensure_deferred, Cancelled, Deferred, Failure, LocalFuture, LocalSpawn, Panicked,
};
use torsion::testing::{failure_result_of as failure, success_result_of as value};

#[derive(Debug)]
struct Boom;
impl fmt::Display for Boom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("boom")
    }
}
impl std::error::Error for Boom {}

/// A minimal local executor: polls a spawned future once at once, then whenever woken, in
/// `run_until_stalled`.
#[derive(Clone, Default)]
struct MiniExec {
    inner: Rc<ExecInner>,
}

#[derive(Default)]
struct ExecInner {
    tasks: RefCell<HashMap<usize, Option<LocalFuture>>>,
    ready: Arc<Mutex<Vec<usize>>>,
    next: Cell<usize>,
}

struct TaskWaker {
    id: usize,
    ready: Arc<Mutex<Vec<usize>>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.ready.lock().unwrap().push(self.id);
    }
}

impl ExecInner {
    fn poll_task(&self, id: usize) {
        let fut = self.tasks.borrow_mut().get_mut(&id).and_then(Option::take);
        let Some(mut fut) = fut else { return };
        let waker = Waker::from(Arc::new(TaskWaker {
            id,
            ready: self.ready.clone(),
        }));
        let mut cx = Context::from_waker(&waker);
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(()) => {
                self.tasks.borrow_mut().remove(&id);
            }
            Poll::Pending => {
                if let Some(slot) = self.tasks.borrow_mut().get_mut(&id) {
                    *slot = Some(fut);
                    return;
                }
                drop(fut); // cancelled while it ran
            }
        }
    }
}

impl MiniExec {
    fn run_until_stalled(&self) {
        loop {
            let ids = std::mem::take(&mut *self.inner.ready.lock().unwrap());
            if ids.is_empty() {
                return;
            }
            for id in ids {
                self.inner.poll_task(id);
            }
        }
    }

    fn tasks(&self) -> usize {
        self.inner.tasks.borrow().len()
    }
}

impl LocalSpawn for MiniExec {
    fn spawn_local_boxed(&self, fut: LocalFuture) -> Box<dyn FnOnce()> {
        let id = self.inner.next.get();
        self.inner.next.set(id + 1);
        self.inner.tasks.borrow_mut().insert(id, Some(fut));
        self.inner.poll_task(id);
        let weak: Weak<ExecInner> = Rc::downgrade(&self.inner);
        Box::new(move || {
            if let Some(inner) = weak.upgrade() {
                let fut = inner.tasks.borrow_mut().remove(&id);
                drop(fut);
            }
        })
    }
}

/// Sets a flag when dropped.
struct DropFlag(Rc<Cell<bool>>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

#[test]
fn await_a_deferred_inside_a_future() {
    let exec = MiniExec::default();
    let (a, fire_a) = Deferred::<u32>::new();
    let d = ensure_deferred(&exec, async move {
        let n = a.await?;
        let s = torsion::defer::succeed(format!("{n}!")).await?;
        Ok(s)
    });
    assert!(!d.called());
    fire_a.callback(5).unwrap();
    exec.run_until_stalled();
    assert_eq!(value(d), "5!");
    assert_eq!(exec.tasks(), 0);
}

#[test]
fn synchronous_future_fires_at_once() {
    let exec = MiniExec::default();
    let d = Deferred::from_future(&exec, async { Ok(1) });
    assert_eq!(value(d), 1);
}

#[test]
fn failure_and_panic_inside_future_become_failures() {
    let exec = MiniExec::default();
    let d = ensure_deferred(&exec, async { Err::<(), _>(Failure::new(Boom)) });
    assert!(failure(d).check::<Boom>());

    let d = ensure_deferred(&exec, async {
        let failed = torsion::defer::fail::<u8>(Boom);
        let v = failed.await?; // `?` re-raises the awaited Deferred's failure
        Ok(v)
    });
    assert!(failure(d).check::<Boom>());

    let d = ensure_deferred(&exec, async {
        if true {
            panic!("in a future");
        }
        Ok(())
    });
    assert_eq!(
        failure(d).downcast_ref::<Panicked>().unwrap().0,
        "in a future"
    );
}

#[test]
fn cancelling_the_deferred_drops_the_future_and_cancels_what_it_awaits() {
    let exec = MiniExec::default();
    let dropped = Rc::new(Cell::new(false));
    let inner_cancelled = Rc::new(Cell::new(false));
    let ic = inner_cancelled.clone();
    let (inner, _fire) = Deferred::<u32>::with_canceller(move |_| ic.set(true));
    let guard = DropFlag(dropped.clone());
    let d = ensure_deferred(&exec, async move {
        let _guard = guard;
        let v = inner.await?;
        Ok(v)
    });
    assert_eq!(exec.tasks(), 1);
    d.cancel();
    assert!(dropped.get(), "the future was dropped");
    assert!(inner_cancelled.get(), "the awaited Deferred was cancelled");
    assert_eq!(exec.tasks(), 0);
    assert!(failure(d).check::<Cancelled>());
}

#[test]
fn dropping_an_awaiting_future_cancels_the_deferred() {
    let (d, r) = Deferred::<u8>::new();
    let fut = d.into_future();
    drop(fut);
    assert!(r.called(), "cancelled by the drop");

    // A future dropped after the Deferred fired does not cancel anything.
    let (d, r) = Deferred::<u8>::new();
    let mut fut = Box::pin(d.into_future());
    r.callback(3).unwrap();
    let waker = Waker::from(Arc::new(TaskWaker {
        id: 0,
        ready: Arc::default(),
    }));
    let mut cx = Context::from_waker(&waker);
    assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(3))));
}

#[test]
fn awaiting_wakes_the_task_when_the_deferred_fires() {
    let exec = MiniExec::default();
    let steps = Rc::new(RefCell::new(Vec::new()));
    let (a, ra) = Deferred::<u8>::new();
    let (b, rb) = Deferred::<u8>::new();
    let s = steps.clone();
    let d = ensure_deferred(&exec, async move {
        s.borrow_mut().push("start");
        let x = a.await?;
        s.borrow_mut().push("a");
        let y = b.await?;
        s.borrow_mut().push("b");
        Ok(x + y)
    });
    assert_eq!(*steps.borrow(), ["start"]);
    rb.callback(2).unwrap(); // fired early: no wake needed later
    exec.run_until_stalled();
    assert_eq!(*steps.borrow(), ["start"]);
    ra.callback(1).unwrap();
    exec.run_until_stalled();
    assert_eq!(*steps.borrow(), ["start", "a", "b"]);
    assert_eq!(value(d), 3);
}

#[test]
fn a_callback_may_return_the_deferred_of_a_future() {
    let exec = MiniExec::default();
    let (gate, open) = Deferred::<u8>::new();
    let e = exec.clone();
    let d = torsion::defer::succeed(10u8).add_callback_deferred(move |n| {
        ensure_deferred(&e, async move {
            let g = gate.await?;
            Ok(n + g)
        })
    });
    assert!(d.is_waiting());
    open.callback(1).unwrap();
    exec.run_until_stalled();
    assert_eq!(value(d), 11);
}

#[test]
fn into_deferred_takes_a_deferred_or_a_future() {
    use torsion::defer::IntoDeferred;
    let exec = MiniExec::default();
    let d = torsion::defer::succeed(1).into_deferred(&exec);
    assert_eq!(value(d), 1);
    let d = async { Ok(2) }.into_deferred(&exec);
    assert_eq!(value(d), 2);
}

// ---------------------------------------------------------------------------------------------
// On the real reactor.

use std::time::Duration;
use torsion::task::{defer_later, react};
use torsion::Reactor;

#[test]
fn ensure_deferred_on_the_reactor() {
    let reactor = Reactor::new().unwrap();
    let r = reactor.clone();
    let d = ensure_deferred(&reactor, async move {
        let a = defer_later(&r, Duration::from_millis(1), || Ok(20)).await?;
        let b = defer_later(&r, Duration::ZERO, || Ok(22)).await?;
        Ok(a + b)
    });
    let r = reactor.clone();
    let d = d.add_both(move |res| {
        r.stop().unwrap();
        res
    });
    reactor.run().unwrap();
    assert_eq!(value(d), 42);
}

thread_local! {
    static GATE: RefCell<Option<torsion::defer::Resolver<u32>>> = const { RefCell::new(None) };
}

#[test]
fn another_thread_fires_the_awaited_deferred_through_the_reactor() {
    let reactor = Reactor::new().unwrap();
    let handle = reactor.handle();
    let (gate, fire) = Deferred::<u32>::new();
    // Deferreds are !Send: the reactor thread keeps the resolver, and the other thread asks the
    // reactor to fire it; the fire wakes the task awaiting the Deferred.
    GATE.with(|g| *g.borrow_mut() = Some(fire));
    let r = reactor.clone();
    let d = ensure_deferred(&reactor, async move { gate.await }).add_both(move |res| {
        r.stop().unwrap();
        res
    });
    assert!(!d.called());
    let t = std::thread::spawn(move || {
        handle
            .call_from_thread(|_r: &Reactor| {
                let fire = GATE.with(|g| g.borrow_mut().take()).unwrap();
                fire.callback(7).unwrap();
            })
            .unwrap();
    });
    reactor.run().unwrap();
    t.join().unwrap();
    assert_eq!(value(d), 7);
}

#[test]
fn a_timeout_on_a_future_drops_it() {
    let reactor = Reactor::new().unwrap();
    let dropped = Rc::new(Cell::new(false));
    let guard = DropFlag(dropped.clone());
    let (never, _fire) = Deferred::<()>::new();
    let d = ensure_deferred(&reactor, async move {
        let _guard = guard;
        never.await
    })
    .add_timeout(Duration::from_millis(5), &reactor);
    let r = reactor.clone();
    let d = d.add_both(move |res| {
        r.stop().unwrap();
        res
    });
    reactor.run().unwrap();
    assert!(dropped.get());
    assert!(failure(d).check::<torsion::defer::TimedOut>());
    assert_eq!(reactor.task_count(), 0);
}

#[test]
fn react_returns_success_when_main_succeeds() {
    let code = react(|reactor| async move {
        defer_later(&reactor, Duration::from_millis(1), || Ok(())).await
    });
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    // A Deferred-returning main, already fired before the reactor runs.
    let code = react(|_reactor| torsion::defer::succeed(5));
    assert_eq!(code, std::process::ExitCode::SUCCESS);
}

/// Runs in a child process (see `react_exits_non_zero_and_prints_the_failure`).
#[test]
fn react_child() {
    if std::env::var("TORSION_REACT_CHILD").is_err() {
        return;
    }
    let code = react(|reactor| async move {
        defer_later(&reactor, Duration::from_millis(1), || Ok(())).await?;
        Err::<(), _>(Failure::new(Boom))
    });
    std::process::exit(if code == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    });
}

#[test]
fn react_exits_non_zero_and_prints_the_failure() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "react_child", "--nocapture", "--test-threads=1"])
        .env("TORSION_REACT_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("main function encountered error"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Boom") && stderr.contains("boom"),
        "{stderr}"
    );
}
