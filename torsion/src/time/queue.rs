//! [`TimerQueue`]: the scheduled calls of one reactor or fake clock, over a
//! [`RadixHeap`](super::radix::RadixHeap).
//!
//! The queue is generic over the *context* its calls get when they run: a reactor's calls get
//! `&Reactor`, a fake clock's get `&Clock`. The queue never names either, so `time` does not
//! depend on the reactor; [`DelayedCall`] handles do not carry the context type at all.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use super::radix::{Key, Keyed, RadixHeap, COMPACT_MIN};
use super::{deadline_after, DelayedCall, Header, Scheduled, Status};

/// A scheduled call as its queue sees it: the handle's side ([`Scheduled`]) plus running it
/// with the queue's context.
trait Call<Cx>: Scheduled {
    /// Takes the function out and runs it with `cx`. Runs at most once.
    fn run(&self, cx: &Cx);
}

/// One scheduled call: its [`Header`], its queue and its function, in a single allocation
/// (the closure is stored inline, not boxed).
struct TimerCall<Cx: 'static, F> {
    header: Header,
    queue: Weak<TimerQueue<Cx>>,
    func: Cell<Option<F>>,
}

impl<Cx: 'static, F: FnOnce(&Cx) + 'static> Scheduled for TimerCall<Cx, F> {
    fn header(&self) -> &Header {
        &self.header
    }

    fn queue_alive(&self) -> bool {
        self.queue.strong_count() > 0
    }

    fn queue_now(&self) -> Option<Instant> {
        self.queue.upgrade().map(|q| q.now())
    }

    fn forget(&self) {
        if let Some(q) = self.queue.upgrade() {
            q.forget_one(key_of(&q, &self.header));
        }
    }

    fn move_to(self: Rc<Self>, deadline: Instant) {
        if let Some(q) = self.queue.upgrade() {
            let call: Rc<dyn Call<Cx>> = self;
            q.move_call(&call, deadline);
        }
    }

    fn discard(&self) {
        drop(self.func.take());
    }
}

impl<Cx: 'static, F: FnOnce(&Cx) + 'static> Call<Cx> for TimerCall<Cx, F> {
    fn run(&self, cx: &Cx) {
        if let Some(f) = self.func.take() {
            f(cx);
        }
    }
}

/// A due call taken out of the queue, to be run with no borrow held.
pub(crate) struct Due<Cx>(Rc<dyn Call<Cx>>);

impl<Cx> Due<Cx> {
    /// Runs the call with `cx`: the reactor or clock whose timer phase runs it.
    pub(crate) fn run(self, cx: &Cx) {
        self.0.run(cx);
    }
}

/// The current key of a pending call.
fn key_of<Cx: 'static>(queue: &TimerQueue<Cx>, h: &Header) -> Key {
    (queue.nanos(h.deadline.get()), h.seq.get())
}

struct Entry<Cx> {
    key: Key,
    call: Rc<dyn Call<Cx>>,
}

impl<Cx> Keyed for Entry<Cx> {
    fn key(&self) -> Key {
        self.key
    }

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

struct QueueInner<Cx> {
    heap: RadixHeap<Entry<Cx>>,
    next_seq: u64,
    /// Pending calls (entries that are live).
    live: usize,
}

/// The scheduled calls of one reactor or fake clock; each call gets a `&Cx` when it runs.
pub(crate) struct TimerQueue<Cx> {
    inner: RefCell<QueueInner<Cx>>,
    source: TimeSource,
    /// Keys count nanoseconds from here (no deadline is earlier: deadlines are never in the
    /// past of the queue's clock).
    base: Instant,
}

impl<Cx: 'static> TimerQueue<Cx> {
    pub(crate) fn new(source: TimeSource) -> Rc<TimerQueue<Cx>> {
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

    /// Schedules `f` to run once, `delay` from now; it gets the context of the timer phase
    /// that runs it, so it needs no reference of its own to the reactor or clock.
    pub(crate) fn schedule<F: FnOnce(&Cx) + 'static>(
        self: &Rc<Self>,
        delay: Duration,
        f: F,
    ) -> DelayedCall {
        let call = Rc::new(TimerCall {
            header: Header {
                deadline: Cell::new(deadline_after(self.now(), delay)),
                seq: Cell::new(0),
                status: Cell::new(Status::Pending),
            },
            queue: Rc::downgrade(self),
            func: Cell::new(Some(f)),
        });
        let deadline = call.header.deadline.get();
        let mut inner = self.inner.borrow_mut();
        inner.live += 1;
        let queued: Rc<dyn Call<Cx>> = call.clone();
        self.push(&mut inner, &queued, deadline);
        DelayedCall { state: call }
    }

    fn push(&self, inner: &mut QueueInner<Cx>, call: &Rc<dyn Call<Cx>>, deadline: Instant) {
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

    fn move_call(&self, call: &Rc<dyn Call<Cx>>, deadline: Instant) {
        let old = key_of(self, call.header());
        let mut inner = self.inner.borrow_mut();
        inner.heap.forget_hint(old); // that entry goes stale
        self.push(&mut inner, call, deadline);
        Self::maybe_compact(&mut inner);
    }

    /// A pending call with key `key` was cancelled.
    fn forget_one(&self, key: Key) {
        let mut inner = self.inner.borrow_mut();
        inner.live -= 1;
        inner.heap.forget_hint(key);
        Self::maybe_compact(&mut inner);
    }

    fn maybe_compact(inner: &mut QueueInner<Cx>) {
        let len = inner.heap.len();
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
    pub(crate) fn pop_due(&self, now: Instant, before_seq: u64) -> Option<Due<Cx>> {
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
        self.inner.borrow().heap.len()
    }

    /// Handles to every pending call, earliest first.
    pub(crate) fn pending(&self) -> Vec<DelayedCall> {
        let inner = self.inner.borrow();
        let mut live: Vec<&Entry<Cx>> = inner.heap.iter().filter(|e| e.is_live()).collect();
        live.sort_by_key(|e| e.key);
        live.into_iter()
            .map(|e| DelayedCall {
                state: e.call.clone(),
            })
            .collect()
    }

    /// Cancels every pending call (used when a reactor or clock is dropped, to break cycles).
    pub(crate) fn clear(&self) {
        let entries: Vec<Entry<Cx>> = {
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
