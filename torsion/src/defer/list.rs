//! Waiting on several Deferreds: [`DeferredList`], [`gather_results`] and [`race`], built on a
//! pass-through stage added to each input ([`ListInput`]).

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use super::chain::{clone_value, Chain, Outcome};
use super::{AlreadyCalled, Deferred, Failure, FailureGroup, FirstError, Resolver};

/// What a [`DeferredList`] fires with.
#[derive(Debug)]
pub enum ListResult<T> {
    /// Every input's result, in input order (Twisted's list of `(success, result)` pairs).
    All(Vec<Result<T, Failure>>),
    /// With `fire_on_one_callback`: the first value to arrive and the index of its Deferred
    /// (Twisted's `(result, index)`).
    First {
        /// Position of the Deferred in the input.
        index: usize,
        /// Its value.
        value: T,
    },
}

mod sealed {
    use std::marker::PhantomData;
    use std::rc::Rc;

    use super::super::chain::Chain;
    use super::super::Failure;

    /// Keeps [`ListInput`](super::ListInput) closed to the crate's own implementations.
    pub trait Sealed {}

    /// What the stage a list adds to an input returns, in Twisted's terms.
    pub enum Then {
        /// The input goes on with its own result (Twisted's `return result`).
        Pass,
        /// Twisted's `return None`: a failure counts as handled.
        Consume,
        /// The stage raised this failure (race's `AlreadyCalledError`).
        Raise(Failure),
    }

    /// Where a list sends an input's result.
    pub type Sink<T> = Box<dyn FnOnce(Result<T, Failure>) -> Then>;

    /// An input, ready to be watched by a list: its chain and how to add the list's stage.
    pub struct Input<T> {
        pub(in crate::defer) chain: Rc<Chain>,
        pub(in crate::defer) attach: fn(&Rc<Chain>, Sink<T>),
        pub(in crate::defer) _t: PhantomData<fn(T)>,
    }
}

use sealed::{Input, Sink, Then};

/// An input of [`DeferredList`], [`gather_results`] or [`race`]: a `Deferred<T>` given by value
/// (the list takes its result; nothing else can use the input any more) or a `&Deferred<T>`
/// with `T: Clone` (the list watches it: the input goes on with its result, which the program
/// can still read, pause, add to or cancel, as in Twisted).
///
/// Either way the list adds one pass-through stage at the input's current end, as Twisted's
/// `DeferredList` does with `addCallbacks`, so stages added later see what Twisted's would
/// (except where Twisted puts `None` there; see the [module docs](super)).
pub trait ListInput<T>: sealed::Sealed {
    /// The input's chain and how to watch it. Not for use outside the crate's lists.
    #[doc(hidden)]
    fn into_input(self) -> Input<T>;
}

impl<T> sealed::Sealed for Deferred<T> {}
impl<T> sealed::Sealed for &Deferred<T> {}

impl<T: 'static> ListInput<T> for Deferred<T> {
    fn into_input(self) -> Input<T> {
        Input {
            chain: self.chain,
            attach: attach_taken::<T>,
            _t: std::marker::PhantomData,
        }
    }
}

/// The list's stage on an input it took: the input keeps `()`, or a clone of its failure when
/// the failure is not consumed (so it is logged as unhandled, as in Twisted).
fn attach_taken<T: 'static>(chain: &Rc<Chain>, sink: Sink<T>) {
    let _ = Deferred::<T>::from_chain(chain.clone()).add_both(move |r| {
        let kept = match &r {
            Err(f) => Err(f.clone()),
            Ok(_) => Ok(()),
        };
        match sink(r) {
            Then::Pass => kept,
            Then::Consume => Ok(()),
            Then::Raise(f) => Err(f),
        }
    });
}

impl<T: Clone + 'static> ListInput<T> for &Deferred<T> {
    fn into_input(self) -> Input<T> {
        Input {
            chain: self.chain.clone(),
            attach: attach_watched::<T>,
            _t: std::marker::PhantomData,
        }
    }
}

