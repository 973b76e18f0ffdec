//! The type-erased engine behind [`Deferred`](super::Deferred): one shared chain of stages,
//! run iteratively.
//!
//! Values travel as `Box<dyn Any>` holding an `Option<T>`: a stage takes the `T` out and, when
//! its output has the same type, puts the output back into the same box, so a chain of
//! same-typed callbacks allocates nothing per stage beyond the stage closure itself.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use super::failure::{AlreadyCalled, Cancelled, ChainedToItself, Failure};

/// A value in the chain: a `Box<Option<T>>` for the current type `T`.
pub(crate) type Value = Box<dyn Any>;
/// The current result of a chain.
pub(crate) type Outcome = Result<Value, Failure>;
/// One stage (callback/errback pair), erased. It works on the chain's current result in place
/// (a same-typed value is written back into its own box, and the result is not moved in and
/// out of the stage), and returns the Deferred to wait on, if it returned one.
pub(crate) type Stage = Box<dyn FnOnce(&mut Outcome) -> Option<Rc<Chain>>>;

/// Boxes `v` as a chain value.
#[inline]
pub(crate) fn put_value<U: 'static>(v: U) -> Value {
    Box::new(Some(v))
}

/// A placeholder result, left where a stage took the failure out (it allocates nothing).
#[inline]
pub(crate) fn hole() -> Outcome {
    Ok(Box::new(()))
}

/// Takes the failure out of a result known to be one.
#[inline]
pub(crate) fn take_failure(o: &mut Outcome) -> Failure {
    match std::mem::replace(o, hole()) {
        Err(f) => f,
        Ok(_) => unreachable!("torsion: take_failure on a value"),
    }
}

/// Takes the `T` out of the (value) result `o`, leaving its box empty for the next value.
#[inline]
pub(crate) fn take_in_place<T: 'static>(o: &mut Outcome) -> T {
    let Ok(v) = o else {
        unreachable!("torsion: take_in_place on a failure")
    };
    // The types are checked statically: a stage always receives its own `T`.
    v.downcast_mut::<Option<T>>()
        .expect("torsion: unreachable: a Deferred stage received a value of another type")
        .take()
        .expect("torsion: a Deferred value was taken twice")
}

/// Writes the value `u` into `o`: into the same box when it held an `Option<U>` (a chain of
/// same-typed callbacks allocates nothing per stage), else into a new one.
#[inline]
pub(crate) fn put_in_place<U: 'static>(o: &mut Outcome, u: U) {
    if let Ok(v) = o {
        if let Some(slot) = v.downcast_mut::<Option<U>>() {
            *slot = Some(u);
            return;
        }
    }
    *o = Ok(put_value(u));
}

/// Runs `f` on the `T` inside the (value) result `o` and writes its result back in place.
#[inline]
pub(crate) fn map_result<T: 'static, U: 'static>(
    o: &mut Outcome,
    f: impl FnOnce(T) -> Result<U, Failure>,
) -> Option<Rc<Chain>> {
    match f(take_in_place::<T>(o)) {
        Ok(u) => put_in_place(o, u),
        Err(f) => *o = Err(f),
    }
    None
}

/// [`map_result`] for a callback returning a [`Step`](super::Step).
#[inline]
pub(crate) fn map_step<T: 'static, U: 'static>(
    o: &mut Outcome,
    f: impl FnOnce(T) -> super::Step<U>,
) -> Option<Rc<Chain>> {
    let step = f(take_in_place::<T>(o));
    put_step(o, step)
}

/// Writes a [`Step`](super::Step) into the result `o`; returns the Deferred to wait on.
#[inline]
pub(crate) fn put_step<U: 'static>(o: &mut Outcome, step: super::Step<U>) -> Option<Rc<Chain>> {
    match step {
        super::Step::Value(u) => put_in_place(o, u),
        super::Step::Failure(f) => *o = Err(f),
        super::Step::Deferred(d) => return Some(d.chain),
    }
    None
}

/// Takes the `T` out of a chain value.
#[inline]
pub(crate) fn take_value<T: 'static>(mut v: Value) -> T {
    v.downcast_mut::<Option<T>>()
        .and_then(Option::take)
        .expect("torsion: unreachable: a Deferred value of another type")
}

