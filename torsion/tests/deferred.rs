//! One test per numbered Deferred semantic of the issue (named `semantic_N_...`), plus a few
//! edge cases around each.

use std::cell::RefCell;
use std::fmt;
use std::io::Write;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use torsion::defer::{
    fail, gather_results, maybe_deferred, race, succeed, AlreadyCalled, Cancelled, Deferred,
    DeferredList, DeferredLock, DeferredQueue, DeferredSemaphore, Failure, FailureGroup,
    FirstError, ListResult, Panicked, QueueOverflow, QueueUnderflow, Step, TimedOut,
};
use torsion::testing::Clock;
use torsion::testing::{failure_result_of as failure, success_result_of as value};

#[derive(Debug, PartialEq)]
struct Boom(&'static str);
impl fmt::Display for Boom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "boom: {}", self.0)
    }
}
impl std::error::Error for Boom {}

#[derive(Debug)]
struct Other;
impl fmt::Display for Other {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("other")
    }
}
impl std::error::Error for Other {}

type Log = Rc<RefCell<Vec<String>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

fn push(l: &Log, s: impl Into<String>) {
    l.borrow_mut().push(s.into());
}

/// Runs `f` in a thread with a small stack (the chain must run iteratively).
fn small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

/// A tracing writer into a shared buffer, to check what gets logged.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
    type Writer = Buf;
    fn make_writer(&'a self) -> Buf {
        self.clone()
    }
}
impl Buf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn capture_logs(f: impl FnOnce()) -> String {
    let buf = Buf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(buf.clone())
        .with_max_level(tracing::Level::TRACE)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    buf.text()
}

// 1. A Deferred fires once, by callback(value) or errback(failure); a second fire is an
//    AlreadyCalled error.
#[test]
fn semantic_1_fires_once_second_fire_is_already_called() {
    let (d, fire) = Deferred::<i32>::new();
    assert!(!d.called() && !fire.called());
    fire.callback(1).unwrap();
    assert!(d.called() && fire.called());
    assert_eq!(fire.callback(2), Err(AlreadyCalled));
    assert_eq!(fire.errback(Boom("late")), Err(AlreadyCalled));
    assert_eq!(value(d), 1);

    let (d, r) = Deferred::<i32>::new();
    r.errback(Boom("first")).unwrap();
    assert_eq!(r.callback(3), Err(AlreadyCalled));
    assert_eq!(failure(d).downcast_ref::<Boom>(), Some(&Boom("first")));

    // AlreadyCalled is itself an error that can travel as a Failure.
    let f = Failure::new(AlreadyCalled);
    assert!(f.check::<AlreadyCalled>());
}

// 2. add_callbacks adds one stage; add_callback (cb, pass-through), add_errback (pass-through,
//    eb), add_both (f, f). A failing callback's failure goes to the NEXT stage's errback; an
//    errback returning a value switches back to callbacks.
#[test]
fn semantic_2_stages_and_failure_goes_to_next_stage() {
    let l = log();
    let (l1, l2, l3, l4, l5, l6) = (
        l.clone(),
        l.clone(),
        l.clone(),
        l.clone(),
        l.clone(),
        l.clone(),
    );
    let (d, fire) = Deferred::<i32>::new();
    let d = d
        .add_callbacks(
            move |v| {
                push(&l1, format!("cb1 {v}"));
                Err::<i32, _>(Failure::new(Boom("cb1")))
            },
            move |_f| {
                push(&l2, "eb1 (must not run: same stage)");
                Ok(0)
            },
        )
        .add_callback(move |v| {
            push(&l3, format!("cb2 {v} (must not run: failure)"));
            Ok(v)
        })
        .add_errback(move |f| {
            push(&l4, format!("eb3 {}", f.message()));
            Ok(7) // switches back to callbacks
        })
        .add_errback(move |_f| {
            push(&l5, "eb4 (must not run: value)");
            Ok(0)
        })
        .add_both(move |r: Result<i32, Failure>| {
            push(&l6, format!("both {:?}", r.as_ref().ok()));
            r.map(|v| v * 2)
        });
    fire.callback(5).unwrap();
    assert_eq!(*l.borrow(), ["cb1 5", "eb3 boom: cb1", "both Some(7)"]);
    assert_eq!(value(d), 14);

    // add_both sees failures too, and an errback may re-raise with `?` after trap.
    let d = fail::<i32>(Boom("x"))
        .add_errback(|f| {
            f.trap::<Other>()?; // not an Other: re-raised
            Ok(1)
        })
        .add_both(|r: Result<i32, Failure>| match r {
            Err(f) if f.check::<Boom>() => Ok(-1),
            r => r,
        });
    assert_eq!(value(d), -1);

    // A callback can use `?` on any error type.
    let d = succeed("12x".to_string()).add_callback(|s| {
        let n: i32 = s.parse()?;
        Ok(n)
    });
    assert!(failure(d).check::<std::num::ParseIntError>());
}

