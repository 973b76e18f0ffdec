//! Deferreds: Twisted's callback/errback chains, typed.
//!
//! A [`Deferred<T>`] stands for a result of type `T` that is not there yet. It is made together
//! with its [`Resolver<T>`], the handle that fires it once with
//! [`callback`](Resolver::callback) (a value) or [`errback`](Resolver::errback) (a [`Failure`]);
//! the Deferred runs a chain of stages on that result, exactly as Twisted's
//! `twisted.internet.defer.Deferred`:
//!
//! * **Firing.** A Deferred fires once; firing again is an [`AlreadyCalled`] error.
//! * **Stages.** [`add_callbacks(cb, eb)`](Deferred::add_callbacks) adds one stage;
//!   [`add_callback`](Deferred::add_callback) adds `(cb, pass-through)`,
//!   [`add_errback`](Deferred::add_errback) `(pass-through, eb)` and
//!   [`add_both`](Deferred::add_both) `(f, f)`. A stage gets the result of the previous one: a
//!   value goes to its callback, a failure to its errback. A callback that fails at stage N sends
//!   its failure to the errback of stage N+1, never to its own stage's errback; an errback that
//!   returns a value switches the chain back to callbacks.
//! * **Late stages.** Stages added after the Deferred fired run at once, synchronously.
//! * **Chaining.** A callback that returns a Deferred
//!   ([`add_callback_deferred`](Deferred::add_callback_deferred), or any stage returning a
//!   [`Step::Deferred`]) pauses the chain until that one fires; the chain then goes on with its
//!   result. The chain is run by a loop, never by recursion, so 100,000 nested Deferreds or a
//!   chain of 100,000 stages run in a small stack.
//! * **Pausing and cancelling.** [`pause`](Deferred::pause)/[`unpause`](Deferred::unpause)
//!   keep a counter. [`cancel`](Deferred::cancel) runs the canceller given to
//!   [`with_canceller`](Deferred::with_canceller); if that did not fire the Deferred, it errbacks
//!   with [`Cancelled`]. Without a canceller, the next late `callback`/`errback` is ignored once
//!   (the producer did not know its result was no longer wanted). Cancelling a Deferred that waits
//!   on another one cancels that one. A [`DeferredList`] (and [`gather_results`]) is cancelled as
//!   Twisted's `DeferredList.cancel`: only its inputs are cancelled, only if it has not fired.
//! * **Timeouts.** [`add_timeout`](Deferred::add_timeout) cancels the Deferred when the time is
//!   up and turns the resulting [`Cancelled`] failure into [`TimedOut`].
//! * **Failures** ([`Failure`]) hold any error type, its message and the backtrace of where they
//!   were made; clones share them. A panic in a callback is caught and becomes a failure
//!   ([`Panicked`]) instead of unwinding through the reactor.
//! * **Observers.** [`observe`](Deferred::observe) (for `T: Clone`) gives a new Deferred that
//!   fires with a copy of the result reached at the current end of the chain, which goes on with
//!   the original: one result for many waiters, as Twisted's `DeferredList` watches its inputs.
//! * **Futures.** A Deferred can be awaited (it implements `IntoFuture`; dropping the future
//!   before the result arrives cancels the Deferred), and [`ensure_deferred`] /
//!   [`Deferred::from_future`] run a future on the reactor's local executor as a Deferred
//!   (cancelling the Deferred drops the future; its error or panic becomes the [`Failure`]).
//! * **Unhandled errors.** When the last handle to a Deferred whose chain ended in a failure is
//!   dropped, `Unhandled error in Deferred:` and the failure are logged (with `tracing::error!`)
//!   right then — not whenever a garbage collector gets round to it, as in Twisted. A program
//!   that installed no `tracing` subscriber gets them on stderr.
//!
//! ```
//! use torsion::defer::{Deferred, Failure};
//!
//! let (d, fire) = Deferred::<u32>::new();
//! let d = d
//!     .add_callback(|n| Ok(n * 2))                 // u32 -> u32
//!     .add_callback(|n| Ok(format!("{n} apples"))) // u32 -> String
//!     .add_errback(|f| Ok(format!("no apples ({f})")));
//! fire.callback(21).unwrap();
//! assert_eq!(d.try_result().unwrap().unwrap(), "42 apples");
//! ```
//!
//! # What changed in Deferreds v2
//!
//! * **Firing is checked by the compiler.** [`Deferred::new`] and [`Deferred::with_canceller`]
//!   return the Deferred *and* its [`Resolver`]; only the resolver fires, and it is typed by the
//!   chain's input type, so firing with a value of another type does not compile (it used to
//!   compile and panic). `Deferred::callback`, `Deferred::errback` and `Deferred::resolver` are
//!   gone:
//!
//!   ```compile_fail,E0308
//!   use torsion::defer::Deferred;
//!
//!   let (d, fire) = Deferred::<u32>::new();
//!   let _d = d.map(|n| n.to_string()); // the chain's output is a String now ...
//!   fire.callback(String::from("x")).unwrap(); // ... but its input is still a u32
//!   ```
//!
//!   ```compile_fail,E0599
//!   use torsion::defer::Deferred;
//!
//!   let (d, _fire) = Deferred::<u32>::new();
//!   d.callback(1).unwrap(); // a Deferred cannot fire itself any more: its Resolver does
//!   ```
//! * **Callbacks have concrete return types.** `add_callback`, `add_errback`, `add_both` and
//!   `add_callbacks` take closures returning `Result<U, Failure>`, so `Ok(v)` needs no
//!   turbofish; a callback returning a Deferred is added with
//!   [`add_callback_deferred`](Deferred::add_callback_deferred) /
//!   [`add_errback_deferred`](Deferred::add_errback_deferred), and the general form (a value, a
//!   failure or a Deferred chosen at run time) is
//!   [`add_callbacks_step`](Deferred::add_callbacks_step) with [`Step`].
//! * **DeferredList and `gather_results` cancel as in Twisted** (see above), and take their
//!   inputs by value or by reference ([`ListInput`]); [`Failure`] is cheaply cloneable;
//!   [`Failure::trap`] lends the error as a [`Trapped`] instead of moving it out;
//!   [`Deferred::observe`] watches a Deferred without taking it.
//! * [`Deferred::hand_off`] returns a Deferred from a callback while the program keeps using it
//!   (Twisted's behaviour), and [`Deferred::current_result`] reads `d.result`.
//! * Threads: [`Reactor::defer_to_thread`](crate::Reactor::defer_to_thread),
//!   [`call_in_thread`](crate::Reactor::call_in_thread) and
//!   [`Handle::blocking_call_from_thread`](crate::Handle::blocking_call_from_thread), on a
//!   bounded pool owned by the reactor; [`Reactor::run_until_complete`](crate::Reactor::run_until_complete)
//!   runs a reactor until a Deferred (or future) has its result.
//! * A callback returning the Deferred it was added to fails with [`ChainedToItself`] instead of
//!   waiting on itself forever; a `cancel` re-entered from a canceller no longer makes the next
//!   late fire be ignored; [`TimedOut`]'s message is "timed out after ...".
//!
//! # Ownership, next to Twisted
//!
//! | Twisted | torsion |
//! |---|---|
//! | `d = Deferred()`; `d.callback(v)` | `let (d, fire) = Deferred::new();` `fire.callback(v)` |
//! | many references to one `Deferred` | one consuming `Deferred<T>` (adds stages) and any number of [`Resolver`] clones (fire, cancel) |
//! | `d.addCallback(f)` returns `d` | `d.add_callback(f)` consumes `d` and returns the same chain typed by `f`'s output |
//! | `DeferredList([d1, d2])`, the program keeps `d1`, `d2` | `DeferredList::new([&d1, &d2])` (observes them, `T: Clone`) or `DeferredList::new([d1, d2])` (takes them) |
//! | several callers wait on one Deferred (a cache) | each gets [`observe`](Deferred::observe) (`T: Clone`) |
//! | a `Failure` object shared by several chains | a [`Failure`] clone (shares the error and backtrace) |
//!
//! # Differences from Twisted forced by typing
//!
//! * **The type changes along the chain.** `add_callback` consumes the `Deferred<T>` and returns
//!   a `Deferred<U>` for the same chain (Twisted returns the same object). The compiler checks
//!   that each stage takes what the previous one gives. Because a handle is consumed when a
//!   stage is added, a `Deferred` is not `Clone`; [`observe`](Deferred::observe) gives other
//!   waiters their own Deferred. A handle reads the chain's current result only when it is of
//!   the handle's type ([`current_result`](Deferred::current_result)): not while the chain is
//!   paused before a stage that changes the type (Twisted reads any `d.result`).
//! * **Firing goes through the [`Resolver`]**, typed by the input type. Twisted fires the same
//!   object it adds callbacks to; here the two roles are two handles made together.
//! * **Values must be of the chain's type.** A Twisted callback may return anything, including
//!   `None`; here every stage's output has one type. So where Twisted puts `None` into a
//!   Deferred, torsion cannot: a [`DeferredList`] with `consume_errors` leaves an observed
//!   input's failure in place, marked handled (Twisted replaces it with `None`), and a
//!   [`race`] leaves an observed input's value in place (Twisted: `None`; racing the first
//!   halves of [`hand_off`](Deferred::hand_off) gives Twisted's behaviour, with `()` for
//!   `None`). An input taken by value is gone, so nothing can tell.
//! * **Callbacks return a [`Step`]-like value.** A callback returns `Result<U, Failure>` (`Ok`
//!   for a value, `Err` for a failure, so `?` re-raises), a `Deferred<U>` to wait on, or a
//!   [`Step<U>`] to choose among the three at run time; [`map`](Deferred::map) takes a plain
//!   `FnOnce(T) -> U`. An errback gets the [`Failure`] by value and returns the same kinds.
//!   `add_both` gets a `Result<T, Failure>`.
//! * **A returned Deferred is consumed.** A Deferred returned by a callback is moved into the
//!   chain, so nothing can be added to it afterwards (Twisted leaves it with result `None`).
//!   To go on using it as Twisted programs do, return the first half of
//!   [`hand_off`](Deferred::hand_off) and keep the second, which goes on with `()` where
//!   Twisted has `None`.
//! * **`pause` and waiting are separate.** In Twisted, waiting on a returned Deferred is an
//!   internal `pause()`, so a stray `unpause()` could resume a chain whose result is still a
//!   Deferred; here the user's pause counter is separate from the waiting state, and an
//!   `unpause` with no `pause` is ignored (Twisted lets the counter go negative).
//! * **Results are taken, not shared.** Reading a result (with
//!   [`try_result`](Deferred::try_result), awaiting, or a stage) moves it out; observers get
//!   clones. A DeferredList without `consume_errors` leaves a clone of each input failure in an
//!   input it took by value, so it is logged as unhandled just as in Twisted.
//! * **Re-entrant hand-overs.** When a callback returns a Deferred whose own stages are running
//!   (the callback runs inside them), Twisted hands over the result that Deferred holds between
//!   two of its callbacks; torsion's loop finishes the stages in progress first. And when a
//!   Deferred hands its result to a chain that is paused, Twisted leaves that Deferred's later
//!   callbacks unrun until something touches it again; torsion runs them.
//! * **Unhandled-error timing.** Logged at drop of the last handle (including [`Resolver`]s),
//!   which is deterministic. A Deferred kept alive by a reference cycle (for example a callback
//!   holding a resolver of its own Deferred, or two never-fired Deferreds waiting on each other)
//!   is never dropped and never logs.
//! * **Panics.** The panic hook still runs (so a panicking callback prints its usual message),
//!   and the failure's backtrace is the one of the place that caught the panic.