/// Clones the `T` inside a chain value (for observers: the chain keeps the original).
#[inline]
pub(crate) fn clone_value<T: Clone + 'static>(v: &Value) -> T {
    v.downcast_ref::<Option<T>>()
        .and_then(Option::as_ref)
        .cloned()
        .expect("torsion: unreachable: a Deferred value of another type")
}

/// Erased canceller: gets the chain being cancelled.
pub(crate) type Canceller = Box<dyn FnOnce(&Rc<Chain>)>;

/// How a chain reacts to `cancel`.
enum OnCancel {
    /// Twisted's `Deferred.cancel`, with this canceller (taken when it runs).
    Plain(Option<Canceller>),
    /// Twisted's `DeferredList.cancel`: when the list has not fired, cancel the inputs (the hook
    /// does it), and nothing else: no `Cancelled` failure, no suppressed late fire, and nothing
    /// at all once the list has fired, even while it waits on a Deferred returned by one of its
    /// callbacks.
    List(Rc<dyn Fn()>),
    /// A Deferred fed by another one ([`Deferred::hand_off`](super::Deferred::hand_off)):
    /// while unfired, cancelling it cancels the source (with the hook) and does nothing else,
    /// as cancelling a Twisted Deferred that waits on the source would; once fired, it is
    /// cancelled as a plain Deferred.
    Forward(Rc<dyn Fn()>),
}

struct State {
    /// `callback` or `errback` has been called.
    fired: bool,
    /// The current result; `None` before firing, while a stage runs, while waiting on another
    /// Deferred, and after the result was handed to an outer chain or taken.
    result: Option<Outcome>,
    stages: VecDeque<Stage>,
    /// User pauses (`pause`/`unpause`).
    paused: u32,
    /// The Deferred returned by a stage, which this chain waits for.
    waiting: Option<Rc<Chain>>,
    /// The chain waiting for this one (this one was returned by one of its stages).
    parent: Option<Rc<Chain>>,
    /// A loop is running this chain's stages (re-entrant calls leave the work to it).
    running: bool,
    on_cancel: OnCancel,
    /// Cancelled without a canceller: the next late fire is ignored once.
    suppress_already_called: bool,
    /// `cancel` has run (or is running) on this unfired chain.
    cancelling: bool,
}

/// One Deferred's state. Its types are checked statically by [`Deferred`](super::Deferred)
/// and [`Resolver`](super::Resolver); here values are erased.
pub(crate) struct Chain {
    st: RefCell<State>,
}

impl Chain {
    fn with(on_cancel: OnCancel) -> Rc<Chain> {
        Rc::new(Chain {
            st: RefCell::new(State {
                fired: false,
                result: None,
                stages: VecDeque::new(),
                paused: 0,
                waiting: None,
                parent: None,
                running: false,
                on_cancel,
                suppress_already_called: false,
                cancelling: false,
            }),
        })
    }

    pub(crate) fn new(canceller: Option<Canceller>) -> Rc<Chain> {
        Chain::with(OnCancel::Plain(canceller))
    }

    /// A chain cancelled as Twisted's `DeferredList`: `cancel_inputs` runs when the chain is
    /// cancelled before it fired.
    pub(crate) fn new_list(cancel_inputs: Rc<dyn Fn()>) -> Rc<Chain> {
        Chain::with(OnCancel::List(cancel_inputs))
    }

    /// A chain whose cancel before it fired is `cancel_source` and nothing else.
    pub(crate) fn new_forward(cancel_source: Rc<dyn Fn()>) -> Rc<Chain> {
        Chain::with(OnCancel::Forward(cancel_source))
    }

    /// A chain already fired with `outcome`.
    pub(crate) fn fired(outcome: Outcome) -> Rc<Chain> {
        let c = Chain::new(None);
        {
            let mut st = c.st.borrow_mut();
            st.fired = true;
            st.result = Some(outcome);
        }
        c
    }

    pub(crate) fn called(&self) -> bool {
        self.st.borrow().fired
    }

    pub(crate) fn paused(&self) -> u32 {
        self.st.borrow().paused
    }

    pub(crate) fn is_waiting(&self) -> bool {
        self.st.borrow().waiting.is_some()
    }