/// The list's stage on an input it watches: the list gets a copy, the input goes on with its
/// result (a consumed failure is marked handled, since a `T` cannot be Twisted's `None`).
fn attach_watched<T: Clone + 'static>(chain: &Rc<Chain>, sink: Sink<T>) {
    chain.add(Box::new(move |o: &mut Outcome| {
        let copy = match &*o {
            Ok(v) => Ok(clone_value::<T>(v)),
            Err(f) => Err(f.clone()),
        };
        match sink(copy) {
            Then::Pass => {}
            Then::Consume => {
                if let Err(f) = &*o {
                    f.mark_consumed();
                }
            }
            Then::Raise(f) => *o = Err(f),
        }
        None
    }));
}

/// Adds the list's stages to `inputs`, in order; returns the inputs' chains, weakly.
fn attach_all<T>(
    inputs: Vec<Input<T>>,
    mut sink: impl FnMut(usize) -> Sink<T>,
    chains: &RefCell<Vec<Weak<Chain>>>,
) {
    *chains.borrow_mut() = inputs.iter().map(|i| Rc::downgrade(&i.chain)).collect();
    for (index, input) in inputs.into_iter().enumerate() {
        (input.attach)(&input.chain, sink(index));
    }
}

/// Waits for several Deferreds (Twisted's `DeferredList`).
///
/// Built with [`new`](DeferredList::new) from inputs given by value or by reference (see
/// [`ListInput`]), configured with the three flags, and turned into the Deferred that fires with
/// a [`ListResult`] by [`into_deferred`](DeferredList::into_deferred):
///
/// * by default it fires with [`ListResult::All`] once every input has fired;
/// * `fire_on_one_callback`: fires with [`ListResult::First`] on the first value (and with `All`
///   if every input failed); with no input at all it never fires, as in Twisted;
/// * `fire_on_one_errback`: errbacks with [`FirstError`] on the first failure;
/// * `consume_errors`: the inputs' failures are handled by the list. Without it each failed
///   input keeps its failure (a clone of the one in the list's result), which is logged as
///   unhandled when that input is dropped, as in Twisted.
///
/// **Cancelling** the list's Deferred is Twisted's `DeferredList.cancel`: if the list has not
/// fired, every input is cancelled, and that is all; if the inputs' results do not fire the list
/// (with `fire_on_one_callback` and no input, or inputs that stay paused), it stays unfired.
/// Once the list has fired, cancelling it does nothing, even while it waits on a Deferred
/// returned by one of its callbacks.
///
/// ```
/// use torsion::defer::{succeed, fail, Deferred, DeferredList, Failure, ListResult};
///
/// let (slow, fire_slow) = Deferred::<i32>::new();
/// let d = DeferredList::new([&succeed(1), &fail(Failure::msg("no")), &slow])
///     .consume_errors(true)
///     .into_deferred();
/// fire_slow.callback(3).unwrap();
/// let Ok(Ok(ListResult::All(results))) = d.try_result() else { panic!() };
/// assert_eq!(results[0].as_ref().unwrap(), &1);
/// assert_eq!(results[1].as_ref().unwrap_err().message(), "no");
/// assert_eq!(results[2].as_ref().unwrap(), &3);
/// assert_eq!(slow.try_result().unwrap().unwrap(), 3); // the input still has its result
/// ```
#[must_use = "a DeferredList does nothing until into_deferred"]
pub struct DeferredList<T> {
    inputs: Vec<Input<T>>,
    fire_on_one_callback: bool,
    fire_on_one_errback: bool,
    consume_errors: bool,
}

impl<T> std::fmt::Debug for DeferredList<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredList")
            .field("inputs", &self.inputs.len())
            .field("fire_on_one_callback", &self.fire_on_one_callback)
            .field("fire_on_one_errback", &self.fire_on_one_errback)
            .field("consume_errors", &self.consume_errors)
            .finish()
    }
}

struct ListState<T> {
    results: Vec<Option<Result<T, Failure>>>,
    finished: usize,
    out: Resolver<ListResult<T>>,
}

/// Cancels every input still alive.
fn cancel_all(inputs: &[Weak<Chain>]) {
    for c in inputs.iter().filter_map(Weak::upgrade) {
        c.cancel();
    }
}