mod bridge;
mod chain;
mod failure;
mod future;
mod list;
mod run;
mod sync;
pub(crate) mod threads;

use std::fmt;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

use chain::{
    clone_value, map_result, map_step, put_step, put_value, take_failure, take_value, Chain,
    Outcome,
};

pub use bridge::{ensure_deferred, IntoDeferred, LocalFuture, LocalSpawn};
pub use failure::{
    AlreadyCalled, Cancelled, ChainedToItself, Failure, FailureGroup, FirstError, Message,
    Panicked, TimedOut, Trapped,
};
pub use future::DeferredFuture;
pub use list::{gather_results, race, DeferredList, ListInput, ListResult};
pub use run::ReactorStopped;
pub use sync::{DeferredLock, DeferredQueue, DeferredSemaphore, QueueOverflow, QueueUnderflow};
pub use threads::{RemoteFailure, DEFAULT_POOL_SIZE};

use crate::time::ReactorTime;

/// A result of type `T` that will arrive later, with a chain of callbacks and errbacks to run on
/// it (Twisted's `Deferred`). See the [module docs](self) for the rules.
#[must_use = "a Deferred does nothing unless fired, and its failure is logged as unhandled if dropped"]
pub struct Deferred<T> {
    chain: Rc<Chain>,
    _t: PhantomData<fn() -> T>,
}