    /// True when the chain has a result that no stage is about to consume.
    pub(crate) fn has_result(&self) -> bool {
        let st = self.st.borrow();
        st.result.is_some() && st.stages.is_empty() && !st.running
    }

    /// Fires the chain (`callback` / `errback`).
    pub(crate) fn fire(self: &Rc<Self>, outcome: Outcome) -> Result<(), AlreadyCalled> {
        {
            let mut st = self.st.borrow_mut();
            if st.fired {
                if st.suppress_already_called {
                    st.suppress_already_called = false;
                    drop(st);
                    drop(outcome);
                    return Ok(());
                }
                return Err(AlreadyCalled);
            }
            st.fired = true;
            st.result = Some(outcome);
        }
        self.run();
        Ok(())
    }

    /// Appends a stage; runs it at once if the chain has fired and is not paused.
    pub(crate) fn add(self: &Rc<Self>, stage: Stage) {
        let fired = {
            let mut st = self.st.borrow_mut();
            st.stages.push_back(stage);
            st.fired
        };
        if fired {
            self.run();
        }
    }

    pub(crate) fn pause(&self) {
        self.st.borrow_mut().paused += 1;
    }

    /// Undoes one `pause`; an `unpause` with no pause is ignored.
    pub(crate) fn unpause(self: &Rc<Self>) {
        let run = {
            let mut st = self.st.borrow_mut();
            st.paused = st.paused.saturating_sub(1);
            st.paused == 0 && st.fired
        };
        if run {
            self.run();
        }
    }

    /// Twisted's `cancel`: an unfired chain runs its canceller and, unless that fired it,
    /// errbacks with [`Cancelled`]; a chain waiting on another Deferred cancels that one
    /// (iteratively, however deep the nesting). A list chain follows `DeferredList.cancel`
    /// (see [`OnCancel::List`]), wherever it is in the nesting.
    pub(crate) fn cancel(self: &Rc<Self>) {
        let mut target = self.clone();
        loop {
            let next = {
                let mut st = target.st.borrow_mut();
                match &st.on_cancel {
                    OnCancel::List(hook) | OnCancel::Forward(hook) if !st.fired => {
                        let hook = hook.clone();
                        drop(st);
                        hook();
                        return;
                    }
                    OnCancel::List(_) => return,
                    _ => {}
                }
                if st.fired {
                    match &st.waiting {
                        Some(inner) => inner.clone(),
                        None => return,
                    }
                } else {
                    let canceller = match &mut st.on_cancel {
                        OnCancel::Plain(c) => c.take(),
                        OnCancel::List(_) | OnCancel::Forward(_) => {
                            unreachable!("handled above")
                        }
                    };
                    // Only a Deferred made without a canceller ignores the next late fire. A
                    // cancel re-entered from the canceller (whose slot is now empty) must not
                    // set it: that chain has a canceller, and it is being run.
                    let had_canceller = canceller.is_some() || st.cancelling;
                    if !had_canceller {
                        st.suppress_already_called = true;
                    }
                    st.cancelling = true;
                    drop(st);
                    if let Some(c) = canceller {
                        c(&target);
                    }
                    if !target.called() {
                        let _ = target.fire(Err(Failure::new(Cancelled)));
                    }
                    return;
                }
            };
            target = next;
        }
    }

    /// Takes the result if the chain has one and nothing is pending.
    pub(crate) fn take_result(&self) -> Option<Outcome> {
        let mut st = self.st.borrow_mut();
        if st.running || !st.stages.is_empty() || st.waiting.is_some() {
            return None;
        }
        st.result.take()
    }

    /// Applies `f` to the result the chain holds now, if any (it is not taken).
    pub(crate) fn peek<R>(&self, f: impl FnOnce(&Outcome) -> R) -> Option<R> {
        let st = self.st.borrow();
        st.result.as_ref().map(f)
    }

    /// Runs stages, handing results outward to waiting chains, without recursion.
    pub(crate) fn run(self: &Rc<Self>) {
        let mut cur = self.clone();
        while let Some(parent) = cur.run_stages() {
            cur = parent;
        }
    }