// 3. Callbacks added after the Deferred fired run at once, synchronously.
#[test]
fn semantic_3_callbacks_added_after_firing_run_at_once() {
    let l = log();
    let d = succeed(1);
    let l1 = l.clone();
    let d = d.add_callback(move |v| {
        push(&l1, format!("ran {v}"));
        Ok(v + 1)
    });
    assert_eq!(*l.borrow(), ["ran 1"]);
    assert!(d.has_result());
    // A callback that adds to the chain it runs in: the new stage runs in the same loop.
    let (d, fire) = Deferred::<i32>::new();
    let d = d.map(|v| v + 1);
    fire.callback(1).unwrap();
    let d = d.map(|v| v * 10);
    assert_eq!(value(d), 20);
}

// 4. A callback that returns a Deferred pauses the chain until that one fires, then the chain
//    goes on with its result.
#[test]
fn semantic_4_returned_deferred_pauses_chain() {
    let l = log();
    let (inner, inner_fire) = Deferred::<String>::new();
    let l1 = l.clone();
    let l2 = l.clone();
    let d = succeed(3)
        .add_callback_deferred(move |_| {
            push(&l1, "returns inner");
            inner
        })
        .add_callback(move |s| {
            push(&l2, format!("after inner: {s}"));
            Ok(s.len())
        });
    assert!(d.called() && d.is_waiting() && !d.has_result());
    assert_eq!(*l.borrow(), ["returns inner"]);
    inner_fire.callback("hello".into()).unwrap();
    assert_eq!(*l.borrow(), ["returns inner", "after inner: hello"]);
    assert_eq!(value(d), 5);

    // An inner failure goes to the outer chain's errbacks; an already fired inner is taken at
    // once (and its failure counts as handled).
    let d = succeed(1)
        .add_callback_deferred(|_| fail::<i32>(Boom("inner")))
        .add_errback(|f| Ok(if f.check::<Boom>() { 99 } else { 0 }));
    assert_eq!(value(d), 99);

    // An inner Deferred whose own chain is still running (it is returned from inside one of its
    // callbacks' side effects) hands over once its stages are done.
    let (inner, inner_fire) = Deferred::<i32>::new();
    let inner = inner
        .map(|v| v + 1)
        .add_callback_deferred(|v| succeed(v * 10));
    let d = succeed(0).add_callback_deferred(move |_| inner);
    assert!(d.is_waiting());
    inner_fire.callback(1).unwrap();
    assert_eq!(value(d), 20);
}

