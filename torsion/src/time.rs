//! Time: the [`ReactorTime`] contract, [`DelayedCall`] handles and the timer queue behind them.
//!
//! Both the real [`Reactor`](crate::Reactor) and the fake [`Clock`](crate::testing::Clock) keep their
//! scheduled calls in the same queue type, so a `DelayedCall` behaves identically whichever clock
//! made it (Twisted's `IReactorTime` and `IDelayedCall`).
//!
//! # Implementation notes
//! The queue is a binary heap keyed by `(deadline, sequence number)`. Equal deadlines therefore
//! fire in scheduling order. Cancelling or rescheduling a call does not search the heap: the
//! heap entry becomes *stale* (its sequence number no longer matches the call's) and is skipped
//! when it reaches the top. When stale entries outnumber live ones the heap is rebuilt, so any
//! number of schedule/cancel cycles keeps memory proportional to the live calls.
//! Deadlines are [`Instant`]s (monotonic clock only); a delay too large to represent, such as
//! [`Duration::MAX`], is clamped to a deadline about a century away instead of overflowing.

use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

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

/// The shared state of one scheduled call. Invariant: while `status` is `Pending`, exactly one
/// heap entry has `seq == self.seq` and that entry's deadline equals `deadline`.
struct CallState {
    deadline: Cell<Instant>,
    seq: Cell<u64>,
    status: Cell<Status>,
    func: RefCell<Option<Box<dyn FnOnce()>>>,
    queue: Weak<TimerQueue>,
}

/// A handle to a call scheduled with `call_later` (Twisted's `IDelayedCall`).
///
/// Dropping the handle does not cancel the call. Clones refer to the same call.
#[derive(Clone)]
pub struct DelayedCall {
    state: Rc<CallState>,
}

impl fmt::Debug for DelayedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayedCall")
            .field("time", &self.state.deadline.get())
            .field("status", &self.state.status.get())
            .finish()
    }
}

impl DelayedCall {
    fn check_pending(&self) -> Result<Rc<TimerQueue>, DelayedCallError> {
        match self.state.status.get() {
            Status::Called => Err(DelayedCallError::AlreadyCalled),
            Status::Cancelled => Err(DelayedCallError::AlreadyCancelled),
            Status::Pending => match self.state.queue.upgrade() {
                Some(q) => Ok(q),
                // The clock is gone: nothing can ever run this call again.
                None => Err(DelayedCallError::AlreadyCancelled),
            },
        }
    }

    /// Cancels the call so that it never runs; its function is dropped at once.
    ///
    /// # Errors
    /// [`DelayedCallError::AlreadyCalled`] or [`DelayedCallError::AlreadyCancelled`], as Twisted.
    pub fn cancel(&self) -> Result<(), DelayedCallError> {
        let queue = self.check_pending()?;
        self.state.status.set(Status::Cancelled);
        let func = self.state.func.borrow_mut().take();
        queue.forget_one();
        // The user's closure may own anything, even this handle: drop it with no borrow held.
        drop(func);
        Ok(())
    }

    /// Reschedules the call to run `delay` from now.
    ///
    /// # Errors
    /// As [`cancel`](DelayedCall::cancel) when the call is no longer pending.
    pub fn reset(&self, delay: Duration) -> Result<(), DelayedCallError> {
        let queue = self.check_pending()?;
        let deadline = deadline_after(queue.now(), delay);
        queue.move_call(&self.state, deadline);
        Ok(())
    }

    /// Postpones the call by `delay` (negative delays are not expressible; use
    /// [`reset`](DelayedCall::reset) to run it sooner).
    ///
    /// # Errors
    /// As [`cancel`](DelayedCall::cancel) when the call is no longer pending.
    pub fn delay(&self, delay: Duration) -> Result<(), DelayedCallError> {
        let queue = self.check_pending()?;
        let deadline = deadline_after(self.state.deadline.get(), delay);
        queue.move_call(&self.state, deadline);
        Ok(())
    }