/// The fire-only, cloneable handle of a [`Deferred`], typed by the Deferred's input type: made
/// together with the Deferred by [`Deferred::new`] or [`Deferred::with_canceller`].
///
/// It keeps the Deferred alive (a failure is logged as unhandled only once every handle is gone).
pub struct Resolver<T> {
    chain: Rc<Chain>,
    _t: PhantomData<fn(T)>,
}

impl<T> Clone for Resolver<T> {
    fn clone(&self) -> Self {
        Resolver {
            chain: self.chain.clone(),
            _t: PhantomData,
        }
    }
}

/// What a callback or errback may return: a value, a failure, or a Deferred to wait on.
///
/// Implemented for `Result<U, Failure>`, [`Deferred<U>`] and [`Step<U>`].
pub trait IntoStep {
    /// The value type the chain has after this stage.
    type Output: 'static;
    /// Converts into a [`Step`].
    fn into_step(self) -> Step<Self::Output>;
}

/// A stage's result, chosen at run time (a Twisted callback may return a value or a Deferred).
pub enum Step<U> {
    /// Go on with this value.
    Value(U),
    /// Go on with this failure.
    Failure(Failure),
    /// Wait for this Deferred and go on with its result.
    Deferred(Deferred<U>),
}

impl<U: 'static> IntoStep for Result<U, Failure> {
    type Output = U;
    #[inline]
    fn into_step(self) -> Step<U> {
        match self {
            Ok(u) => Step::Value(u),
            Err(f) => Step::Failure(f),
        }
    }
}

