//! Time helpers (Twisted's `twisted.internet.task`): [`defer_later`], [`LoopingCall`], and
//! [`react`] to run an async (or Deferred-returning) main on a new reactor.
//!
//! Everything here takes its time from a [`ReactorTime`], so it runs on the real reactor and on
//! the fake [`Clock`](crate::testing::Clock) alike; tests advance the clock instead of sleeping.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::defer::{maybe_deferred, Deferred, Failure, IntoDeferred, IntoStep, Resolver};
use crate::time::{DelayedCall, ReactorTime};
use crate::Reactor;

/// A Deferred that fires with the result of `f`, called `delay` from now on `clock` (Twisted's
/// `deferLater`). `f` may return a value, a failure or a Deferred, and a panic in it becomes a
/// failure. Cancelling the Deferred before the delay is up cancels the call, and the Deferred
/// fails with [`Cancelled`](crate::defer::Cancelled).
///
/// ```
/// use std::time::Duration;
/// use torsion::{defer::Failure, task::defer_later, testing::Clock};
///
/// let clock = Clock::new();
/// let d = defer_later(&clock, Duration::from_secs(3), || Ok("done"));
/// clock.advance(Duration::from_secs(2));
/// assert!(!d.called());
/// clock.advance(Duration::from_secs(1));
/// assert_eq!(d.try_result().unwrap().unwrap(), "done");
/// ```
#[doc(alias = "deferLater")]
pub fn defer_later<C, F, R>(clock: &C, delay: Duration, f: F) -> Deferred<R::Output>
where
    C: ReactorTime + ?Sized,
    F: FnOnce() -> R + 'static,
    R: IntoStep,
{
    let call: Rc<RefCell<Option<DelayedCall>>> = Rc::new(RefCell::new(None));
    let to_cancel = call.clone();
    let (d, fire) = Deferred::<()>::with_canceller(move |_| {
        let c = to_cancel.borrow_mut().take();
        if let Some(c) = c {
            let _ = c.cancel();
        }
    });
    let scheduled = clock.schedule_boxed(
        delay,
        Box::new(move || {
            let _ = fire.callback(());
        }),
    );
    *call.borrow_mut() = Some(scheduled);
    d.add_callback_deferred(move |()| maybe_deferred(f))
}

/// The function of a [`LoopingCall`], given the number of intervals elapsed (always 1 unless
/// made with [`LoopingCall::with_count`]).
type LoopFn = Box<dyn FnMut(u64) -> Deferred<()>>;

struct LoopState {
    running: bool,
    interval: Duration,
    start_time: Instant,
    run_at_start: bool,
    /// The time of the last call (for the count of `with_count`).
    real_last_time: Option<Instant>,
    call: Option<DelayedCall>,
    deferred: Option<Resolver<()>>,
}

struct LoopInner {
    clock: Rc<dyn ReactorTime>,
    f: RefCell<Option<LoopFn>>,
    counting: bool,
    state: RefCell<LoopState>,
}

/// Calls a function every `interval` (Twisted's `LoopingCall`). Clones share the loop.
///
/// [`start`](LoopingCall::start) returns a Deferred that fires when [`stop`](LoopingCall::stop)
/// is called, or fails with the function's failure (which also stops the loop). When the
/// function returns a Deferred, the next call is scheduled once that Deferred fires. Calls are
/// aligned on `start time + k × interval`: intervals missed (because the process was busy or
/// the function's Deferred took long) are skipped, not caught up;
/// [`with_count`](LoopingCall::with_count) tells the function how many elapsed.
///
/// ```
/// use std::{cell::Cell, rc::Rc, time::Duration};
/// use torsion::{defer::Failure, task::LoopingCall, testing::Clock};
///
/// let clock = Clock::new();
/// let ticks = Rc::new(Cell::new(0));
/// let t = ticks.clone();
/// let lc = LoopingCall::new(clock.clone(), move || {
///     t.set(t.get() + 1);
///     Ok(())
/// });
/// let done = lc.start(Duration::from_secs(1), true); // calls at once, then every second
/// clock.pump(&[Duration::from_secs(1); 3]);
/// assert_eq!(ticks.get(), 4);
/// lc.stop();
/// assert!(done.has_result());
/// ```
#[derive(Clone)]
pub struct LoopingCall {
    inner: Rc<LoopInner>,
}

