//! Time: the [`ReactorTime`] contract, [`DelayedCall`] handles and the timer queue behind them.
//!
//! Both the real [`Reactor`](crate::Reactor) and the fake [`Clock`](crate::testing::Clock)
//! keep their scheduled calls in the same queue type, so a `DelayedCall` behaves identically
//! whichever clock made it (Twisted's `IReactorTime` and `IDelayedCall`).
//!
//! # Implementation notes
//! The queue (`queue.rs`, generic over what its calls get when they run: the reactor or the
//! clock) is a radix heap keyed by `(deadline, sequence number)` (`radix.rs`): the deadlines a
//! clock hands out never go below the last one that fell due, which is what a radix heap needs,
//! and it finds the earliest call with sequential scans instead of a binary heap's cache
//! misses. Equal deadlines fire in scheduling order. Each call is one allocation (its state and
//! its closure together) shared by the queue and its [`DelayedCall`] handles; a call gets the
//! reactor (or clock) as an argument instead of holding a reference to it.
//! Cancelling or rescheduling a call does not search the queue: its entry becomes *stale* (its
//! sequence number no longer matches the call's) and is dropped when met. When stale entries
//! outnumber live ones they are all dropped, so any number of schedule/cancel cycles keeps
//! memory proportional to the live calls.
//! Deadlines are [`Instant`]s (monotonic clock only); a delay too large to represent, such as
//! [`Duration::MAX`], is clamped to a deadline about a century away instead of overflowing.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

mod queue;
mod radix;

pub(crate) use queue::{TimeSource, TimerQueue};

/// Anything that can tell the time and schedule calls: the reactor, or a fake clock in tests.
///
/// Code written against this trait (timeouts, [`LoopingCall`]-style helpers, protocol timers)
/// runs unchanged on a real [`Reactor`](crate::Reactor) and on
/// [`testing::Clock`](crate::testing::Clock), which is how timing tests avoid sleeping.
///
/// # Examples
/// ```
/// use std::{cell::Cell, rc::Rc, time::Duration};
/// use torsion::{testing::Clock, ReactorTime};
///
/// fn remind<T: ReactorTime>(clock: &T, flag: Rc<Cell<bool>>) {
///     clock.schedule(Duration::from_secs(5), move || flag.set(true));
/// }
///
/// let clock = Clock::new();
/// let flag = Rc::new(Cell::new(false));
/// remind(&clock, flag.clone());
/// clock.advance(Duration::from_secs(4));
/// assert!(!flag.get());
/// clock.advance(Duration::from_secs(1));
/// assert!(flag.get());
/// ```
///
/// [`LoopingCall`]: https://docs.twisted.org/en/stable/api/twisted.internet.task.LoopingCall.html
pub trait ReactorTime {
    /// The current time of this clock (monotonic).
    fn now(&self) -> Instant;

    /// Schedules `f` to run once, `delay` from now. This is the object-safe form of
    /// [`schedule`](ReactorTime::schedule).
    fn schedule_boxed(&self, delay: Duration, f: Box<dyn FnOnce()>) -> DelayedCall;

    /// Schedules `f` to run once, `delay` from now, and returns its handle.
    fn schedule<F: FnOnce() + 'static>(&self, delay: Duration, f: F) -> DelayedCall
    where
        Self: Sized,
    {
        self.schedule_boxed(delay, Box::new(f))
    }
}

/// Why a [`DelayedCall`] could not be changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelayedCallError {
    /// The call has already run (Twisted's `AlreadyCalled`).
    AlreadyCalled,
    /// The call was cancelled earlier (Twisted's `AlreadyCancelled`).
    AlreadyCancelled,
}

impl fmt::Display for DelayedCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DelayedCallError::AlreadyCalled => f.write_str("the delayed call has already run"),
            DelayedCallError::AlreadyCancelled => {
                f.write_str("the delayed call has already been cancelled")
            }
        }
    }
}

impl std::error::Error for DelayedCallError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Called,
    Cancelled,
}

/// The state of one scheduled call that handles and the queue share. Invariant: while `status`
/// is `Pending`, exactly one queue entry has `seq == self.seq` and that entry's key is
/// `(nanos(deadline), seq)`.
struct Header {
    deadline: Cell<Instant>,
    seq: Cell<u64>,
    status: Cell<Status>,
}