impl<T: 'static> DeferredList<T> {
    /// A list of `inputs` (each a `Deferred<T>`, taken, or a `&Deferred<T>`, watched), with
    /// every flag off.
    pub fn new<I: ListInput<T>>(inputs: impl IntoIterator<Item = I>) -> DeferredList<T> {
        DeferredList {
            inputs: inputs.into_iter().map(ListInput::into_input).collect(),
            fire_on_one_callback: false,
            fire_on_one_errback: false,
            consume_errors: false,
        }
    }

    /// Fire with the first value instead of waiting for all (Twisted's `fireOnOneCallback`).
    pub fn fire_on_one_callback(mut self, yes: bool) -> Self {
        self.fire_on_one_callback = yes;
        self
    }

    /// Fail with the first failure (Twisted's `fireOnOneErrback`).
    pub fn fire_on_one_errback(mut self, yes: bool) -> Self {
        self.fire_on_one_errback = yes;
        self
    }

    /// Handle the inputs' failures (Twisted's `consumeErrors`).
    pub fn consume_errors(mut self, yes: bool) -> Self {
        self.consume_errors = yes;
        self
    }

    /// The Deferred that fires as configured.
    pub fn into_deferred(self) -> Deferred<ListResult<T>> {
        let n = self.inputs.len();
        let inputs: Rc<RefCell<Vec<Weak<Chain>>>> = Rc::default();
        let cancel_inputs = {
            let inputs = inputs.clone();
            Rc::new(move || {
                let all = inputs.borrow().clone();
                cancel_all(&all);
            })
        };
        let chain = Chain::new_list(cancel_inputs);
        let out = Deferred::<ListResult<T>>::from_chain(chain.clone());
        let fire = Resolver::<ListResult<T>>::of(chain);
        if n == 0 && !self.fire_on_one_callback {
            let _ = fire.callback(ListResult::All(Vec::new()));
        }
        let state = Rc::new(RefCell::new(ListState {
            results: (0..n).map(|_| None).collect(),
            finished: 0,
            out: fire,
        }));
        let flags = (
            self.fire_on_one_callback,
            self.fire_on_one_errback,
            self.consume_errors,
        );
        attach_all(
            self.inputs,
            |index| {
                let state = state.clone();
                Box::new(move |r| list_input_fired(&state, index, r, flags))
            },
            &inputs,
        );
        out
    }
}

/// Twisted's `DeferredList._cbDeferred`: records input `index`'s result, fires the list when
/// due, and tells the input what it goes on with.
fn list_input_fired<T: 'static>(
    state: &Rc<RefCell<ListState<T>>>,
    index: usize,
    r: Result<T, Failure>,
    (on_cb, on_eb, consume): (bool, bool, bool),
) -> Then {
    let then = if r.is_err() && consume {
        Then::Consume
    } else {
        Then::Pass
    };
    let mut st = state.borrow_mut();
    st.finished += 1;
    let out = st.out.clone();
    if out.called() {
        // The list already fired (early): nothing more to report.
        return then;
    }
    match r {
        Ok(value) if on_cb => {
            drop(st);
            let _ = out.callback(ListResult::First { index, value });
        }
        Err(failure) if on_eb => {
            drop(st);
            let _ = out.errback(FirstError { index, failure });
        }
        r => {
            st.results[index] = Some(r);
            if st.finished == st.results.len() {
                let all = st
                    .results
                    .iter_mut()
                    .map(|r| r.take().expect("every input has finished"))
                    .collect();
                drop(st);
                let _ = out.callback(ListResult::All(all));
            }
        }
    }
    then
}

/// The values of all `inputs` in input order, or the first failure and its index (Twisted's
/// `gatherResults`): a [`DeferredList`] with `fire_on_one_errback`, whose failure is a
/// [`FirstError`]. Cancelling it is cancelling that DeferredList: the inputs are cancelled if
/// it has not fired (and so it fails with a `FirstError` holding the first input's
/// [`Cancelled`](super::Cancelled), as in Twisted), and nothing happens once it has.
///
/// ```
/// use torsion::defer::{gather_results, succeed, Deferred};
///
/// let (d, fire) = Deferred::<i32>::new();
/// let all = gather_results([succeed(1), d], false);
/// fire.callback(2).unwrap();
/// assert_eq!(all.try_result().unwrap().unwrap(), vec![1, 2]);
/// ```
#[doc(alias = "gatherResults")]
pub fn gather_results<T: 'static, I: ListInput<T>>(
    inputs: impl IntoIterator<Item = I>,
    consume_errors: bool,
) -> Deferred<Vec<T>> {
    DeferredList::new(inputs)
        .fire_on_one_errback(true)
        .consume_errors(consume_errors)
        .into_deferred()
        .add_callback(|r| match r {
            ListResult::All(results) => results.into_iter().collect::<Result<Vec<T>, Failure>>(),
            ListResult::First { .. } => unreachable!("gather_results: no fire_on_one_callback"),
        })
}