impl LoopingCall {
    /// A loop calling `f` on `clock` (not started). `f` returns `Ok(())`, a failure, or a
    /// `Deferred<()>` to wait on.
    pub fn new<C, F, R>(clock: C, mut f: F) -> LoopingCall
    where
        C: ReactorTime + 'static,
        F: FnMut() -> R + 'static,
        R: IntoStep<Output = ()>,
    {
        LoopingCall::build(
            Rc::new(clock),
            Box::new(move |_| maybe_deferred(&mut f)),
            false,
        )
    }

    /// A loop calling `f` with the number of intervals elapsed since its previous call
    /// (Twisted's `LoopingCall.withCount`): 1 normally, more when calls were skipped. With
    /// `start(interval, true)` the first call gets 1; with a zero interval every call gets 1.
    pub fn with_count<C, F, R>(clock: C, mut f: F) -> LoopingCall
    where
        C: ReactorTime + 'static,
        F: FnMut(u64) -> R + 'static,
        R: IntoStep<Output = ()>,
    {
        LoopingCall::build(
            Rc::new(clock),
            Box::new(move |n| maybe_deferred(|| f(n))),
            true,
        )
    }

    fn build(clock: Rc<dyn ReactorTime>, f: LoopFn, counting: bool) -> LoopingCall {
        let now = clock.now();
        LoopingCall {
            inner: Rc::new(LoopInner {
                clock,
                f: RefCell::new(Some(f)),
                counting,
                state: RefCell::new(LoopState {
                    running: false,
                    interval: Duration::ZERO,
                    start_time: now,
                    run_at_start: false,
                    real_last_time: None,
                    call: None,
                    deferred: None,
                }),
            }),
        }
    }

    /// Starts calling every `interval`, first at once when `now` is true, else after one
    /// interval. The Deferred fires when the loop is stopped, or fails with the failure of a
    /// call.
    ///
    /// # Panics
    /// When the loop is already running (Twisted asserts the same).
    pub fn start(&self, interval: Duration, now: bool) -> Deferred<()> {
        let (d, fire) = Deferred::<()>::new();
        {
            let mut st = self.inner.state.borrow_mut();
            assert!(
                !st.running,
                "Tried to start an already running LoopingCall."
            );
            st.running = true;
            st.deferred = Some(fire);
            st.start_time = self.inner.clock.now();
            st.interval = interval;
            st.run_at_start = now;
            st.real_last_time = None;
        }
        if now {
            self.inner.call();
        } else {
            let start = self.inner.state.borrow().start_time;
            self.inner.schedule_from(start);
        }
        d
    }

    /// Stops the loop. The Deferred of `start` fires now, or, if a call's Deferred is still
    /// pending, when it fires.
    ///
    /// # Panics
    /// When the loop is not running (Twisted asserts the same).
    pub fn stop(&self) {
        let fire = {
            let mut st = self.inner.state.borrow_mut();
            assert!(
                st.running,
                "Tried to stop a LoopingCall that was not running."
            );
            st.running = false;
            match st.call.take() {
                Some(call) => {
                    let _ = call.cancel();
                    st.deferred.take()
                }
                None => None,
            }
        };
        if let Some(r) = fire {
            let _ = r.callback(());
        }
    }

    /// Restarts the interval from now (Twisted's `reset`): the next call is one interval away.
    ///
    /// # Panics
    /// When the loop is not running.
    pub fn reset(&self) {
        let restart = {
            let mut st = self.inner.state.borrow_mut();
            assert!(
                st.running,
                "Tried to reset a LoopingCall that was not running."
            );
            match st.call.take() {
                Some(call) => {
                    let _ = call.cancel();
                    st.start_time = self.inner.clock.now();
                    Some(st.start_time)
                }
                None => None,
            }
        };
        if let Some(t) = restart {
            self.inner.schedule_from(t);
        }
    }

    /// True between `start` and `stop` (or a failed call).
    pub fn running(&self) -> bool {
        self.inner.state.borrow().running
    }

    /// The interval given to `start`.
    pub fn interval(&self) -> Duration {
        self.inner.state.borrow().interval
    }
}

impl LoopInner {
    /// One call of the function, then the next scheduling (Twisted's `LoopingCall.__call__`).
    fn call(self: &Rc<Self>) {
        self.state.borrow_mut().call = None;
        let count = if self.counting { self.count() } else { 1 };
        let d = if count == 0 {
            Deferred::succeed(())
        } else {
            let f = self.f.borrow_mut().take();
            match f {
                Some(mut f) => {
                    let d = f(count);
                    *self.f.borrow_mut() = Some(f);
                    d
                }
                // The function is running (it re-entered the loop): nothing to call.
                None => Deferred::succeed(()),
            }
        };
        let (me, me2) = (self.clone(), self.clone());
        let _ = d.add_callbacks(
            move |()| {
                me.after_call();
                Ok(())
            },
            move |failure| {
                let r = {
                    let mut st = me2.state.borrow_mut();
                    st.running = false;
                    st.deferred.take()
                };
                if let Some(r) = r {
                    let _ = r.errback(failure);
                }
                Ok(())
            },
        );
    }

