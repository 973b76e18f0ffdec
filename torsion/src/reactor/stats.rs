//! Reactor statistics: plain counters kept on the reactor's thread, copied into a [`Stats`]
//! snapshot only when someone asks ([`Reactor::stats`], or [`Handle::stats`] from another
//! thread).
//!
//! Counting costs a few additions per iteration. Measuring where the time goes (blocked in the
//! poller, or running callbacks) costs four clock reads per iteration, so it is off until
//! [`Reactor::set_time_accounting`] turns it on.

use std::cell::Cell;
use std::fmt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Handle, Reactor};
use crate::Error;

/// A snapshot of one reactor's statistics, totals since it was created.
///
/// # Examples
/// ```
/// use std::time::Duration;
///
/// let reactor = torsion::Reactor::new()?;
/// reactor.set_time_accounting(true);
/// reactor.call_later(Duration::from_millis(5), |r| r.stop().unwrap());
/// reactor.run()?;
/// let stats = reactor.stats();
/// assert!(stats.iterations >= 2);
/// assert!(stats.poll_time + stats.callback_time > Duration::ZERO);
/// println!("{stats}");
/// # Ok::<(), torsion::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The backend's name.
    pub backend: &'static str,
    /// Loop iterations run (by `run` or `iterate`).
    pub iterations: u64,
    /// Readiness events the poller reported (the reactor's own waker included).
    pub events: u64,
    /// Reads dispatched again because an edge-triggered read said more was waiting.
    pub reads_again: u64,
    /// Whether `poll_time` and `callback_time` are being measured
    /// ([`Reactor::set_time_accounting`]).
    pub time_accounting: bool,
    /// Time spent in the poller (blocked, or in the system call), while measured.
    pub poll_time: Duration,
    /// Time spent in the rest of the iterations (callbacks, timers, queued calls), while
    /// measured.
    pub callback_time: Duration,
    /// Delayed calls pending now.
    pub timers_pending: usize,
    /// Registrations now (descriptors the reactor knows, with or without interest).
    pub registrations: usize,
    /// Bytes received by torsion's sockets on the reactor's thread.
    pub bytes_read: u64,
    /// Bytes sent by torsion's sockets on the reactor's thread.
    pub bytes_written: u64,
    /// Connections accepted by torsion's listeners on the reactor's thread.
    pub connections_accepted: u64,
    /// Socket operations completed through the io_uring completion queue (receives, sends,
    /// accepts, cancellations) and dispatched to torsion's transports; 0 on the readiness
    /// backends.
    pub completions: u64,
    /// Times a connection's multishot receive stopped because the io_uring provided-buffer
    /// ring was empty (ENOBUFS) and was armed again; no byte is lost or reordered when it
    /// happens, but a rising count says the ring is too small for the load.
    pub buffer_ring_exhausted: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backend={} iterations={} events={} reads_again={} timers={} registrations={} \
             accepted={} bytes_read={} bytes_written={} completions={} buffer_ring_exhausted={}",
            self.backend,
            self.iterations,
            self.events,
            self.reads_again,
            self.timers_pending,
            self.registrations,
            self.connections_accepted,
            self.bytes_read,
            self.bytes_written,
            self.completions,
            self.buffer_ring_exhausted
        )?;
        if self.time_accounting {
            write!(
                f,
                " poll_time={:.3}s callback_time={:.3}s",
                self.poll_time.as_secs_f64(),
                self.callback_time.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

/// The counters, updated in place by the loop.
#[derive(Default)]
pub(super) struct Counters {
    iterations: Cell<u64>,
    events: Cell<u64>,
    reads_again: Cell<u64>,
    timing: Cell<bool>,
    poll_time: Cell<Duration>,
    callback_time: Cell<Duration>,
    /// Bytes read, written and connections accepted, attributed to this reactor so far.
    read: Cell<u64>,
    written: Cell<u64>,
    accepted: Cell<u64>,
    /// The thread's totals when they were last attributed.
    seen: Cell<(u64, u64, u64)>,
    /// io_uring operations completed and dispatched.
    completions: Cell<u64>,
    /// Multishot receives re-armed after the buffer ring ran out.
    exhausted: Cell<u64>,
}

/// The clock readings of one iteration, taken only while time accounting is on.
pub(super) struct IterationClock {
    start: Instant,
    poll: Option<(Instant, Instant)>,
}

impl Counters {
    pub(super) fn new() -> Counters {
        let c = Counters::default();
        c.seen.set(crate::sys::io_totals());
        c
    }

    /// Counts an iteration and starts its clock when time is accounted.
    pub(super) fn iteration_started(&self) -> Option<IterationClock> {
        self.iterations.set(self.iterations.get() + 1);
        self.timing.get().then(|| IterationClock {
            start: Instant::now(),
            poll: None,
        })
    }

    /// Counts `n` io_uring completions dispatched.
    #[allow(dead_code)] // used by the completion transport
    pub(crate) fn completed(&self, n: usize) {
        self.completions.set(self.completions.get() + n as u64);
    }

    /// Counts a multishot receive re-armed after ENOBUFS.
    #[allow(dead_code)] // used by the completion transport
    pub(crate) fn buffer_ring_exhausted(&self) {
        self.exhausted.set(self.exhausted.get() + 1);
    }

    pub(super) fn polled(&self, events: usize, again: usize) {
        self.events.set(self.events.get() + events as u64);
        self.reads_again.set(self.reads_again.get() + again as u64);
    }

    /// Attributes the thread's socket totals since the last call to this reactor, and the
    /// iteration's time.
    pub(super) fn iteration_ended(&self, clock: Option<IterationClock>) {
        let (r, w, a) = crate::sys::io_totals();
        let (r0, w0, a0) = self.seen.replace((r, w, a));
        self.read
            .set(self.read.get().wrapping_add(r.wrapping_sub(r0)));
        self.written
            .set(self.written.get().wrapping_add(w.wrapping_sub(w0)));
        self.accepted
            .set(self.accepted.get().wrapping_add(a.wrapping_sub(a0)));
        if let Some(clock) = clock {
            let end = Instant::now();
            let total = end.saturating_duration_since(clock.start);
            let polled = clock
                .poll
                .map_or(Duration::ZERO, |(a, b)| b.saturating_duration_since(a));
            self.poll_time.set(self.poll_time.get() + polled);
            self.callback_time
                .set(self.callback_time.get() + total.saturating_sub(polled));
        }
    }
}

impl IterationClock {
    /// Records the poller's call, from `start` to now.
    pub(super) fn poll_ended(&mut self, start: Instant) {
        self.poll = Some((start, Instant::now()));
    }
}

impl Reactor {
    /// A snapshot of this reactor's statistics.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.stats;
        // Socket totals of the thread not yet attributed (I/O since the last iteration).
        let (r, w, a) = crate::sys::io_totals();
        let (r0, w0, a0) = c.seen.get();
        Stats {
            backend: self.poller_name(),
            iterations: c.iterations.get(),
            events: c.events.get(),
            reads_again: c.reads_again.get(),
            time_accounting: c.timing.get(),
            poll_time: c.poll_time.get(),
            callback_time: c.callback_time.get(),
            timers_pending: self.inner.timers.len(),
            registrations: self.descriptor_count(),
            bytes_read: c.read.get().wrapping_add(r.wrapping_sub(r0)),
            bytes_written: c.written.get().wrapping_add(w.wrapping_sub(w0)),
            connections_accepted: c.accepted.get().wrapping_add(a.wrapping_sub(a0)),
            completions: c.completions.get(),
            buffer_ring_exhausted: c.exhausted.get(),
        }
    }

    /// Turns measuring where the loop's time goes ([`Stats::poll_time`],
    /// [`Stats::callback_time`]) on or off; off by default (it reads the clock four times per
    /// iteration).
    pub fn set_time_accounting(&self, on: bool) {
        self.inner.stats.timing.set(on);
    }
}

impl Handle {
    /// Asks the reactor for a [`Stats`] snapshot from another thread: the answer arrives on
    /// the returned channel once the reactor runs its next iteration (wait with
    /// [`recv_timeout`](mpsc::Receiver::recv_timeout); never block on it from the reactor's
    /// own thread).
    ///
    /// # Errors
    /// [`Error::ReactorGone`] when the reactor was dropped.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// let reactor = torsion::Reactor::new()?;
    /// let handle = reactor.handle();
    /// let asker = std::thread::spawn(move || {
    ///     let stats = handle.stats()?.recv_timeout(Duration::from_secs(30)).unwrap();
    ///     handle.stop()?;
    ///     Ok::<_, torsion::Error>(stats)
    /// });
    /// reactor.run()?;
    /// let stats = asker.join().unwrap()?;
    /// assert!(stats.iterations >= 1);
    /// # Ok::<(), torsion::Error>(())
    /// ```
    pub fn stats(&self) -> Result<mpsc::Receiver<Stats>, Error> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.call_from_thread(move |r| {
            let _ = tx.send(r.stats());
        })?;
        Ok(rx)
    }
}