// 4 (continued). 100,000 nested Deferreds and a chain of 100,000 stages run without stack
// overflow.
#[test]
fn semantic_4_deep_nesting_and_long_chain_do_not_overflow() {
    small_stack(|| {
        const N: usize = 100_000;
        // A chain of N stages.
        let (d, fire) = Deferred::<u64>::new();
        let mut d = d;
        for _ in 0..N {
            d = d.add_callback(|v| Ok(v + 1));
        }
        fire.callback(0).unwrap();
        assert_eq!(value(d), N as u64);

        // N nested Deferreds: each one's callback returns the next, each waits in turn, and the
        // innermost fires last: the result travels out through N waiting chains.
        let (innermost, fire_innermost) = Deferred::<u64>::new();
        let mut resolvers = vec![fire_innermost];
        let mut next = innermost;
        for _ in 0..N {
            let (d, fire) = Deferred::<u64>::new();
            resolvers.push(fire);
            let inner = next;
            next = d.add_callback_deferred(move |_| inner.map(|v| v + 1));
        }
        let outermost = next;
        for r in resolvers.iter().rev() {
            if !r.called() {
                r.callback(0).unwrap();
            }
        }
        // resolvers[0] (innermost) was fired last
        assert_eq!(value(outermost), N as u64);

        // The same N-deep nesting, cancelled from the outside: the cancel reaches the innermost.
        let (innermost, inner_r) = Deferred::<u64>::new();
        let mut next = innermost;
        for _ in 0..N {
            let inner = next;
            next = succeed(0u64).add_callback_deferred(move |_| inner);
        }
        next.cancel();
        assert!(inner_r.called());
        assert!(failure(next).check::<Cancelled>());

        // Dropping a long line of waiting Deferreds does not recurse either.
        let (innermost, _fire) = Deferred::<u64>::new();
        let mut next = innermost;
        for _ in 0..N {
            let inner = next;
            next = succeed(0u64).add_callback_deferred(move |_| inner);
        }
        drop(next);

        // Nor does dropping N never-fired Deferreds, each owned by a stage of the previous one.
        let mut next = Deferred::<u64>::new().0;
        for _ in 0..N {
            let inner = next;
            next = Deferred::<u64>::new()
                .0
                .add_callback_deferred(move |_| inner);
        }
        drop(next);
    });
}

// 5. pause / unpause (a counter). cancel() with an optional canceller.
#[test]
fn semantic_5_pause_unpause_and_cancel() {
    // pause/unpause is a counter.
    let l = log();
    let l1 = l.clone();
    let (d, fire) = Deferred::<i32>::new();
    d.pause();
    d.pause();
    let d = d.add_callback(move |v| {
        push(&l1, format!("cb {v}"));
        Ok(v)
    });
    fire.callback(1).unwrap();
    assert!(l.borrow().is_empty());
    d.unpause();
    assert!(l.borrow().is_empty());
    assert_eq!(d.paused(), 1);
    d.unpause();
    assert_eq!(*l.borrow(), ["cb 1"]);
    d.unpause(); // an unpause without pause is ignored
    assert_eq!(d.paused(), 0);
    assert_eq!(value(d), 1);

    // Without a canceller: errbacks with Cancelled; the next late fire is ignored once.
    let (d, r) = Deferred::<i32>::new();
    d.cancel();
    assert!(r.called());
    assert_eq!(r.callback(5), Ok(()), "first late fire ignored");
    assert_eq!(
        r.callback(6),
        Err(AlreadyCalled),
        "second late fire refused"
    );
    assert!(failure(d).check::<Cancelled>());

    // A canceller that does not fire: Cancelled, and late fires are AlreadyCalled.
    let ran = Rc::new(RefCell::new(false));
    let ran2 = ran.clone();
    let (d, r) = Deferred::<i32>::with_canceller(move |_| *ran2.borrow_mut() = true);
    d.cancel();
    assert!(*ran.borrow());
    assert_eq!(r.callback(5), Err(AlreadyCalled));
    assert!(failure(d).check::<Cancelled>());

    // A canceller that fires: its result wins.
    let (d, _fire) = Deferred::<i32>::with_canceller(|r| r.callback(42).unwrap());
    d.cancel();
    assert_eq!(value(d), 42);

    // Cancelling a fired Deferred does nothing.
    let d = succeed(1);
    d.cancel();
    assert_eq!(value(d), 1);

    // Cancelling a Deferred that waits on an inner one cancels the inner one.
    let inner_cancelled = Rc::new(RefCell::new(false));
    let ic = inner_cancelled.clone();
    let (inner, _fire) = Deferred::<i32>::with_canceller(move |_| *ic.borrow_mut() = true);
    let d = succeed(0)
        .add_callback_deferred(move |_| inner)
        .add_errback(|f| Ok(if f.check::<Cancelled>() { -1 } else { 0 }));
    assert!(d.is_waiting());
    d.cancel();
    assert!(*inner_cancelled.borrow());
    assert_eq!(value(d), -1);
}

