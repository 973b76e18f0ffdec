//! Time helpers (Twisted's `twisted.internet.task`) on the fake clock: no test sleeps.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use torsion::defer::{Cancelled, Deferred, Failure, Panicked};
use torsion::task::{defer_later, LoopingCall};
use torsion::testing::Clock;
use torsion::testing::{failure_result_of as failure, success_result_of as value};

#[derive(Debug)]
struct Boom;
impl fmt::Display for Boom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("boom")
    }
}
impl std::error::Error for Boom {}

const S: Duration = Duration::from_secs(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn defer_later_fires_after_delay() {
    let clock = Clock::new();
    let calls = Rc::new(RefCell::new(0));
    let c = calls.clone();
    let d = defer_later(&clock, secs(2), move || {
        *c.borrow_mut() += 1;
        Ok("done")
    });
    clock.advance(S);
    assert!(!d.called());
    assert_eq!(*calls.borrow(), 0);
    clock.advance(S);
    assert_eq!(*calls.borrow(), 1);
    assert_eq!(value(d), "done");
}

#[test]
fn defer_later_failure_panic_and_returned_deferred() {
    let clock = Clock::new();
    let d = defer_later(&clock, S, || Err::<(), _>(Failure::new(Boom)));
    clock.advance(S);
    assert!(failure(d).check::<Boom>());

    let d = defer_later(&clock, S, || -> Result<(), Failure> {
        panic!("late panic")
    });
    clock.advance(S);
    assert!(failure(d).check::<Panicked>());

    let c2 = clock.clone();
    let d = defer_later(&clock, S, move || defer_later(&c2, S, || Ok(5)));
    clock.advance(S);
    assert!(d.is_waiting());
    clock.advance(S);
    assert_eq!(value(d), 5);
}

#[test]
fn defer_later_is_cancellable() {
    let clock = Clock::new();
    let ran = Rc::new(RefCell::new(false));
    let r = ran.clone();
    let d = defer_later(&clock, secs(5), move || {
        *r.borrow_mut() = true;
        Ok(())
    });
    assert_eq!(clock.pending(), 1);
    d.cancel();
    assert_eq!(clock.pending(), 0, "the delayed call was cancelled");
    clock.advance(secs(10));
    assert!(!*ran.borrow());
    assert!(failure(d).check::<Cancelled>());
}

fn counting_loop(clock: &Clock) -> (LoopingCall, Rc<RefCell<Vec<Duration>>>) {
    let times = Rc::new(RefCell::new(Vec::new()));
    let (t, c) = (times.clone(), clock.clone());
    let lc = LoopingCall::new(clock.clone(), move || {
        t.borrow_mut().push(c.elapsed());
        Ok(())
    });
    (lc, times)
}

#[test]
fn looping_call_runs_every_interval_and_fires_on_stop() {
    let clock = Clock::new();
    let (lc, times) = counting_loop(&clock);
    let done = lc.start(secs(2), true);
    assert_eq!(*times.borrow(), [secs(0)]);
    clock.pump(&[S; 6]);
    assert_eq!(*times.borrow(), [secs(0), secs(2), secs(4), secs(6)]);
    assert!(lc.running());
    assert!(!done.called());
    lc.stop();
    assert!(!lc.running());
    value(done);
    assert_eq!(clock.pending(), 0);

    // now = false: first call after one interval; the loop can be restarted.
    let done = lc.start(secs(1), false);
    assert_eq!(times.borrow().len(), 4);
    clock.advance(S);
    assert_eq!(times.borrow().len(), 5);
    lc.stop();
    value(done);
}

#[test]
fn looping_call_skips_missed_intervals() {
    let clock = Clock::new();
    let (lc, times) = counting_loop(&clock);
    let _done = lc.start(secs(1), true);
    // 3.5 intervals in one jump: one call, then back on the grid at 4, 5.
    clock.advance(Duration::from_millis(3500));
    assert_eq!(*times.borrow(), [secs(0), Duration::from_millis(3500)]);
    clock.advance(Duration::from_millis(500));
    assert_eq!(times.borrow().last(), Some(&secs(4)));
    clock.advance(S);
    assert_eq!(times.borrow().len(), 4);
    lc.stop();
}

#[test]
fn looping_call_with_count_reports_elapsed_intervals() {
    let clock = Clock::new();
    let counts = Rc::new(RefCell::new(Vec::new()));
    let c = counts.clone();
    let lc = LoopingCall::with_count(clock.clone(), move |n| {
        c.borrow_mut().push(n);
        Ok(())
    });
    let _done = lc.start(secs(1), true);
    clock.advance(S);
    clock.advance(secs(3));
    clock.advance(Duration::from_millis(2500));
    assert_eq!(*counts.borrow(), [1, 1, 3, 2]);
    lc.stop();

    // now = false: the first call reports one interval.
    counts.borrow_mut().clear();
    let _done = lc.start(secs(1), false);
    clock.advance(secs(2));
    assert_eq!(*counts.borrow(), [2]);
    lc.stop();
}

#[test]
fn looping_call_fails_with_the_calls_failure() {
    let clock = Clock::new();
    let n = Rc::new(RefCell::new(0));
    let n2 = n.clone();
    let lc = LoopingCall::new(clock.clone(), move || {
        *n2.borrow_mut() += 1;
        if *n2.borrow() == 3 {
            Err(Failure::new(Boom))
        } else {
            Ok(())
        }
    });
    let done = lc.start(S, true);
    clock.pump(&[S; 5]);
    assert_eq!(*n.borrow(), 3);
    assert!(!lc.running());
    assert!(failure(done).check::<Boom>());
    assert_eq!(clock.pending(), 0);
}

#[test]
fn looping_call_waits_for_returned_deferred() {
    let clock = Clock::new();
    let pending: Rc<RefCell<Vec<torsion::defer::Resolver<()>>>> = Rc::default();
    let p = pending.clone();
    let lc = LoopingCall::new(clock.clone(), move || {
        let (d, fire) = Deferred::<()>::new();
        p.borrow_mut().push(fire);
        d
    });
    let done = lc.start(S, true);
    clock.pump(&[S; 3]);
    assert_eq!(
        pending.borrow().len(),
        1,
        "no new call while the Deferred is pending"
    );
    // stop while a call is pending: the loop's Deferred fires once that call finishes.
    lc.stop();
    assert!(!done.called());
    let r = pending.borrow_mut().pop().unwrap();
    clock.advance(Duration::from_millis(2500));
    r.callback(()).unwrap();
    value(done);
}

#[test]
fn looping_call_stop_from_inside_and_reset() {
    let clock = Clock::new();
    let slot: Rc<RefCell<Option<LoopingCall>>> = Rc::default();
    let s = slot.clone();
    let n = Rc::new(RefCell::new(0));
    let n2 = n.clone();
    let lc = LoopingCall::new(clock.clone(), move || {
        *n2.borrow_mut() += 1;
        if *n2.borrow() == 2 {
            s.borrow().as_ref().unwrap().stop();
        }
        Ok(())
    });
    *slot.borrow_mut() = Some(lc.clone());
    let done = lc.start(S, true);
    clock.pump(&[S; 4]);
    assert_eq!(*n.borrow(), 2);
    value(done);
    slot.borrow_mut().take(); // break the cycle

    let (lc, times) = counting_loop(&clock);
    let _done = lc.start(secs(2), false);
    clock.advance(S);
    lc.reset(); // the next call is two seconds from now
    clock.advance(S);
    assert!(times.borrow().is_empty());
    clock.advance(S);
    assert_eq!(times.borrow().len(), 1);
    lc.stop();
}

#[test]
fn looping_call_zero_interval() {
    let clock = Clock::new();
    let counts = Rc::new(RefCell::new(Vec::new()));
    let (c, slot) = (counts.clone(), Rc::new(RefCell::new(None::<LoopingCall>)));
    let s = slot.clone();
    let lc = LoopingCall::with_count(clock.clone(), move |k| {
        c.borrow_mut().push(k);
        if c.borrow().len() == 5 {
            s.borrow().as_ref().unwrap().stop();
        }
        Ok(())
    });
    *slot.borrow_mut() = Some(lc.clone());
    let done = lc.start(Duration::ZERO, true);
    clock.advance(Duration::ZERO);
    assert_eq!(*counts.borrow(), [1; 5]);
    value(done);
    slot.borrow_mut().take();
}

#[test]
#[should_panic(expected = "already running")]
fn looping_call_double_start_panics() {
    let clock = Clock::new();
    let (lc, _) = counting_loop(&clock);
    let _a = lc.start(S, false);
    let _b = lc.start(S, false);
}