    fn after_call(self: &Rc<Self>) {
        let (running, fire) = {
            let mut st = self.state.borrow_mut();
            if st.running {
                (true, None)
            } else {
                (false, st.deferred.take())
            }
        };
        if running {
            self.schedule_from(self.clock.now());
        } else if let Some(r) = fire {
            let _ = r.callback(());
        }
    }

    /// Schedules the next call at the first interval boundary after `when`.
    fn schedule_from(self: &Rc<Self>, when: Instant) {
        let delay = {
            let st = self.state.borrow();
            let interval = st.interval.as_nanos();
            if interval == 0 {
                Duration::ZERO
            } else {
                let running_for = when.saturating_duration_since(st.start_time).as_nanos();
                nanos(interval - running_for % interval)
            }
        };
        let me = self.clone();
        let call = self
            .clock
            .schedule_boxed(delay, Box::new(move || me.call()));
        self.state.borrow_mut().call = Some(call);
    }

    /// Intervals elapsed since the previous call (Twisted's `withCount` counter).
    fn count(&self) -> u64 {
        let now = self.clock.now();
        let mut st = self.state.borrow_mut();
        let interval = st.interval.as_nanos();
        if interval == 0 {
            st.real_last_time = Some(now);
            return 1;
        }
        let start = st.start_time;
        let interval_of =
            |t: Instant| (t.saturating_duration_since(start).as_nanos() / interval) as i128;
        let last = match st.real_last_time {
            Some(t) => interval_of(t),
            None if st.run_at_start => -1,
            None => 0,
        };
        let count = interval_of(now) - last;
        if count > 0 {
            st.real_last_time = Some(now);
            count as u64
        } else {
            0
        }
    }
}

fn nanos(n: u128) -> Duration {
    Duration::new((n / 1_000_000_000) as u64, (n % 1_000_000_000) as u32)
}

impl fmt::Debug for LoopingCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.state.borrow();
        f.debug_struct("LoopingCall")
            .field("running", &st.running)
            .field("interval", &st.interval)
            .finish()
    }
}

/// Runs `main` on a new reactor until it finishes, and returns the process's exit code
/// (Twisted's `task.react`).
///
/// `main` gets the reactor and returns a future of `Result<T, Failure>` (typically an
/// `async move` block, run on the reactor's local executor) or a [`Deferred`]. When its result
/// is ready, the reactor stops. A failure is printed to stderr with its backtrace and gives
/// [`ExitCode::FAILURE`](std::process::ExitCode::FAILURE); a value gives
/// [`ExitCode::SUCCESS`](std::process::ExitCode::SUCCESS). Twisted's `react` exits the process
/// itself; here `main` returns the code (`fn main() -> ExitCode { task::react(...) }`), so that
/// destructors run. If the reactor is stopped by something else before `main` finishes, the
/// code is success, as in Twisted.
///
/// ```
/// use std::process::ExitCode;
/// use std::time::Duration;
/// use torsion::{defer::Failure, task};
///
/// let code = task::react(|reactor| async move {
///     let n = task::defer_later(&reactor, Duration::from_millis(1), || Ok(2)).await?;
///     assert_eq!(n, 2);
///     Ok(())
/// });
/// assert_eq!(code, ExitCode::SUCCESS);
/// ```
pub fn react<F, R, T>(main: F) -> std::process::ExitCode
where
    F: FnOnce(Reactor) -> R,
    R: IntoDeferred<T>,
    T: 'static,
{
    use std::process::ExitCode;
    let reactor = match Reactor::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("react: cannot create the reactor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome: Rc<RefCell<Option<Failure>>> = Rc::default();
    let finished = main(reactor.clone()).into_deferred(&reactor);
    let (o, r) = (outcome.clone(), reactor.clone());
    let _ = finished.add_both(move |result: Result<T, Failure>| {
        if let Err(f) = result {
            *o.borrow_mut() = Some(f);
        }
        r.call_when_running(|r| {
            let _ = r.stop();
        });
        Ok(())
    });
    if let Err(e) = reactor.run() {
        eprintln!("react: the reactor failed: {e}");
        return ExitCode::FAILURE;
    }
    let failure = outcome.borrow_mut().take();
    match failure {
        Some(f) => {
            eprintln!("main function encountered error\n{f:?}");
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}