// 6. add_timeout(duration, clock): cancels on expiry and turns Cancelled into TimedOut.
#[test]
fn semantic_6_add_timeout_turns_cancel_into_timed_out() {
    let clock = Clock::new();
    let d = Deferred::<i32>::new()
        .0
        .add_timeout(Duration::from_secs(5), &clock);
    clock.advance(Duration::from_secs(4));
    assert!(!d.called());
    clock.advance(Duration::from_secs(1));
    let f = failure(d);
    assert_eq!(
        f.downcast_ref::<TimedOut>(),
        Some(&TimedOut {
            after: Duration::from_secs(5)
        })
    );

    // Fired in time: the timer is cancelled and the value passes.
    let (d, r) = Deferred::<i32>::new();
    let d = d.add_timeout(Duration::from_secs(5), &clock);
    assert_eq!(clock.pending(), 1);
    r.callback(3).unwrap();
    assert_eq!(clock.pending(), 0);
    assert_eq!(value(d), 3);

    // A cancel by the user (not the timer) stays Cancelled.
    let d = Deferred::<i32>::new()
        .0
        .add_timeout(Duration::from_secs(5), &clock);
    d.cancel();
    assert!(failure(d).check::<Cancelled>());
    assert_eq!(clock.pending(), 0);

    // A canceller that fires with a value on timeout: the value passes.
    let (d, _fire) = Deferred::<i32>::with_canceller(|r| r.callback(-7).unwrap());
    let d = d.add_timeout(Duration::from_secs(1), &clock);
    clock.advance(Duration::from_secs(1));
    assert_eq!(value(d), -7);
}

// 7. Failure: any error type, check/trap by downcast, message, backtrace; a Deferred dropped with
//    an unhandled failure logs "Unhandled error in Deferred" at drop time.
#[test]
fn semantic_7_failure_and_unhandled_error_logged_at_drop() {
    let f = Failure::new(Boom("a"));
    assert!(f.check::<Boom>());
    assert!(!f.check::<Other>());
    assert_eq!(f.message(), "boom: a");
    assert!(f.type_name().ends_with("Boom"));
    assert_eq!(f.downcast_ref::<Boom>(), Some(&Boom("a")));
    let f = f.trap::<Other>().unwrap_err();
    assert_eq!(*f.trap::<Boom>().unwrap(), Boom("a"));
    let forced = Failure::with_backtrace(Boom("bt"), std::backtrace::Backtrace::force_capture());
    assert_eq!(
        forced.backtrace().status(),
        std::backtrace::BacktraceStatus::Captured
    );
    assert!(forced.traceback().contains("backtrace:"));
    let m = Failure::msg("plain message");
    assert_eq!(m.message(), "plain message");

    // A panic in a callback becomes a Failure.
    let d = succeed(1).add_callback(|_| -> Result<i32, Failure> { panic!("kaboom") });
    let f = failure(d);
    assert_eq!(f.downcast_ref::<Panicked>().unwrap().0, "kaboom");

    // Dropped with an unhandled failure: logged at drop time, with the failure.
    let logs = capture_logs(|| {
        let (d, r) = Deferred::<i32>::new();
        let d = d.add_callback(|_| Err::<i32, _>(Failure::new(Boom("unhandled"))));
        r.callback(1).unwrap();
        drop(d);
        tracing::info!("after first drop");
        drop(r); // the last handle
        tracing::info!("after last drop");
    });
    let first = logs.find("after first drop").unwrap();
    let unhandled = logs.find("Unhandled error in Deferred").unwrap();
    let last = logs.find("after last drop").unwrap();
    assert!(first < unhandled && unhandled < last, "{logs}");
    assert!(logs.contains("boom: unhandled"), "{logs}");

    // A handled failure is not logged, nor is a taken one.
    let logs = capture_logs(|| {
        let d = fail::<i32>(Boom("handled")).add_errback(|_| Ok(0));
        drop(d);
        let d = fail::<i32>(Boom("taken"));
        let _ = d.try_result();
    });
    assert!(!logs.contains("Unhandled"), "{logs}");
}

