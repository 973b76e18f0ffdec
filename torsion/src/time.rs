//! Time: the [`ReactorTime`] contract, [`DelayedCall`] handles and the timer queue behind them.
//!
//! Both the real [`Reactor`] and the fake [`Clock`](crate::testing::Clock) keep their
//! scheduled calls in the same queue type, so a `DelayedCall` behaves identically whichever clock
//! made it (Twisted's `IReactorTime` and `IDelayedCall`).
//!
//! # Implementation notes
//! The queue is a radix heap keyed by `(deadline, sequence number)` (see `RadixHeap`): the
//! deadlines a clock hands out never go below the last one that fell due, which is what a radix
//! heap needs, and it finds the earliest call with sequential scans instead of a binary heap's
//! cache misses. Equal deadlines fire in scheduling order. Each call is one allocation (its
//! state and its closure together) shared by the queue and its [`DelayedCall`] handles; a
//! reactor's call gets the reactor as an argument instead of holding a reference to it.
//! Cancelling or rescheduling a call does not search the queue: its entry becomes *stale* (its
//! sequence number no longer matches the call's) and is dropped when met. When stale entries
//! outnumber live ones they are all dropped, so any number of schedule/cancel cycles keeps
//! memory proportional to the live calls.
//! Deadlines are [`Instant`]s (monotonic clock only); a delay too large to represent, such as
//! [`Duration::MAX`], is clamped to a deadline about a century away instead of overflowing.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use crate::Reactor;

/// Anything that can tell the time and schedule calls: the reactor, or a fake clock in tests.
///
/// Code written against this trait (timeouts, [`LoopingCall`]-style helpers, protocol timers)
/// runs unchanged on a real [`Reactor`] and on
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
    queue: Weak<TimerQueue>,
}

/// One scheduled call: its [`Header`] and its function, in a single allocation (the closure is
/// stored inline, not boxed).
trait Call {
    fn header(&self) -> &Header;
    /// Takes the function out and runs it; a reactor call gets `reactor`. Runs at most once.
    fn run(&self, reactor: Option<&Reactor>);
    /// Drops the function without running it (the caller holds no borrow: it may own anything).
    fn discard(&self);
}

/// A call that takes no argument (`ReactorTime::schedule`, the fake clock).
struct PlainCall<F> {
    header: Header,
    func: Cell<Option<F>>,
}

impl<F: FnOnce()> Call for PlainCall<F> {
    fn header(&self) -> &Header {
        &self.header
    }
    fn run(&self, _: Option<&Reactor>) {
        if let Some(f) = self.func.take() {
            f();
        }
    }
    fn discard(&self) {
        drop(self.func.take());
    }
}

/// A call that gets the reactor running it ([`Reactor::call_later`]), so that it needs no
/// reference of its own to the reactor.
struct ReactorCall<F> {
    header: Header,
    func: Cell<Option<F>>,
}

impl<F: FnOnce(&Reactor)> Call for ReactorCall<F> {
    fn header(&self) -> &Header {
        &self.header
    }
    fn run(&self, reactor: Option<&Reactor>) {
        let f = self.func.take();
        // Only reactors schedule reactor calls, and a reactor's timer phase passes itself.
        if let (Some(f), Some(r)) = (f, reactor) {
            f(r);
        }
    }
    fn discard(&self) {
        drop(self.func.take());
    }
}

/// A due call taken out of the queue, to be run with no borrow held.
pub(crate) struct Due(Rc<dyn Call>);

impl Due {
    /// Runs the call; `reactor` is the reactor whose timer phase runs it (`None` for the fake
    /// clock).
    pub(crate) fn run(self, reactor: Option<&Reactor>) {
        self.0.run(reactor);
    }
}

/// A handle to a call scheduled with `call_later` (Twisted's `IDelayedCall`).
///
/// Dropping the handle does not cancel the call. Clones refer to the same call.
#[derive(Clone)]
pub struct DelayedCall {
    state: Rc<dyn Call>,
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

