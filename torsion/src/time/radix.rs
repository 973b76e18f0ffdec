//! The radix heap behind [`TimerQueue`](super::TimerQueue): its keys, its invariants, and the
//! randomized model test of the queue built on it.

/// A queue key: (deadline in nanoseconds since the queue's base instant, sequence number).
/// Keys are unique (every push takes a new sequence number) and order calls as documented.
pub(super) type Key = (u64, u64);

/// A key as one integer with the same order (one comparison instead of two).
fn wide(k: Key) -> u128 {
    (u128::from(k.0) << 64) | u128::from(k.1)
}

/// What the heap stores: a key, and whether the entry still stands for a pending call (a
/// *stale* entry is dropped when met).
pub(super) trait Keyed {
    /// The entry's key (fixed for the entry's life).
    fn key(&self) -> Key;
    /// False once the call was cancelled, ran, or was moved (to an entry with another key).
    fn is_live(&self) -> bool;
}

/// Drop the stale entries once there are this many entries and more than twice the live ones.
pub(super) const COMPACT_MIN: usize = 64;

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
pub(super) struct RadixHeap<E> {
    buckets: Vec<Vec<E>>,
    nonempty: [u64; 3],
    last: Key,
    len: usize,
    hint: Option<Key>,
}

impl<E: Keyed> RadixHeap<E> {
    pub(super) fn new() -> RadixHeap<E> {
        RadixHeap {
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            nonempty: [0; 3],
            last: (0, 0),
            len: 0,
            hint: None,
        }
    }

    fn put(&mut self, e: E) {
        let b = bucket_of(e.key(), self.last);
        self.nonempty[b / 64] |= 1 << (b % 64);
        self.buckets[b].push(e);
    }

    pub(super) fn push(&mut self, e: E) {
        if e.key() < self.last {
            // Not monotonic (see the invariants): start over from the smallest possible key.
            let all = self.take_all();
            self.last = (0, 0);
            self.len = all.len();
            for x in all {
                self.put(x);
            }
        }
        if let Some(h) = self.hint {
            if e.key() < h {
                self.hint = Some(e.key());
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
    pub(super) fn min_live(&mut self, now: u64) -> Option<Key> {
        loop {
            if let Some(e) = self.buckets[0].last() {
                if e.is_live() {
                    return Some(e.key());
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
            let (mut min_at, mut min, mut max) = (0, wide(first.key()), wide(first.key()));
            for (i, e) in it {
                let k = wide(e.key());
                if k < min {
                    (min_at, min) = (i, k);
                }
                max = max.max(k);
            }
            let min_entry = &self.buckets[b][min_at];
            let min = min_entry.key();
            if min.0 > now {
                if !min_entry.is_live() {
                    // Never report a cancelled call's deadline: drop this bucket's stale entries.
                    let before = self.buckets[b].len();
                    self.buckets[b].retain(E::is_live);
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
                moving.sort_unstable_by_key(|e| std::cmp::Reverse(wide(e.key())));
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

    /// Number of entries, live or stale.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Forgets the `hint` if it is `key` (whose entry is going stale).
    pub(super) fn forget_hint(&mut self, key: Key) {
        if self.hint == Some(key) {
            self.hint = None;
        }
    }

    /// Removes the smallest entry of bucket 0.
    pub(super) fn pop_first(&mut self) -> Option<E> {
        let e = self.buckets[0].pop()?;
        if self.buckets[0].is_empty() {
            self.mark_empty(0);
        }
        self.len -= 1;
        Some(e)
    }

    pub(super) fn take_all(&mut self) -> Vec<E> {
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
    pub(super) fn compact(&mut self) {
        self.len = 0;
        for (i, b) in self.buckets.iter_mut().enumerate() {
            b.retain(E::is_live);
            if b.capacity() > 4 * b.len().max(COMPACT_MIN) {
                b.shrink_to(2 * b.len().max(COMPACT_MIN));
            }
            self.len += b.len();
            if b.is_empty() {
                self.nonempty[i / 64] &= !(1 << (i % 64));
            }
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &E> {
        self.buckets.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use crate::time::{deadline_after, DelayedCall, TimeSource, TimerQueue};

    /// Random schedules, cancels, resets, delays and clock moves against a plain model: every
    /// call fires exactly when due, in (deadline, scheduling order) order, and the queue never
    /// reports a cancelled call's deadline. It drives the heap through a [`TimerQueue`] (whose
    /// calls here get `&()`), the only way it is used.
    #[test]
    fn fires_in_key_order_under_random_operations() {
        let start = Instant::now();
        let queue = TimerQueue::<()>::new(TimeSource::Fake(Cell::new(start)));
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
                    calls.push(queue.schedule(delay, move |_: &()| f.borrow_mut().push(id)));
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
                        call.run(&());
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