// 8. succeed, fail, maybe_deferred; DeferredList; gather_results; race; DeferredLock,
//    DeferredSemaphore, DeferredQueue.
#[test]
fn semantic_8_succeed_fail_maybe_deferred() {
    assert_eq!(value(succeed("x")), "x");
    assert!(failure(fail::<()>(Boom("f"))).check::<Boom>());
    assert_eq!(value(maybe_deferred(|| Ok::<_, Failure>(3))), 3);
    assert!(failure(maybe_deferred(|| Err::<i32, _>(Failure::new(Boom("m"))))).check::<Boom>());
    let f = failure(maybe_deferred(|| -> Result<i32, Failure> {
        panic!("in maybe")
    }));
    assert!(f.check::<Panicked>());
    let (inner, r) = Deferred::<i32>::new();
    let d = maybe_deferred(move || inner);
    r.callback(8).unwrap();
    assert_eq!(value(d), 8);
    let d = maybe_deferred(|| Step::Value(1u8));
    assert_eq!(value(d), 1);
}

#[test]
fn semantic_8_deferred_list() {
    // Results in input order, whatever the firing order.
    let (ds, rs): (Vec<Deferred<i32>>, Vec<_>) = (0..3).map(|_| Deferred::new()).unzip();
    let dl = DeferredList::new(ds).consume_errors(true).into_deferred();
    rs[2].callback(2).unwrap();
    rs[0].errback(Boom("zero")).unwrap();
    assert!(!dl.called());
    rs[1].callback(1).unwrap();
    let ListResult::All(all) = value(dl) else {
        panic!("expected All")
    };
    assert!(all[0].as_ref().unwrap_err().check::<Boom>());
    assert_eq!(*all[1].as_ref().unwrap(), 1);
    assert_eq!(*all[2].as_ref().unwrap(), 2);

    // Empty list fires at once with All([]).
    let dl = DeferredList::new(Vec::<Deferred<i32>>::new()).into_deferred();
    assert!(matches!(value(dl), ListResult::All(v) if v.is_empty()));

    // fire_on_one_callback.
    let (ds, rs): (Vec<Deferred<i32>>, Vec<_>) = (0..3).map(|_| Deferred::new()).unzip();
    let dl = DeferredList::new(ds)
        .fire_on_one_callback(true)
        .consume_errors(true)
        .into_deferred();
    rs[0].errback(Boom("0")).unwrap();
    assert!(!dl.called());
    rs[2].callback(22).unwrap();
    assert!(matches!(
        value(dl),
        ListResult::First {
            index: 2,
            value: 22
        }
    ));
    rs[1].callback(1).unwrap();

    // fire_on_one_errback gives FirstError with the index.
    let (ds, rs): (Vec<Deferred<i32>>, Vec<_>) = (0..3).map(|_| Deferred::new()).unzip();
    let dl = DeferredList::new(ds)
        .fire_on_one_errback(true)
        .consume_errors(true)
        .into_deferred();
    rs[0].callback(0).unwrap();
    rs[1].errback(Boom("one")).unwrap();
    let fe = failure(dl).trap::<FirstError>().unwrap();
    assert_eq!(fe.index, 1);
    assert!(fe.failure.check::<Boom>());

    // Without consume_errors, the input's failure stays unhandled (and is logged); with it, not.
    let logs = capture_logs(|| {
        let (d, r) = Deferred::<i32>::new();
        let dl = DeferredList::new([d]).into_deferred();
        r.errback(Boom("kept")).unwrap();
        drop(r);
        let _ = value(dl);
    });
    assert!(logs.contains("Unhandled error in Deferred") && logs.contains("boom: kept"));
    let logs = capture_logs(|| {
        let (d, r) = Deferred::<i32>::new();
        let dl = DeferredList::new([d]).consume_errors(true).into_deferred();
        r.errback(Boom("consumed")).unwrap();
        drop(r);
        let _ = value(dl);
    });
    assert!(!logs.contains("Unhandled"), "{logs}");

    // Cancelling the list cancels the inputs.
    let (d, r) = Deferred::<i32>::new();
    let dl = DeferredList::new([d]).consume_errors(true).into_deferred();
    dl.cancel();
    assert!(r.called());
    let ListResult::All(all) = value(dl) else {
        panic!()
    };
    assert!(all[0].as_ref().unwrap_err().check::<Cancelled>());
}