    fn check_pending(&self) -> Result<Rc<TimerQueue>, DelayedCallError> {
        match self.h().status.get() {
            Status::Called => Err(DelayedCallError::AlreadyCalled),
            Status::Cancelled => Err(DelayedCallError::AlreadyCancelled),
            Status::Pending => match self.h().queue.upgrade() {
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
        let h = self.h();
        h.status.set(Status::Cancelled);
        queue.forget_one(key_of(&queue, h));
        // The user's closure may own anything, even this handle: drop it with no borrow held.
        self.state.discard();
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
        let deadline = deadline_after(self.h().deadline.get(), delay);
        queue.move_call(&self.state, deadline);
        Ok(())
    }

    /// True while the call has neither run nor been cancelled.
    pub fn active(&self) -> bool {
        self.h().status.get() == Status::Pending && self.h().queue.strong_count() > 0
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

/// A queue key: (deadline in nanoseconds since the queue's base instant, sequence number).
/// Keys are unique (every push takes a new sequence number) and order calls as documented.
type Key = (u64, u64);

/// A key as one integer with the same order (one comparison instead of two).
fn wide(k: Key) -> u128 {
    (u128::from(k.0) << 64) | u128::from(k.1)
}

/// The current key of a pending call.
fn key_of(queue: &TimerQueue, h: &Header) -> Key {
    (queue.nanos(h.deadline.get()), h.seq.get())
}

struct Entry {
    key: Key,
    call: Rc<dyn Call>,
}

impl Entry {
    fn is_live(&self) -> bool {
        let h = self.call.header();
        h.status.get() == Status::Pending && h.seq.get() == self.key.1
    }
}

/// Where a [`TimerQueue`] reads the time.
pub(crate) enum TimeSource {
    /// `Instant::now()`.
    Monotonic,
    /// A fake clock's current time, moved only by `advance`.
    Fake(Cell<Instant>),
}

/// Number of radix buckets: bucket 0 holds the keys up to `last`; buckets 1..=64 keys that
/// differ from `last` in the sequence number only (by the highest differing bit); buckets
/// 65..=128 keys whose deadline differs (by the highest differing bit of the deadline).
const BUCKETS: usize = 129;

/// The bucket of `key` relative to `last` (requires `key >= last`).
fn bucket_of(key: Key, last: Key) -> usize {
    if key.0 != last.0 {
        64 + (64 - (key.0 ^ last.0).leading_zeros()) as usize
    } else {
        (64 - (key.1 ^ last.1).leading_zeros()) as usize
    }
}

/// A radix heap of entries, keyed by [`Key`].
///
/// # Invariants
/// * Bucket 0 is a run of entries with keys `<= last`, sorted in descending order (its last
///   element is the smallest); every other entry `e` has `e.key > last` and is in bucket
///   `bucket_of(e.key, last)`. Hence all keys in bucket `i` are smaller than all keys in bucket
///   `j > i`. (Bucket 0 gets more than one entry when a whole bucket of due calls is sorted into
///   it at once; `last` is then its largest key.)
/// * `nonempty` has bit `i` set exactly when bucket `i` is not empty; `len` counts every entry.
/// * `hint`, when set, is the smallest key of a live entry outside bucket 0 (cleared when that
///   may no longer hold).
///
/// `last` only moves forward, to the key of an entry whose deadline has passed (`<= now`).
/// Every key pushed afterwards is larger: its deadline is at least the current time, and a
/// deadline equal to `last`'s comes with a larger sequence number. A push below `last` (which
/// the clocks never do) is still handled: everything is re-bucketed from `last = (0, 0)`.
/// Each entry moves to a strictly lower bucket each time it is re-bucketed, so a push costs
/// O(1) and finding the minimum O(log range) amortised, with sequential memory access; a bucket
/// whose calls are all due is sorted into bucket 0 in one go instead.
struct RadixHeap {
    buckets: Vec<Vec<Entry>>,
    nonempty: [u64; 3],
    last: Key,
    len: usize,
    hint: Option<Key>,
}

impl RadixHeap {
    fn new() -> RadixHeap {
        RadixHeap {
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            nonempty: [0; 3],
            last: (0, 0),
            len: 0,
            hint: None,
        }
    }

    fn put(&mut self, e: Entry) {
        let b = bucket_of(e.key, self.last);
        self.nonempty[b / 64] |= 1 << (b % 64);
        self.buckets[b].push(e);
    }

    fn push(&mut self, e: Entry) {
        if e.key < self.last {
            // Not monotonic (see the invariants): start over from the smallest possible key.
            let all = self.take_all();
            self.last = (0, 0);
            self.len = all.len();
            for x in all {
                self.put(x);
            }
        }
        if let Some(h) = self.hint {
            if e.key < h {
                self.hint = Some(e.key);
            }
        }
        self.len += 1;
        self.put(e);
    }

    /// The first non-empty bucket above 0.
    fn first_bucket(&self) -> Option<usize> {
        for (w, &bits) in self.nonempty.iter().enumerate() {
            let bits = if w == 0 { bits & !1 } else { bits };
            if bits != 0 {
                return Some(w * 64 + bits.trailing_zeros() as usize);
            }
        }
        None
    }

    fn mark_empty(&mut self, b: usize) {
        self.nonempty[b / 64] &= !(1 << (b % 64));
    }

    /// The smallest live key, dropping stale entries on the way. When its deadline is at most
    /// `now` (nanoseconds), the entry is moved into bucket 0 (and `last` to its key); else its
    /// key is kept as `hint`.
    fn min_live(&mut self, now: u64) -> Option<Key> {
        loop {
            if let Some(e) = self.buckets[0].last() {
                if e.is_live() {
                    return Some(e.key);
                }
                self.pop_first();
                continue;
            }
            if let Some(h) = self.hint {
                if h.0 > now {
                    return Some(h);
                }
            }
            let b = self.first_bucket()?;
            // Liveness is checked only where it matters (it costs a visit to every call): stale
            // entries are re-bucketed like live ones and dropped when they reach bucket 0.
            // One pass for the smallest and the largest key.
            let mut it = self.buckets[b].iter().enumerate();
            let Some((_, first)) = it.next() else {
                self.mark_empty(b);
                continue;
            };
            let (mut min_at, mut min, mut max) = (0, wide(first.key), wide(first.key));
            for (i, e) in it {
                let k = wide(e.key);
                if k < min {
                    (min_at, min) = (i, k);
                }
                max = max.max(k);
            }
            let min_entry = &self.buckets[b][min_at];
            let min = min_entry.key;
            if min.0 > now {
                if !min_entry.is_live() {
                    // Never report a cancelled call's deadline: drop this bucket's stale entries.
                    let before = self.buckets[b].len();
                    self.buckets[b].retain(Entry::is_live);
                    self.len -= before - self.buckets[b].len();
                    if self.buckets[b].is_empty() {
                        self.mark_empty(b);
                    }
                    continue;
                }
                self.hint = Some(min);
                return Some(min);
            }
            let max: Key = ((max >> 64) as u64, max as u64);
            self.hint = None;
            self.mark_empty(b);
            let mut moving = std::mem::take(&mut self.buckets[b]);
            if max.0 <= now {
                // All of bucket `b` is due: sort it into bucket 0 as the next run, at once
                // (re-bucketing would move each entry about log2(len) more times).
                moving.sort_unstable_by_key(|e| std::cmp::Reverse(wide(e.key)));
                self.last = max;
                self.nonempty[0] |= 1;
                std::mem::swap(&mut self.buckets[0], &mut moving);
            } else {
                // Advance `last` to the minimum and re-bucket bucket `b` (every entry goes
                // lower).
                self.last = min;
                for e in moving.drain(..) {
                    self.put(e);
                }
            }
            if moving.capacity() <= 4096 {
                self.buckets[b] = moving; // keep the allocation for the next round
            }
        }
    }

    /// Removes the smallest entry of bucket 0.
    fn pop_first(&mut self) -> Option<Entry> {
        let e = self.buckets[0].pop()?;
        if self.buckets[0].is_empty() {
            self.mark_empty(0);
        }
        self.len -= 1;
        Some(e)
    }

    fn take_all(&mut self) -> Vec<Entry> {
        let mut all = Vec::with_capacity(self.len);
        for b in &mut self.buckets {
            all.append(b);
        }
        self.nonempty = [0; 3];
        self.len = 0;
        self.hint = None;
        all
    }

    /// Drops the stale entries and gives back spare memory.
    fn compact(&mut self) {
        self.len = 0;
        for (i, b) in self.buckets.iter_mut().enumerate() {
            b.retain(Entry::is_live);
            if b.capacity() > 4 * b.len().max(COMPACT_MIN) {
                b.shrink_to(2 * b.len().max(COMPACT_MIN));
            }
            self.len += b.len();
            if b.is_empty() {
                self.nonempty[i / 64] &= !(1 << (i % 64));
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flatten()
    }
}

struct QueueInner {
    heap: RadixHeap,
    next_seq: u64,
    /// Pending calls (entries that are live).
    live: usize,
}

/// The scheduled calls of one reactor or fake clock.
pub(crate) struct TimerQueue {
    inner: RefCell<QueueInner>,
    source: TimeSource,
    /// Keys count nanoseconds from here (no deadline is earlier: deadlines are never in the
    /// past of the queue's clock).
    base: Instant,
}

/// Drop the stale entries once there are this many entries and more than twice the live ones.
const COMPACT_MIN: usize = 64;

impl TimerQueue {
    pub(crate) fn new(source: TimeSource) -> Rc<TimerQueue> {
        let base = match &source {
            TimeSource::Monotonic => Instant::now(),
            TimeSource::Fake(now) => now.get(),
        };
        Rc::new(TimerQueue {
            inner: RefCell::new(QueueInner {
                heap: RadixHeap::new(),
                next_seq: 0,
                live: 0,
            }),
            source,
            base,
        })
    }

    pub(crate) fn now(&self) -> Instant {
        match &self.source {
            TimeSource::Monotonic => Instant::now(),
            TimeSource::Fake(now) => now.get(),
        }
    }

    /// `t` as nanoseconds since `base` (saturating: about 584 years fit).
    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Moves a fake clock forward (no-op for the monotonic source).
    pub(crate) fn set_fake_now(&self, t: Instant) {
        if let TimeSource::Fake(now) = &self.source {
            now.set(t);
        }
    }

    fn header(self: &Rc<Self>, delay: Duration) -> Header {
        Header {
            deadline: Cell::new(deadline_after(self.now(), delay)),
            seq: Cell::new(0),
            status: Cell::new(Status::Pending),
            queue: Rc::downgrade(self),
        }
    }

    pub(crate) fn schedule<F: FnOnce() + 'static>(
        self: &Rc<Self>,
        delay: Duration,
        f: F,
    ) -> DelayedCall {
        let call: Rc<dyn Call> = Rc::new(PlainCall {
            header: self.header(delay),
            func: Cell::new(Some(f)),
        });
        self.insert(call)
    }

    /// Schedules a call that gets the reactor running it.
    pub(crate) fn schedule_reactor<F: FnOnce(&Reactor) + 'static>(
        self: &Rc<Self>,
        delay: Duration,
        f: F,
    ) -> DelayedCall {
        let call: Rc<dyn Call> = Rc::new(ReactorCall {
            header: self.header(delay),
            func: Cell::new(Some(f)),
        });
        self.insert(call)
    }

    fn insert(&self, call: Rc<dyn Call>) -> DelayedCall {
        let deadline = call.header().deadline.get();
        let mut inner = self.inner.borrow_mut();
        inner.live += 1;
        self.push(&mut inner, &call, deadline);
        DelayedCall { state: call }
    }

    fn push(&self, inner: &mut QueueInner, call: &Rc<dyn Call>, deadline: Instant) {
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let h = call.header();
        h.seq.set(seq);
        h.deadline.set(deadline);
        inner.heap.push(Entry {
            key: (self.nanos(deadline), seq),
            call: call.clone(),
        });
    }

    fn move_call(&self, call: &Rc<dyn Call>, deadline: Instant) {
        let old = key_of(self, call.header());
        let mut inner = self.inner.borrow_mut();
        if inner.heap.hint == Some(old) {
            inner.heap.hint = None; // that entry goes stale
        }
        self.push(&mut inner, call, deadline);
        Self::maybe_compact(&mut inner);
    }

    /// A pending call with key `key` was cancelled.
    fn forget_one(&self, key: Key) {
        let mut inner = self.inner.borrow_mut();
        inner.live -= 1;
        if inner.heap.hint == Some(key) {
            inner.heap.hint = None;
        }
        Self::maybe_compact(&mut inner);
    }

    fn maybe_compact(inner: &mut QueueInner) {
        let len = inner.heap.len;
        if len >= COMPACT_MIN && len > 2 * inner.live {
            inner.heap.compact();
        }
    }

    /// The sequence number the next scheduled call will get: calls with a smaller one existed
    /// before this moment.
    pub(crate) fn seq_mark(&self) -> u64 {
        self.inner.borrow().next_seq
    }

    /// The deadline of the earliest pending call.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.inner.borrow().live == 0 {
            return None;
        }
        let now = self.nanos(self.now());
        let key = self.inner.borrow_mut().heap.min_live(now)?;
        Some(self.base + Duration::from_nanos(key.0))
    }

    /// Removes and returns the earliest call due at `now` whose sequence number is below
    /// `before_seq`, marking it called. The caller runs it with no borrow held.
    pub(crate) fn pop_due(&self, now: Instant, before_seq: u64) -> Option<Due> {
        let now = self.nanos(now);
        let mut inner = self.inner.borrow_mut();
        let key = inner.heap.min_live(now)?;
        if key.0 > now || key.1 >= before_seq {
            return None;
        }
        // Due, so `min_live` moved it into bucket 0.
        let entry = inner.heap.pop_first()?;
        inner.live -= 1;
        entry.call.header().status.set(Status::Called);
        Some(Due(entry.call))
    }

    /// Number of pending calls.
    pub(crate) fn len(&self) -> usize {
        self.inner.borrow().live
    }

    /// Number of queue entries, live or stale (for memory-bound tests).
    #[cfg(test)]
    pub(crate) fn heap_len(&self) -> usize {
        self.inner.borrow().heap.len
    }

    /// Handles to every pending call, earliest first.
    pub(crate) fn pending(&self) -> Vec<DelayedCall> {
        let inner = self.inner.borrow();
        let mut live: Vec<&Entry> = inner.heap.iter().filter(|e| e.is_live()).collect();
        live.sort_by_key(|e| e.key);
        live.into_iter()
            .map(|e| DelayedCall {
                state: e.call.clone(),
            })
            .collect()
    }

    /// Cancels every pending call (used when a reactor or clock is dropped, to break cycles).
    pub(crate) fn clear(&self) {
        let entries: Vec<Entry> = {
            let mut inner = self.inner.borrow_mut();
            inner.live = 0;
            inner.heap.take_all()
        };
        for e in &entries {
            if e.is_live() {
                e.call.header().status.set(Status::Cancelled);
            }
        }
        // With no borrow held: the functions may own anything.
        for e in &entries {
            if e.call.header().status.get() == Status::Cancelled {
                e.call.discard();
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Random schedules, cancels, resets, delays and clock moves against a plain model: every
    /// call fires exactly when due, in (deadline, scheduling order) order, and the queue never
    /// reports a cancelled call's deadline.
    #[test]
    fn fires_in_key_order_under_random_operations() {
        let start = Instant::now();
        let queue = TimerQueue::new(TimeSource::Fake(Cell::new(start)));
        let fired: Rc<RefCell<Vec<usize>>> = Rc::default();
        let mut calls: Vec<DelayedCall> = Vec::new();
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for round in 0..20_000 {
            match next(10) {
                0..=4 => {
                    let id = calls.len();
                    let f = fired.clone();
                    // Small delays in nanoseconds and microseconds, with many equal deadlines.
                    let delay = match next(3) {
                        0 => Duration::from_nanos(next(50)),
                        1 => Duration::from_micros(next(2000)),
                        _ => Duration::from_millis(next(5)),
                    };
                    calls.push(queue.schedule(delay, move || f.borrow_mut().push(id)));
                }
                5 if !calls.is_empty() => {
                    let _ = calls[next(calls.len() as u64) as usize].cancel();
                }
                6 if !calls.is_empty() => {
                    let c = &calls[next(calls.len() as u64) as usize];
                    let _ = if next(2) == 0 {
                        c.reset(Duration::from_micros(next(3000)))
                    } else {
                        c.delay(Duration::from_micros(next(300)))
                    };
                }
                _ => {
                    // Advance, checking the order of what fires against the handles.
                    let now = deadline_after(queue.now(), Duration::from_micros(next(1500)));
                    let expected_next = queue.next_deadline();
                    let mut want: Vec<(Instant, u64, usize)> = calls
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c.active() && c.time() <= now)
                        .map(|(i, c)| (c.time(), c.h().seq.get(), i))
                        .collect();
                    want.sort();
                    let earliest = calls
                        .iter()
                        .filter(|c| c.active())
                        .map(DelayedCall::time)
                        .min();
                    assert_eq!(expected_next, earliest, "round {round}");
                    queue.set_fake_now(now);
                    fired.borrow_mut().clear();
                    while let Some(call) = queue.pop_due(now, u64::MAX) {
                        call.run(None);
                    }
                    let got = fired.borrow().clone();
                    let want: Vec<usize> = want.into_iter().map(|w| w.2).collect();
                    assert_eq!(got, want, "round {round}");
                    assert!(got.iter().all(|&i| calls[i].called()));
                }
            }
            let live = calls.iter().filter(|c| c.active()).count();
            assert_eq!(queue.len(), live, "round {round}");
            let pending: Vec<Instant> = queue.pending().iter().map(DelayedCall::time).collect();
            assert!(pending.windows(2).all(|w| w[0] <= w[1]));
            assert_eq!(pending.len(), live);
        }
        queue.clear();
        assert!(calls.iter().all(|c| !c.active()));
    }
}