struct RaceState<T> {
    winner: Option<usize>,
    failures: Vec<(usize, Failure)>,
    count: usize,
    inputs: Rc<RefCell<Vec<Weak<Chain>>>>,
    out: Resolver<(usize, T)>,
}

/// The first of `inputs` to succeed, with its index; every other input is then cancelled
/// (Twisted's `race`). If all fail, the failure is a [`FailureGroup`] of their failures in input
/// order. The inputs' failures are consumed. Cancelling the result cancels every input. With no
/// input it never fires, as in Twisted.
///
/// An input whose result arrives after the race has fired (cancelled, or lost) gets an
/// [`AlreadyCalled`] failure, as Twisted's own callbacks raise it.
///
/// ```
/// use torsion::defer::{race, Cancelled, Deferred};
///
/// let (slow, slow_done) = Deferred::<&str>::new();
/// let (fast, fast_done) = Deferred::<&str>::new();
/// let winner = race([slow, fast]);
/// fast_done.callback("fast").unwrap();
/// assert_eq!(winner.try_result().unwrap().unwrap(), (1, "fast"));
/// assert!(slow_done.called()); // the loser was cancelled
/// ```
pub fn race<T: 'static, I: ListInput<T>>(
    inputs: impl IntoIterator<Item = I>,
) -> Deferred<(usize, T)> {
    let inputs: Vec<Input<T>> = inputs.into_iter().map(ListInput::into_input).collect();
    let slot: Rc<RefCell<Vec<Weak<Chain>>>> = Rc::default();
    let to_cancel = slot.clone();
    let (out, fire) = Deferred::<(usize, T)>::with_canceller(move |_| {
        let all = to_cancel.borrow().clone();
        cancel_all(&all);
    });
    let state = Rc::new(RefCell::new(RaceState {
        winner: None,
        failures: Vec::new(),
        count: inputs.len(),
        inputs: slot.clone(),
        out: fire,
    }));
    attach_all(
        inputs,
        |index| {
            let s = state.clone();
            Box::new(move |r| match r {
                Ok(value) => race_won(&s, index, value),
                Err(failure) => race_lost(&s, index, failure),
            })
        },
        &slot,
    );
    out
}

fn already_called(r: Result<(), AlreadyCalled>) -> Then {
    match r {
        Ok(()) => Then::Consume,
        Err(e) => Then::Raise(Failure::new(e)),
    }
}

fn race_won<T: 'static>(state: &Rc<RefCell<RaceState<T>>>, index: usize, value: T) -> Then {
    let mut st = state.borrow_mut();
    if st.winner.is_some() {
        return Then::Consume;
    }
    st.winner = Some(index);
    let others: Vec<Rc<Chain>> = st
        .inputs
        .borrow()
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .filter_map(|(_, c)| c.upgrade())
        .collect();
    let out = st.out.clone();
    drop(st);
    for c in others {
        c.cancel();
    }
    already_called(out.callback((index, value)))
}

fn race_lost<T: 'static>(
    state: &Rc<RefCell<RaceState<T>>>,
    index: usize,
    failure: Failure,
) -> Then {
    let mut st = state.borrow_mut();
    st.failures.push((index, failure));
    if st.failures.len() == st.count {
        let mut failures = std::mem::take(&mut st.failures);
        failures.sort_by_key(|(i, _)| *i);
        let out = st.out.clone();
        drop(st);
        return already_called(out.errback(FailureGroup {
            failures: failures.into_iter().map(|(_, f)| f).collect(),
        }));
    }
    Then::Consume
}