#[test]
fn semantic_8_gather_results_and_race() {
    let (ds, rs): (Vec<Deferred<i32>>, Vec<_>) = (0..3).map(|_| Deferred::new()).unzip();
    let g = gather_results(ds, true);
    rs[1].callback(1).unwrap();
    rs[0].callback(0).unwrap();
    rs[2].callback(2).unwrap();
    assert_eq!(value(g), vec![0, 1, 2]);

    let g = gather_results(
        [succeed(0), fail(Boom("second")), fail(Boom("third"))],
        true,
    );
    let fe = failure(g).trap::<FirstError>().unwrap();
    assert_eq!(fe.index, 1);
    assert_eq!(fe.failure.message(), "boom: second");

    // race: first success wins, the others are cancelled.
    let (ds, rs): (Vec<Deferred<i32>>, Vec<_>) = (0..3).map(|_| Deferred::new()).unzip();
    let w = race(ds);
    rs[0].errback(Boom("loser")).unwrap();
    assert!(!w.called());
    rs[2].callback(2).unwrap();
    assert_eq!(value(w), (2, 2));
    assert!(rs[1].called(), "the rest were cancelled");

    // all fail: FailureGroup in input order.
    let (ds, rs): (Vec<Deferred<i32>>, Vec<_>) = (0..2).map(|_| Deferred::new()).unzip();
    let w = race(ds);
    rs[1].errback(Boom("b")).unwrap();
    rs[0].errback(Boom("a")).unwrap();
    let g = failure(w).trap::<FailureGroup>().unwrap();
    let msgs: Vec<String> = g.failures.iter().map(Failure::message).collect();
    assert_eq!(msgs, ["boom: a", "boom: b"]);

    // cancelling the race cancels all inputs.
    let (ds, rs): (Vec<Deferred<i32>>, Vec<_>) = (0..2).map(|_| Deferred::new()).unzip();
    let w = race(ds);
    w.cancel();
    assert!(rs.iter().all(|r| r.called()));
    assert!(failure(w).check::<FailureGroup>());
}

#[test]
fn semantic_8_lock_semaphore_queue() {
    let lock = DeferredLock::new();
    let a = lock.acquire();
    let b = lock.acquire();
    let c = lock.acquire();
    assert!(a.has_result() && !b.called() && lock.locked());
    c.cancel(); // a waiting acquire can be cancelled
    assert!(failure(c).check::<Cancelled>());
    lock.release();
    assert!(b.has_result() && lock.locked() && lock.waiting() == 0);
    lock.release();
    assert!(!lock.locked());
    let l = log();
    let l1 = l.clone();
    let r = lock.run(move || {
        push(&l1, "in lock");
        Ok::<_, Failure>(5)
    });
    assert_eq!(value(r), 5);
    assert!(!lock.locked());
    // run releases on failure too
    let r = lock.run(|| Err::<i32, _>(Failure::new(Boom("in run"))));
    assert!(failure(r).check::<Boom>());
    assert!(!lock.locked());

    let sem = DeferredSemaphore::new(2);
    let x = sem.acquire();
    let y = sem.acquire();
    let z = sem.acquire();
    assert!(x.has_result() && y.has_result() && !z.called());
    assert_eq!(sem.tokens(), 0);
    sem.release();
    assert!(z.has_result());
    sem.release();
    sem.release();
    assert_eq!(sem.tokens(), 2);

    let q = DeferredQueue::with_limits(Some(1), Some(1));
    let g = q.get().unwrap();
    assert_eq!(q.get().unwrap_err(), QueueUnderflow);
    q.put(1).unwrap();
    assert_eq!(value(g), 1);
    q.put(2).unwrap();
    assert_eq!(q.put(3), Err(QueueOverflow));
    assert_eq!(value(q.get().unwrap()), 2);
    let g = q.get().unwrap();
    g.cancel();
    assert_eq!(q.waiting(), 0);
}