impl<U: 'static> IntoStep for Deferred<U> {
    type Output = U;
    fn into_step(self) -> Step<U> {
        Step::Deferred(self)
    }
}

impl<U: 'static> IntoStep for Step<U> {
    type Output = U;
    fn into_step(self) -> Step<U> {
        self
    }
}

fn outcome_into<T: 'static>(o: Outcome) -> Result<T, Failure> {
    o.map(|v| take_value::<T>(v))
}

impl<T: 'static> Deferred<T> {
    fn from_chain(chain: Rc<Chain>) -> Deferred<T> {
        Deferred {
            chain,
            _t: PhantomData,
        }
    }

    fn retype<U>(self) -> Deferred<U> {
        Deferred {
            chain: self.chain,
            _t: PhantomData,
        }
    }

    fn resolver_of(chain: &Rc<Chain>) -> Resolver<T> {
        Resolver {
            chain: chain.clone(),
            _t: PhantomData,
        }
    }

    /// A new, unfired Deferred with no canceller, and the [`Resolver`] that fires it (Twisted's
    /// `Deferred()`).
    ///
    /// ```
    /// use torsion::defer::Deferred;
    ///
    /// let (d, fire) = Deferred::new();
    /// let d = d.add_callback(|n: u32| Ok(n + 1));
    /// fire.callback(1).unwrap();
    /// assert_eq!(d.try_result().unwrap().unwrap(), 2);
    /// ```
    #[doc(alias = "Deferred()")]
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> (Deferred<T>, Resolver<T>) {
        let chain = Chain::new(None);
        (Deferred::from_chain(chain.clone()), Resolver::of(chain))
    }

    /// A new Deferred whose [`cancel`](Deferred::cancel) runs `canceller` (Twisted's
    /// `Deferred(canceller)`), and its [`Resolver`]. The canceller may fire the Deferred through
    /// the resolver it gets; if it does not, the Deferred errbacks with [`Cancelled`].
    ///
    /// ```
    /// use torsion::defer::{Cancelled, Deferred};
    ///
    /// let (d, _fire) = Deferred::<u32>::with_canceller(|fire| {
    ///     fire.callback(0).unwrap(); // a cancelled lookup answers 0
    /// });
    /// d.cancel();
    /// assert_eq!(d.try_result().unwrap().unwrap(), 0);
    /// ```
    pub fn with_canceller<F: FnOnce(&Resolver<T>) + 'static>(
        canceller: F,
    ) -> (Deferred<T>, Resolver<T>) {
        let c: chain::Canceller =
            Box::new(move |chain: &Rc<Chain>| canceller(&Deferred::resolver_of(chain)));
        let chain = Chain::new(Some(c));
        (Deferred::from_chain(chain.clone()), Resolver::of(chain))
    }

    /// A Deferred already fired with `value` (Twisted's `succeed`).
    pub fn succeed(value: T) -> Deferred<T> {
        Deferred::from_chain(Chain::fired(Ok(put_value(value))))
    }

    /// A Deferred already failed with `failure` (Twisted's `fail`).
    pub fn fail(failure: impl Into<Failure>) -> Deferred<T> {
        Deferred::from_chain(Chain::fired(Err(failure.into())))
    }

    /// Adds one stage: `callback` runs on a value, `errback` on a failure (Twisted's
    /// `addCallbacks`). Whatever either returns is the next stage's input. For sides that may
    /// return a Deferred, see [`add_callbacks_step`](Deferred::add_callbacks_step).
    #[doc(alias = "addCallbacks")]
    pub fn add_callbacks<U, C, E>(self, callback: C, errback: E) -> Deferred<U>
    where
        U: 'static,
        C: FnOnce(T) -> Result<U, Failure> + 'static,
        E: FnOnce(Failure) -> Result<U, Failure> + 'static,
    {
        self.chain.add(Box::new(move |o: &mut Outcome| match o {
            Ok(_) => map_result(o, callback),
            Err(_) => {
                *o = errback(take_failure(o)).map(put_value);
                None
            }
        }));
        self.retype()
    }

    /// The general form of [`add_callbacks`](Deferred::add_callbacks): each side returns a
    /// `Result<U, Failure>`, a `Deferred<U>` to wait on, or a [`Step<U>`] choosing among the
    /// three at run time (a Twisted callback may return a value or a Deferred).
    ///
    /// ```
    /// use torsion::defer::{succeed, Deferred, Step};
    ///
    /// let (d, fire) = Deferred::<u32>::new();
    /// let d = d.add_callbacks_step(
    ///     |n| if n > 9 { Step::Deferred(succeed(n / 10)) } else { Step::Value(n) },
    ///     Step::Failure,
    /// );
    /// fire.callback(42).unwrap();
    /// assert_eq!(d.try_result().unwrap().unwrap(), 4);
    /// ```
    pub fn add_callbacks_step<C, E, R1, R2>(self, callback: C, errback: E) -> Deferred<R1::Output>
    where
        C: FnOnce(T) -> R1 + 'static,
        E: FnOnce(Failure) -> R2 + 'static,
        R1: IntoStep,
        R2: IntoStep<Output = R1::Output>,
    {
        self.chain.add(Box::new(move |o: &mut Outcome| match o {
            Ok(_) => map_step(o, |t: T| callback(t).into_step()),
            Err(_) => {
                let step = errback(take_failure(o)).into_step();
                put_step(o, step)
            }
        }));
        self.retype()
    }

    /// Adds `(callback, pass-through)` (Twisted's `addCallback`). `callback` returns
    /// `Ok(value)` or `Err(failure)` (`?` works on any error).
    #[doc(alias = "addCallback")]
    #[doc(alias = "then")]
    pub fn add_callback<U, C>(self, callback: C) -> Deferred<U>
    where
        U: 'static,
        C: FnOnce(T) -> Result<U, Failure> + 'static,
    {
        self.chain.add(Box::new(move |o: &mut Outcome| match o {
            Ok(_) => map_result(o, callback),
            Err(_) => None,
        }));
        self.retype()
    }

    /// Adds `(callback, pass-through)` where `callback` returns a Deferred: the chain waits for
    /// it and goes on with its result (Twisted's `addCallback` with a callback returning a
    /// Deferred).
    ///
    /// ```
    /// use torsion::defer::Deferred;
    ///
    /// let (inner, fire_inner) = Deferred::<String>::new();
    /// let (d, fire) = Deferred::<u32>::new();
    /// let d = d.add_callback_deferred(move |_| inner);
    /// fire.callback(1).unwrap();
    /// assert!(d.is_waiting());
    /// fire_inner.callback("later".into()).unwrap();
    /// assert_eq!(d.try_result().unwrap().unwrap(), "later");
    /// ```
    pub fn add_callback_deferred<U, C>(self, callback: C) -> Deferred<U>
    where
        U: 'static,
        C: FnOnce(T) -> Deferred<U> + 'static,
    {
        self.chain.add(Box::new(move |o: &mut Outcome| match o {
            Ok(_) => map_step(o, |t: T| Step::Deferred(callback(t))),
            Err(_) => None,
        }));
        self.retype()
    }

    /// Adds `(pass-through, errback)` (Twisted's `addErrback`). The errback may recover with a
    /// value of the same type, which switches the chain back to callbacks.
    #[doc(alias = "addErrback")]
    pub fn add_errback<E>(self, errback: E) -> Deferred<T>
    where
        E: FnOnce(Failure) -> Result<T, Failure> + 'static,
    {
        self.chain.add(Box::new(move |o: &mut Outcome| {
            if o.is_err() {
                *o = errback(take_failure(o)).map(put_value);
            }
            None
        }));
        self
    }

    /// Adds `(pass-through, errback)` where `errback` returns a Deferred to wait on.
    pub fn add_errback_deferred<E>(self, errback: E) -> Deferred<T>
    where
        E: FnOnce(Failure) -> Deferred<T> + 'static,
    {
        self.chain.add(Box::new(move |o: &mut Outcome| match o {
            Ok(_) => None,
            Err(_) => Some(errback(take_failure(o)).chain),
        }));
        self
    }

    /// Adds `(f, f)` (Twisted's `addBoth`): `f` gets the value or the failure as a `Result`.
    #[doc(alias = "addBoth")]
    pub fn add_both<U, F>(self, f: F) -> Deferred<U>
    where
        U: 'static,
        F: FnOnce(Result<T, Failure>) -> Result<U, Failure> + 'static,
    {
        self.chain.add(Box::new(move |o: &mut Outcome| match o {
            Ok(_) => map_result(o, |t: T| f(Ok(t))),
            Err(_) => {
                *o = f(Err(take_failure(o))).map(put_value);
                None
            }
        }));
        self.retype()
    }

    /// Adds a callback that cannot fail: `add_callback(|t| Ok(f(t)))`.
    pub fn map<U: 'static, F: FnOnce(T) -> U + 'static>(self, f: F) -> Deferred<U> {
        self.add_callback(move |t| Ok(f(t)))
    }

    /// A new Deferred that fires with a copy of the result this chain has at its current end,
    /// when it gets there; this chain goes on with the original (a pass-through stage, as
    /// Twisted's `DeferredList` adds to each input). Every observer gets its own copy: one
    /// result for many waiters. Cancelling an observer does not cancel this Deferred (the
    /// observer fails with [`Cancelled`] and ignores the result when it comes).
    ///
    /// ```
    /// use torsion::defer::Deferred;
    ///
    /// let (d, fire) = Deferred::<String>::new();
    /// let first = d.observe();
    /// let second = d.observe();
    /// fire.callback("poem".into()).unwrap();
    /// assert_eq!(first.try_result().unwrap().unwrap(), "poem");
    /// assert_eq!(second.try_result().unwrap().unwrap(), "poem");
    /// assert_eq!(d.try_result().unwrap().unwrap(), "poem"); // still there
    /// ```
    pub fn observe(&self) -> Deferred<T>
    where
        T: Clone,
    {
        let (out, fire) = Deferred::<T>::new();
        self.watch(move |r| {
            let _ = fire.fire(r);
        });
        out
    }

    /// Splits the chain where it ends now: the first Deferred gets the result this chain has
    /// at this point, and the second is the rest of this chain, which goes on with `()`.
    ///
    /// This is what Twisted does to a Deferred that a callback returns while the program keeps
    /// using it: the waiting chain takes the result (at once if there is one, else when the
    /// Deferred's stages so far have run), and the Deferred itself goes on with `None`. Return
    /// the first half from the callback and keep the second:
    /// `let (for_chain, mine) = d.hand_off();`. Cancelling the first half before it has its
    /// result cancels this Deferred, and does nothing else (as cancelling the Twisted chain
    /// waiting on it would).
    ///
    /// ```
    /// use torsion::defer::{succeed, Deferred};
    ///
    /// let (d, fire) = Deferred::<u32>::new();
    /// let (for_outer, d) = d.hand_off();
    /// let outer = succeed(()).add_callback_deferred(move |()| for_outer);
    /// let d = d.add_callback(|()| Ok("after the hand-off")); // Twisted: gets None
    /// fire.callback(7).unwrap();
    /// assert_eq!(outer.try_result().unwrap().unwrap(), 7);
    /// assert_eq!(d.try_result().unwrap().unwrap(), "after the hand-off");
    /// ```
    pub fn hand_off(self) -> (Deferred<T>, Deferred<()>) {
        let source = Rc::downgrade(&self.chain);
        let target = Chain::new_forward(Rc::new(move || {
            if let Some(c) = source.upgrade() {
                c.cancel();
            }
        }));
        let fire = Resolver::<T>::of(target.clone());
        let rest = self.add_both(move |r| {
            let _ = fire.fire(r);
            Ok(())
        });
        (Deferred::from_chain(target), rest)
    }

    /// Adds a pass-through stage that gives `f` a copy of the result (failures are shared
    /// clones); the chain goes on with the original.
    pub(crate) fn watch(&self, f: impl FnOnce(Result<T, Failure>) + 'static)
    where
        T: Clone,
    {
        self.chain.add(Box::new(move |o: &mut Outcome| {
            match o {
                Ok(v) => f(Ok(clone_value::<T>(v))),
                Err(fl) => f(Err(fl.clone())),
            }
            None
        }));
    }

    /// Adds a stage that fires `other` with this chain's result (Twisted's `chainDeferred`);
    /// this chain goes on with `()`. An `AlreadyCalled` error from `other` becomes the failure.
    #[doc(alias = "chainDeferred")]
    pub fn chain_deferred(self, other: Resolver<T>) -> Deferred<()> {
        self.add_both(move |r| other.fire(r).map_err(Failure::new))
    }

    /// Adds one to the pause counter: no stage runs until as many `unpause` calls.
    pub fn pause(&self) {
        self.chain.pause();
    }

    /// Takes one from the pause counter; at zero, a fired Deferred goes on with its stages.
    pub fn unpause(&self) {
        self.chain.unpause();
    }

    /// The number of `pause` calls not yet matched by `unpause`.
    pub fn paused(&self) -> u32 {
        self.chain.paused()
    }

    /// Cancels the Deferred (Twisted's `cancel`; see the [module docs](self)). Cancelling a
    /// fired Deferred does nothing, unless it waits on a Deferred returned by a callback, which
    /// is cancelled instead. A [`DeferredList`] cancels only its inputs, and only before it
    /// fired.
    pub fn cancel(&self) {
        self.chain.cancel();
    }

    /// True once `callback` or `errback` was called (Twisted's `called`).
    pub fn called(&self) -> bool {
        self.chain.called()
    }

    /// True when the Deferred has a final result no stage is waiting to process: it has fired,
    /// is not waiting on another Deferred, and is neither paused with stages left nor running.
    pub fn has_result(&self) -> bool {
        self.chain.has_result()
    }

    /// True while the chain waits for a Deferred returned by one of its callbacks.
    pub fn is_waiting(&self) -> bool {
        self.chain.is_waiting()
    }

    /// A copy of the result the chain holds now (Twisted's `d.result`), without taking it: what
    /// its next stage gets, also while it is paused. `None` before it fired, while it waits on
    /// a Deferred returned by a callback, once its result was taken (by
    /// [`try_result`](Deferred::try_result), an await, or a Deferred waiting on this one), and
    /// while it is paused before a stage that changes the type: the chain then holds a value of
    /// an earlier stage's type, which this handle cannot show (Twisted can).
    ///
    /// ```
    /// use torsion::defer::Deferred;
    ///
    /// let (d, fire) = Deferred::<u32>::new();
    /// assert!(d.current_result().is_none());
    /// d.pause();
    /// let d = d.map(|n| n + 1);
    /// fire.callback(4).unwrap();
    /// assert_eq!(d.current_result().unwrap().unwrap(), 4); // the +1 has not run yet
    /// let s = d.map(|n| n.to_string()); // paused before a u32 -> String stage
    /// assert!(s.current_result().is_none());
    /// s.unpause();
    /// assert_eq!(s.current_result().unwrap().unwrap(), "5");
    /// ```
    #[doc(alias = "result")]
    pub fn current_result(&self) -> Option<Result<T, Failure>>
    where
        T: Clone,
    {
        self.chain
            .peek(|o| match o {
                Ok(v) => v.downcast_ref::<Option<T>>()?.clone().map(Ok),
                Err(f) => Some(Err(f.clone())),
            })
            .flatten()
    }

    /// Takes the result if there is one (like Twisted's test helpers `successResultOf` and
    /// `failureResultOf`), or gives the Deferred back. A failure taken this way is handled.
    ///
    /// # Errors
    /// The Deferred itself, when it has no result yet.
    pub fn try_result(self) -> Result<Result<T, Failure>, Deferred<T>> {
        match self.chain.take_result() {
            Some(o) => Ok(outcome_into::<T>(o)),
            None => Err(self),
        }
    }

    /// Cancels the Deferred if it has not fired within `timeout` on `clock`, and turns the
    /// [`Cancelled`] failure of that cancellation into [`TimedOut`] (Twisted's `addTimeout`).
    /// The timer is cancelled as soon as the Deferred fires. The timeout stage is added at the
    /// current end of the chain.
    #[doc(alias = "addTimeout")]
    pub fn add_timeout<C: ReactorTime + ?Sized>(self, timeout: Duration, clock: &C) -> Deferred<T> {
        let timed_out = Rc::new(std::cell::Cell::new(false));
        let flag = timed_out.clone();
        let chain = self.chain.clone();
        let call = clock.schedule_boxed(
            timeout,
            Box::new(move || {
                flag.set(true);
                chain.cancel();
            }),
        );
        self.chain.add(Box::new(move |o: &mut Outcome| {
            if call.active() {
                let _ = call.cancel();
            }
            if matches!(o, Err(f) if timed_out.get() && f.check::<Cancelled>()) {
                *o = Err(Failure::new(TimedOut { after: timeout }));
            }
            None
        }));
        self
    }

    /// Adds an erased stage (for the crate's own helpers that pass results through untouched).
    pub(crate) fn add_raw(self, stage: chain::Stage) -> Deferred<T> {
        self.chain.add(stage);
        self
    }
}