    /// True while the call has neither run nor been cancelled.
    pub fn active(&self) -> bool {
        self.state.status.get() == Status::Pending && self.state.queue.strong_count() > 0
    }

    /// The time at which the call is due.
    pub fn time(&self) -> Instant {
        self.state.deadline.get()
    }

    /// True once the call has run.
    pub fn called(&self) -> bool {
        self.state.status.get() == Status::Called
    }

    /// True once the call has been cancelled.
    pub fn cancelled(&self) -> bool {
        self.state.status.get() == Status::Cancelled
    }
}

/// The deadline `delay` after `from`, clamped instead of overflowing.
pub(crate) fn deadline_after(from: Instant, delay: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    from.checked_add(delay.min(CENTURY))
        .or_else(|| from.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(from)
}

struct HeapEntry {
    deadline: Instant,
    seq: u64,
    call: Rc<CallState>,
}

impl HeapEntry {
    fn is_live(&self) -> bool {
        self.call.status.get() == Status::Pending && self.call.seq.get() == self.seq
    }
}

impl PartialEq for HeapEntry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for HeapEntry {}
impl PartialOrd for HeapEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapEntry {
    // Reversed: BinaryHeap is a max-heap, we want the earliest (deadline, seq) on top.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

/// Where a [`TimerQueue`] reads the time.
pub(crate) enum TimeSource {
    /// `Instant::now()`.
    Monotonic,
    /// A fake clock's current time, moved only by `advance`.
    Fake(Cell<Instant>),
}

struct QueueInner {
    heap: BinaryHeap<HeapEntry>,
    next_seq: u64,
    /// Pending calls (heap entries that are live).
    live: usize,
}

/// The scheduled calls of one reactor or fake clock.
pub(crate) struct TimerQueue {
    inner: RefCell<QueueInner>,
    source: TimeSource,
}

/// Rebuild the heap once it holds this many entries and more than twice the live ones.
const COMPACT_MIN: usize = 64;

impl TimerQueue {
    pub(crate) fn new(source: TimeSource) -> Rc<TimerQueue> {
        Rc::new(TimerQueue {
            inner: RefCell::new(QueueInner {
                heap: BinaryHeap::new(),
                next_seq: 0,
                live: 0,
            }),
            source,
        })
    }

    pub(crate) fn now(&self) -> Instant {
        match &self.source {
            TimeSource::Monotonic => Instant::now(),
            TimeSource::Fake(now) => now.get(),
        }
    }

    /// Moves a fake clock forward (no-op for the monotonic source).
    pub(crate) fn set_fake_now(&self, t: Instant) {
        if let TimeSource::Fake(now) = &self.source {
            now.set(t);
        }
    }

    pub(crate) fn schedule(self: &Rc<Self>, delay: Duration, f: Box<dyn FnOnce()>) -> DelayedCall {
        let deadline = deadline_after(self.now(), delay);
        let state = Rc::new(CallState {
            deadline: Cell::new(deadline),
            seq: Cell::new(0),
            status: Cell::new(Status::Pending),
            func: RefCell::new(Some(f)),
            queue: Rc::downgrade(self),
        });
        let mut inner = self.inner.borrow_mut();
        inner.live += 1;
        Self::push(&mut inner, &state, deadline);
        DelayedCall { state }
    }

    fn push(inner: &mut QueueInner, state: &Rc<CallState>, deadline: Instant) {
        let seq = inner.next_seq;
        inner.next_seq += 1;
        state.seq.set(seq);
        state.deadline.set(deadline);
        inner.heap.push(HeapEntry {
            deadline,
            seq,
            call: state.clone(),
        });
    }

    fn move_call(&self, state: &Rc<CallState>, deadline: Instant) {
        let mut inner = self.inner.borrow_mut();
        Self::push(&mut inner, state, deadline);
        Self::maybe_compact(&mut inner);
    }

    fn forget_one(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.live -= 1;
        Self::maybe_compact(&mut inner);
    }

    fn maybe_compact(inner: &mut QueueInner) {
        let len = inner.heap.len();
        if len >= COMPACT_MIN && len > 2 * inner.live {
            inner.heap.retain(HeapEntry::is_live);
            if inner.heap.capacity() > 4 * inner.heap.len().max(COMPACT_MIN) {
                inner.heap.shrink_to(2 * inner.heap.len().max(COMPACT_MIN));
            }
        }
    }

    /// The sequence number the next scheduled call will get: calls with a smaller one existed
    /// before this moment.
    pub(crate) fn seq_mark(&self) -> u64 {
        self.inner.borrow().next_seq
    }

    /// The deadline of the earliest pending call.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let mut inner = self.inner.borrow_mut();
        while let Some(top) = inner.heap.peek() {
            if top.is_live() {
                return Some(top.deadline);
            }
            inner.heap.pop();
        }
        None
    }

    /// Removes and returns the function of the earliest call due at `now` whose sequence number
    /// is below `before_seq`, marking it called. The caller runs it with no borrow held.
    pub(crate) fn pop_due(&self, now: Instant, before_seq: u64) -> Option<Box<dyn FnOnce()>> {
        let mut inner = self.inner.borrow_mut();
        loop {
            let top = inner.heap.peek()?;
            if !top.is_live() {
                inner.heap.pop();
                continue;
            }
            if top.deadline > now || top.seq >= before_seq {
                return None;
            }
            let entry = inner.heap.pop().expect("peeked");
            inner.live -= 1;
            entry.call.status.set(Status::Called);
            let f = entry.call.func.borrow_mut().take();
            if let Some(f) = f {
                return Some(f);
            }
        }
    }

    /// Number of pending calls.
    pub(crate) fn len(&self) -> usize {
        self.inner.borrow().live
    }

    /// Number of heap entries, live or stale (for memory-bound tests).
    #[cfg(test)]
    pub(crate) fn heap_len(&self) -> usize {
        self.inner.borrow().heap.len()
    }

    /// Handles to every pending call, earliest first.
    pub(crate) fn pending(&self) -> Vec<DelayedCall> {
        let inner = self.inner.borrow();
        let mut live: Vec<&HeapEntry> = inner.heap.iter().filter(|e| e.is_live()).collect();
        live.sort_by_key(|e| (e.deadline, e.seq));
        live.into_iter()
            .map(|e| DelayedCall {
                state: e.call.clone(),
            })
            .collect()
    }

    /// Cancels every pending call (used when a reactor or clock is dropped, to break cycles).
    pub(crate) fn clear(&self) {
        let entries: Vec<HeapEntry> = {
            let mut inner = self.inner.borrow_mut();
            inner.live = 0;
            std::mem::take(&mut inner.heap).into_vec()
        };
        let mut funcs = Vec::new();
        for e in &entries {
            if e.is_live() {
                e.call.status.set(Status::Cancelled);
                funcs.push(e.call.func.borrow_mut().take());
            }
        }
        drop(funcs);
        drop(entries);
    }
}

/// Formats a duration as Python's `str(timedelta)` does (`0:00:03.072771`; the fraction is left
/// out when it is zero; days are shown as `N day(s), `), so that torsion's poetry programs print
/// what the tutorial's originals print.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(torsion::time::format_timedelta(Duration::from_micros(3_072_771)), "0:00:03.072771");
/// assert_eq!(torsion::time::format_timedelta(Duration::from_secs(3725)), "1:02:05");
/// assert_eq!(torsion::time::format_timedelta(Duration::from_secs(90_000)), "1 day, 1:00:00");
/// ```
pub fn format_timedelta(d: Duration) -> String {
    let micros = d.subsec_micros();
    let total = d.as_secs();
    let (days, rest) = (total / 86_400, total % 86_400);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    let mut out = String::new();
    if days > 0 {
        out.push_str(&format!("{days} day{}, ", if days == 1 { "" } else { "s" }));
    }
    out.push_str(&format!("{h}:{m:02}:{s:02}"));
    if micros != 0 {
        out.push_str(&format!(".{micros:06}"));
    }
    out
}
