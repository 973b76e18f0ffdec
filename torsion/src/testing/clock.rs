//! A fake clock (Twisted's `task.Clock`).

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::time::{DelayedCall, ReactorTime, TimeSource, TimerQueue};

/// A clock whose time moves only when told to, for tests that must not sleep.
///
/// It implements [`ReactorTime`], so it stands in for the reactor wherever code only needs the
/// time and delayed calls. Calls run inside [`advance`](Clock::advance), in deadline order
/// (equal deadlines in scheduling order); a call that becomes due while `advance` runs (for
/// example one scheduled with a zero delay by another call) runs in the same `advance`.
/// A panic in a call propagates out of `advance`, so that the test fails.
///
/// # Examples
/// ```
/// use std::{cell::RefCell, rc::Rc, time::Duration};
/// use torsion::testing::Clock;
///
/// let clock = Clock::new();
/// let log = Rc::new(RefCell::new(Vec::new()));
/// let l = log.clone();
/// clock.call_later(Duration::from_secs(2), move || l.borrow_mut().push("two"));
/// let l = log.clone();
/// clock.call_later(Duration::from_secs(1), move || l.borrow_mut().push("one"));
/// clock.pump(&[Duration::from_secs(1), Duration::from_secs(1)]);
/// assert_eq!(*log.borrow(), ["one", "two"]);
/// ```
#[derive(Clone)]
pub struct Clock {
    queue: Rc<TimerQueue<Clock>>,
    start: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    /// A new clock. Its time starts at an arbitrary instant; use [`elapsed`](Clock::elapsed)
    /// for the time advanced so far.
    pub fn new() -> Clock {
        let start = Instant::now();
        Clock {
            queue: TimerQueue::new(TimeSource::Fake(std::cell::Cell::new(start))),
            start,
        }
    }

    /// The clock's current time.
    pub fn now(&self) -> Instant {
        self.queue.now()
    }

    /// How far the clock has been advanced since it was made.
    pub fn elapsed(&self) -> Duration {
        self.now() - self.start
    }

    /// Schedules `f` to run once the clock has advanced by `delay`.
    pub fn call_later<F: FnOnce() + 'static>(&self, delay: Duration, f: F) -> DelayedCall {
        self.queue.schedule(delay, move |_: &Clock| f())
    }

    /// Moves time forward by `amount` and runs every call that is then due.
    pub fn advance(&self, amount: Duration) {
        let now = crate::time::deadline_after(self.now(), amount);
        self.queue.set_fake_now(now);
        while let Some(call) = self.queue.pop_due(now, u64::MAX) {
            call.run(self);
        }
    }

    /// Advances by each amount in turn, running the due calls after each step.
    pub fn pump(&self, amounts: &[Duration]) {
        for a in amounts {
            self.advance(*a);
        }
    }

    /// The pending calls, earliest first (Twisted's `getDelayedCalls`).
    pub fn delayed_calls(&self) -> Vec<DelayedCall> {
        self.queue.pending()
    }

    /// Number of pending calls.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }
}

impl ReactorTime for Clock {
    fn now(&self) -> Instant {
        Clock::now(self)
    }

    fn schedule_boxed(&self, delay: Duration, f: Box<dyn FnOnce()>) -> DelayedCall {
        self.queue.schedule(delay, move |_: &Clock| f())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn equal_deadlines_fire_in_scheduling_order_and_reset_moves() {
        let clock = Clock::new();
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut calls = Vec::new();
        for i in 0..5 {
            let l = log.clone();
            calls.push(clock.call_later(Duration::from_secs(1), move || l.borrow_mut().push(i)));
        }
        calls[1].reset(Duration::from_secs(2)).unwrap();
        calls[3].cancel().unwrap();
        assert_eq!(
            calls[3].cancel(),
            Err(crate::time::DelayedCallError::AlreadyCancelled)
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(*log.borrow(), [0, 2, 4]);
        assert!(calls[1].active());
        clock.advance(Duration::from_secs(1));
        assert_eq!(*log.borrow(), [0, 2, 4, 1]);
        assert_eq!(
            calls[1].reset(Duration::ZERO),
            Err(crate::time::DelayedCallError::AlreadyCalled)
        );
        assert_eq!(clock.pending(), 0);
    }

    #[test]
    fn duration_max_does_not_overflow() {
        let clock = Clock::new();
        let c = clock.call_later(Duration::MAX, || panic!("must never run"));
        clock.advance(Duration::from_secs(10 * 3600 * 24 * 365));
        assert!(c.active());
        assert!(c.time() > clock.now());
        c.cancel().unwrap();
    }

    #[test]
    fn million_schedule_cancel_cycles_stay_bounded() {
        let clock = Clock::new();
        let keep = clock.call_later(Duration::from_secs(10), || {});
        for _ in 0..1_000_000 {
            let c = clock.call_later(Duration::from_secs(5), || {});
            c.cancel().unwrap();
        }
        assert!(clock.queue.heap_len() <= 2 * COMPACT_BOUND);
        keep.cancel().unwrap();
    }

    const COMPACT_BOUND: usize = 64;
}