impl<T: 'static> Resolver<T> {
    fn of(chain: Rc<Chain>) -> Resolver<T> {
        Resolver {
            chain,
            _t: PhantomData,
        }
    }

    /// Fires the Deferred with `value` (Twisted's `callback`).
    ///
    /// # Errors
    /// [`AlreadyCalled`] when it has already been fired (unless it was cancelled without a
    /// canceller and this is the first late fire, which is ignored).
    pub fn callback(&self, value: T) -> Result<(), AlreadyCalled> {
        self.fire(Ok(value))
    }

    /// Fires the Deferred with a failure (Twisted's `errback`).
    ///
    /// # Errors
    /// [`AlreadyCalled`], as [`Resolver::callback`].
    pub fn errback(&self, failure: impl Into<Failure>) -> Result<(), AlreadyCalled> {
        self.fire(Err(failure.into()))
    }

    /// Fires with a value or a failure.
    ///
    /// # Errors
    /// [`AlreadyCalled`], as [`Resolver::callback`].
    pub fn fire(&self, result: Result<T, Failure>) -> Result<(), AlreadyCalled> {
        self.chain.fire(result.map(|v| put_value(v)))
    }

    /// True once the Deferred was fired.
    pub fn called(&self) -> bool {
        self.chain.called()
    }

    /// Cancels the Deferred, as [`Deferred::cancel`].
    pub fn cancel(&self) {
        self.chain.cancel();
    }
}