/// What a [`DelayedCall`] handle reaches of its call, whatever the context type of the queue
/// that runs it (the queue's side is `queue::Call`).
trait Scheduled {
    fn header(&self) -> &Header;
    /// Whether the queue that owns the call still exists.
    fn queue_alive(&self) -> bool;
    /// The current time of the call's queue (`None` once the queue is gone).
    fn queue_now(&self) -> Option<Instant>;
    /// Tells the queue that this pending call was cancelled (its entry goes stale).
    fn forget(&self);
    /// Queues the pending call again at `deadline` (its old entry goes stale).
    fn move_to(self: Rc<Self>, deadline: Instant);
    /// Drops the function without running it (the caller holds no borrow: it may own anything).
    fn discard(&self);
}

/// A handle to a call scheduled with `call_later` (Twisted's `IDelayedCall`).
///
/// Dropping the handle does not cancel the call. Clones refer to the same call.
#[derive(Clone)]
pub struct DelayedCall {
    state: Rc<dyn Scheduled>,
}

impl fmt::Debug for DelayedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.state.header();
        f.debug_struct("DelayedCall")
            .field("time", &h.deadline.get())
            .field("status", &h.status.get())
            .finish()
    }
}

impl DelayedCall {
    fn h(&self) -> &Header {
        self.state.header()
    }

    fn check_pending(&self) -> Result<(), DelayedCallError> {
        match self.h().status.get() {
            Status::Called => Err(DelayedCallError::AlreadyCalled),
            Status::Cancelled => Err(DelayedCallError::AlreadyCancelled),
            Status::Pending if self.state.queue_alive() => Ok(()),
            // The clock is gone: nothing can ever run this call again.
            Status::Pending => Err(DelayedCallError::AlreadyCancelled),
        }
    }

    /// Cancels the call so that it never runs; its function is dropped at once.
    ///
    /// # Errors
    /// [`DelayedCallError::AlreadyCalled`] or [`DelayedCallError::AlreadyCancelled`], as Twisted.
    pub fn cancel(&self) -> Result<(), DelayedCallError> {
        self.check_pending()?;
        self.h().status.set(Status::Cancelled);
        self.state.forget();
        // The user's closure may own anything, even this handle: drop it with no borrow held.
        self.state.discard();
        Ok(())
    }

    /// Reschedules the call to run `delay` from now.
    ///
    /// # Errors
    /// As [`cancel`](DelayedCall::cancel) when the call is no longer pending.
    pub fn reset(&self, delay: Duration) -> Result<(), DelayedCallError> {
        self.check_pending()?;
        let now = self.state.queue_now();
        let deadline = deadline_after(now.ok_or(DelayedCallError::AlreadyCancelled)?, delay);
        self.state.clone().move_to(deadline);
        Ok(())
    }

    /// Postpones the call by `delay` (negative delays are not expressible; use
    /// [`reset`](DelayedCall::reset) to run it sooner).
    ///
    /// # Errors
    /// As [`cancel`](DelayedCall::cancel) when the call is no longer pending.
    pub fn delay(&self, delay: Duration) -> Result<(), DelayedCallError> {
        self.check_pending()?;
        let deadline = deadline_after(self.h().deadline.get(), delay);
        self.state.clone().move_to(deadline);
        Ok(())
    }

    /// True while the call has neither run nor been cancelled.
    pub fn active(&self) -> bool {
        self.h().status.get() == Status::Pending && self.state.queue_alive()
    }

    /// The time at which the call is due.
    pub fn time(&self) -> Instant {
        self.h().deadline.get()
    }

    /// True once the call has run.
    pub fn called(&self) -> bool {
        self.h().status.get() == Status::Called
    }

    /// True once the call has been cancelled.
    pub fn cancelled(&self) -> bool {
        self.h().status.get() == Status::Cancelled
    }
}

/// The deadline `delay` after `from`, clamped instead of overflowing.
pub(crate) fn deadline_after(from: Instant, delay: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    from.checked_add(delay.min(CENTURY))
        .or_else(|| from.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(from)
}