    /// Runs this chain's stages until it is exhausted, paused or waiting. When exhausted with a
    /// parent waiting on it, hands the result to the parent and returns the parent to continue.
    fn run_stages(self: &Rc<Self>) -> Option<Rc<Chain>> {
        let mut st = self.st.borrow_mut();
        if st.running || !st.fired {
            return None;
        }
        st.running = true;
        loop {
            if st.paused > 0 || st.waiting.is_some() || st.result.is_none() {
                st.running = false;
                return None;
            }
            let Some(stage) = st.stages.pop_front() else {
                st.running = false;
                let parent = st.parent.take()?;
                let result = st.result.take();
                drop(st);
                {
                    let mut pst = parent.st.borrow_mut();
                    pst.result = result;
                    pst.waiting = None;
                }
                return Some(parent);
            };
            let mut cur = st.result.take().expect("checked above");
            drop(st);
            let next = match catch_unwind(AssertUnwindSafe(|| stage(&mut cur))) {
                Ok(next) => next,
                Err(payload) => {
                    cur = Err(Failure::from_panic(payload));
                    None
                }
            };
            match next {
                None => {
                    st = self.st.borrow_mut();
                    st.result = Some(cur);
                }
                Some(inner) => {
                    // `cur` holds what the stage left (an emptied value box or a hole).
                    drop(cur);
                    self.chain_to(inner);
                    st = self.st.borrow_mut();
                }
            }
        }
    }

    /// A stage returned `inner`: take its result now if it has one, else wait for it.
    fn chain_to(self: &Rc<Self>, inner: Rc<Chain>) {
        if Rc::ptr_eq(self, &inner) {
            // Waiting on itself would never end (Twisted warns and hangs): fail instead.
            self.st.borrow_mut().result = Some(Err(Failure::new(ChainedToItself)));
            return;
        }
        let mut ist = inner.st.borrow_mut();
        let ready = ist.fired
            && !ist.running
            && ist.paused == 0
            && ist.waiting.is_none()
            && ist.stages.is_empty()
            && ist.result.is_some();
        if ready {
            let r = ist.result.take();
            drop(ist);
            self.st.borrow_mut().result = r;
            return;
        }
        assert!(
            ist.parent.is_none(),
            "torsion: a Deferred can be returned by only one callback"
        );
        ist.parent = Some(self.clone());
        drop(ist);
        self.st.borrow_mut().waiting = Some(inner);
    }
}

/// What a dropped chain still owns: dropping it may drop other chains (a stage closure may own
/// a Deferred, which owns its stages, and so on), so nested drops are queued and run by the
/// outermost one in a loop instead of recursing.
type Remains = (
    VecDeque<Stage>,
    Option<Outcome>,
    Option<Rc<Chain>>,
    Option<Rc<Chain>>,
    OnCancel,
);

thread_local! {
    static DROPPING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static LATER: RefCell<Vec<Remains>> = const { RefCell::new(Vec::new()) };
}

fn queue_for_later(remains: Remains) -> Result<(), Remains> {
    let mut slot = Some(remains);
    match LATER.try_with(|l| l.borrow_mut().push(slot.take().expect("once"))) {
        Ok(()) => Ok(()),
        Err(_) => Err(slot.take().expect("not pushed")),
    }
}

/// Resets `DROPPING` even if a destructor panics.
struct DropGuard;

impl Drop for DropGuard {
    fn drop(&mut self) {
        let _ = DROPPING.try_with(|d| d.set(false));
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        let st = self.st.get_mut();
        let result = st.result.take();
        if let Some(Err(f)) = &result {
            f.log_unhandled();
        }
        let remains: Remains = (
            std::mem::take(&mut st.stages),
            result,
            st.waiting.take(),
            st.parent.take(),
            std::mem::replace(&mut st.on_cancel, OnCancel::Plain(None)),
        );
        // (During thread-local teardown the queue may be gone: then drop inline.)
        match DROPPING.try_with(|d| d.replace(true)) {
            Ok(true) => {
                if let Err(remains) = queue_for_later(remains) {
                    drop(remains);
                }
            }
            Ok(false) => {
                let _guard = DropGuard;
                drop(remains);
                while let Some(next) = LATER.try_with(|l| l.borrow_mut().pop()).ok().flatten() {
                    drop(next);
                }
            }
            Err(_) => drop(remains),
        }
    }
}