#[test]
fn semantic_8_no_recursion_however_many_waiters() {
    small_stack(|| {
        const N: usize = 100_000;
        // Every waiter releases the lock in its callback.
        let lock = DeferredLock::new();
        let first = lock.acquire();
        let count = Rc::new(RefCell::new(0));
        let mut waiters = Vec::new();
        for _ in 0..N {
            let (lock2, count2) = (lock.clone(), count.clone());
            waiters.push(lock.acquire().map(move |()| {
                *count2.borrow_mut() += 1;
                lock2.release();
            }));
        }
        let _ = first;
        lock.release();
        assert_eq!(*count.borrow(), N);
        assert!(!lock.locked());

        // Every getter puts the next item in its callback.
        let q = DeferredQueue::<usize>::new();
        let got = Rc::new(RefCell::new(0usize));
        let mut getters = Vec::new();
        for _ in 0..N {
            let (q2, got2) = (q.clone(), got.clone());
            getters.push(q.get().unwrap().map(move |i| {
                *got2.borrow_mut() += 1;
                q2.put(i + 1).unwrap();
            }));
        }
        q.put(0).unwrap();
        assert_eq!(*got.borrow(), N);
        assert_eq!(q.pending(), 1);
        assert_eq!(value(q.get().unwrap()), N);

        let sem = DeferredSemaphore::new(1);
        let first = sem.acquire();
        let mut waiters = Vec::new();
        for _ in 0..N {
            let sem2 = sem.clone();
            waiters.push(sem.acquire().map(move |()| sem2.release()));
        }
        let _ = first;
        sem.release();
        assert_eq!(sem.tokens(), 1);
    });
}

// 9. Typed: the value type may change from stage to stage and the compiler checks it.
#[test]
fn semantic_9_typed_stages_change_type() {
    #[derive(Debug, PartialEq)]
    struct User {
        name: String,
    }
    let (d, fire) = Deferred::<u32>::new();
    let d: Deferred<User> = d
        .add_callback(|id: u32| Ok(format!("user{id}")))
        .add_callback(|name: String| Ok(User { name }))
        .add_errback(|_f: Failure| {
            Ok(User {
                name: "nobody".into(),
            })
        });
    fire.callback(7).unwrap();
    assert_eq!(
        value(d),
        User {
            name: "user7".into()
        }
    );

    // Returned Deferreds may have another type; map for infallible stages; unit works too.
    let d: Deferred<Vec<u8>> = succeed(3usize)
        .add_callback_deferred(|n| succeed(vec![0u8; n]))
        .map(|mut v| {
            v.push(1);
            v
        });
    assert_eq!(value(d), vec![0, 0, 0, 1]);
    let d: Deferred<()> = succeed(()).map(|()| ());
    value(d);
}

// Review §4.1: a cancel re-entered from the canceller must not make the next late fire be
// silently ignored (only a Deferred without a canceller ignores one late fire).
#[test]
fn cancel_reentered_from_the_canceller_does_not_swallow_a_late_fire() {
    let (d, fire) = Deferred::<i32>::with_canceller(|r| r.cancel());
    d.cancel();
    assert!(fire.called());
    assert_eq!(fire.callback(5), Err(AlreadyCalled));
    assert!(failure(d).check::<Cancelled>());
}

// Review §4.1: a callback returning the Deferred it was added to fails instead of waiting on
// itself forever.
#[test]
fn a_callback_returning_its_own_deferred_fails_with_chained_to_itself() {
    let slot: Rc<RefCell<Option<Deferred<i32>>>> = Rc::default();
    let s = slot.clone();
    let (d, fire) = Deferred::<i32>::new();
    let d = d.add_callback_deferred(move |_| s.borrow_mut().take().expect("set below"));
    let watcher = d.observe();
    *slot.borrow_mut() = Some(d);
    fire.callback(1).unwrap();
    assert!(failure(watcher).check::<torsion::defer::ChainedToItself>());
    let d = slot.borrow_mut().take();
    assert!(d.is_none(), "the callback took it");
}