impl<T> fmt::Debug for Deferred<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if !self.chain.called() {
            "pending"
        } else if self.chain.is_waiting() {
            "waiting"
        } else {
            "fired"
        };
        f.debug_struct("Deferred")
            .field("type", &std::any::type_name::<T>())
            .field("state", &state)
            .field("paused", &self.chain.paused())
            .finish()
    }
}

impl<T> fmt::Debug for Resolver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("type", &std::any::type_name::<T>())
            .field("called", &self.chain.called())
            .finish()
    }
}

/// A Deferred already fired with `value` (Twisted's `succeed`).
pub fn succeed<T: 'static>(value: T) -> Deferred<T> {
    Deferred::succeed(value)
}

/// A Deferred already failed with `failure` (Twisted's `fail`).
pub fn fail<T: 'static>(failure: impl Into<Failure>) -> Deferred<T> {
    Deferred::fail(failure)
}

/// Calls `f` and wraps what it returns in a Deferred (Twisted's `maybeDeferred`): a value in a
/// fired Deferred, a failure (or a panic) in a failed one, a Deferred as it is.
///
/// ```
/// use torsion::defer::maybe_deferred;
///
/// let d = maybe_deferred(|| Ok(3));
/// assert_eq!(d.try_result().unwrap().unwrap(), 3);
/// ```
#[doc(alias = "maybeDeferred")]
pub fn maybe_deferred<F, R>(f: F) -> Deferred<R::Output>
where
    F: FnOnce() -> R,
    R: IntoStep,
{
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => match r.into_step() {
            Step::Value(v) => Deferred::succeed(v),
            Step::Failure(fl) => Deferred::fail(fl),
            Step::Deferred(d) => d,
        },
        Err(payload) => Deferred::fail(Failure::from_panic(payload)),
    }
}
