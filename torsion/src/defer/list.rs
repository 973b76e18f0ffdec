//! Waiting on several Deferreds: [`DeferredList`], [`gather_results`] and [`race`].

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use super::chain::Chain;
use super::{Deferred, Failure, FailureGroup, FirstError, Resolver};

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

/// Waits for several Deferreds (Twisted's `DeferredList`).
///
/// Built with [`new`](DeferredList::new), configured with the three flags, and turned into the
/// Deferred that fires with a [`ListResult`] by [`into_deferred`](DeferredList::into_deferred):
///
/// * by default it fires with [`ListResult::All`] once every input has fired;
/// * `fire_on_one_callback`: fires with [`ListResult::First`] on the first value (and with `All`
///   if every input failed); with no input at all it never fires, as in Twisted;
/// * `fire_on_one_errback`: errbacks with [`FirstError`] on the first failure;
/// * `consume_errors`: the inputs' failures are handled by the list. Without it each failed
///   input keeps its failure (a copy: the original goes to the list's result), which is logged as
///   unhandled when that input is dropped, as in Twisted.
///
/// Cancelling the list's Deferred cancels every input that has not fired; if that did not fire
/// the list, it fails with [`Cancelled`](super::Cancelled).
///
/// ```
/// use torsion::defer::{succeed, fail, DeferredList, Failure, ListResult};
///
/// let d = DeferredList::new([succeed(1), fail(Failure::msg("no")), succeed(3)])
///     .consume_errors(true)
///     .into_deferred();
/// let Ok(Ok(ListResult::All(results))) = d.try_result() else { panic!() };
/// assert_eq!(results[0].as_ref().unwrap(), &1);
/// assert_eq!(results[1].as_ref().unwrap_err().message(), "no");
/// assert_eq!(results[2].as_ref().unwrap(), &3);
/// ```
#[must_use = "a DeferredList does nothing until into_deferred"]
pub struct DeferredList<T> {
    inputs: Vec<Deferred<T>>,
    fire_on_one_callback: bool,
    fire_on_one_errback: bool,
    consume_errors: bool,
}

struct ListState<T> {
    results: Vec<Option<Result<T, Failure>>>,
    finished: usize,
    out: Resolver<ListResult<T>>,
}

fn cancel_all(inputs: &[Weak<Chain>]) {
    for c in inputs.iter().filter_map(Weak::upgrade) {
        c.cancel();
    }
}

impl<T: 'static> DeferredList<T> {
    /// A list of `inputs`, with every flag off.
    pub fn new(inputs: impl IntoIterator<Item = Deferred<T>>) -> DeferredList<T> {
        DeferredList {
            inputs: inputs.into_iter().collect(),
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
        let weak: Vec<Weak<Chain>> = self
            .inputs
            .iter()
            .map(|d| Rc::downgrade(&d.chain))
            .collect();
        let out = Deferred::<ListResult<T>>::with_canceller(move |_| cancel_all(&weak));
        let state = Rc::new(RefCell::new(ListState {
            results: (0..n).map(|_| None).collect(),
            finished: 0,
            out: out.resolver(),
        }));
        if n == 0 && !self.fire_on_one_callback {
            let _ = out.callback(ListResult::All(Vec::new()));
        }
        let (on_cb, on_eb, consume) = (
            self.fire_on_one_callback,
            self.fire_on_one_errback,
            self.consume_errors,
        );
        for (index, d) in self.inputs.into_iter().enumerate() {
            let state = state.clone();
            let _ = d.add_both(move |r: Result<T, Failure>| {
                list_input_fired(&state, index, r, on_cb, on_eb, consume)
            });
        }
        out
    }
}

/// Twisted's `DeferredList._cbDeferred`: records input `index`'s result, fires the list when
/// due, and gives the input what it keeps (nothing, or its failure when errors aren't consumed).
fn list_input_fired<T: 'static>(
    state: &Rc<RefCell<ListState<T>>>,
    index: usize,
    r: Result<T, Failure>,
    on_cb: bool,
    on_eb: bool,
    consume: bool,
) -> Result<(), Failure> {
    let mut st = state.borrow_mut();
    st.finished += 1;
    let out = st.out.clone();
    if out.called() {
        // The list already fired (early, or cancelled): nothing to record.
        drop(st);
        return match r {
            Err(f) if !consume => Err(f),
            _ => Ok(()),
        };
    }
    let keep = match &r {
        Err(f) if !consume => Err(f.shadow()),
        _ => Ok(()),
    };
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
    keep
}

/// The values of all `inputs` in input order, or the first failure and its index (Twisted's
/// `gatherResults`): a [`DeferredList`] with `fire_on_one_errback`, whose failure is a
/// [`FirstError`]. Cancelling it cancels the inputs (and so fails with a `FirstError` holding
/// the first input's [`Cancelled`](super::Cancelled), as in Twisted).
///
/// ```
/// use torsion::defer::{gather_results, succeed, Deferred};
///
/// let d = Deferred::<i32>::new();
/// let fire = d.resolver();
/// let all = gather_results([succeed(1), d], false);
/// fire.callback(2).unwrap();
/// assert_eq!(all.try_result().unwrap().unwrap(), vec![1, 2]);
/// ```
pub fn gather_results<T: 'static>(
    inputs: impl IntoIterator<Item = Deferred<T>>,
    consume_errors: bool,
) -> Deferred<Vec<T>> {
    DeferredList::new(inputs)
        .fire_on_one_errback(true)
        .consume_errors(consume_errors)
        .into_deferred()
        .add_callback(|r| match r {
            ListResult::All(results) => results.into_iter().collect::<Result<Vec<T>, Failure>>(),
            ListResult::First { .. } => Err(Failure::msg("gather_results: unexpected First")),
        })
}

struct RaceState<T> {
    winner: Option<usize>,
    failures: Vec<(usize, Failure)>,
    inputs: Vec<Weak<Chain>>,
    out: Resolver<(usize, T)>,
}

/// The first of `inputs` to succeed, with its index; every other input is then cancelled
/// (Twisted's `race`). If all fail, the failure is a [`FailureGroup`] of their failures in input
/// order. The inputs' failures are consumed. Cancelling the result cancels every input. With no
/// input it never fires, as in Twisted.
///
/// ```
/// use torsion::defer::{race, Cancelled, Deferred};
///
/// let slow = Deferred::<&str>::new();
/// let slow_done = slow.resolver();
/// let fast = Deferred::<&str>::new();
/// let fast_done = fast.resolver();
/// let winner = race([slow, fast]);
/// fast_done.callback("fast").unwrap();
/// assert_eq!(winner.try_result().unwrap().unwrap(), (1, "fast"));
/// assert!(slow_done.called()); // the loser was cancelled
/// ```
pub fn race<T: 'static>(inputs: impl IntoIterator<Item = Deferred<T>>) -> Deferred<(usize, T)> {
    let inputs: Vec<Deferred<T>> = inputs.into_iter().collect();
    let weak: Vec<Weak<Chain>> = inputs.iter().map(|d| Rc::downgrade(&d.chain)).collect();
    let w = weak.clone();
    let out = Deferred::<(usize, T)>::with_canceller(move |_| cancel_all(&w));
    let state = Rc::new(RefCell::new(RaceState {
        winner: None,
        failures: Vec::new(),
        inputs: weak,
        out: out.resolver(),
    }));
    for (index, d) in inputs.into_iter().enumerate() {
        let (s1, s2) = (state.clone(), state.clone());
        let _ = d.add_callbacks(
            move |value: T| {
                race_won(&s1, index, value);
                Ok(())
            },
            move |failure: Failure| {
                race_lost(&s2, index, failure);
                Ok(())
            },
        );
    }
    out
}

fn race_won<T: 'static>(state: &Rc<RefCell<RaceState<T>>>, index: usize, value: T) {
    let mut st = state.borrow_mut();
    if st.winner.is_some() {
        return;
    }
    st.winner = Some(index);
    let others: Vec<Rc<Chain>> = st
        .inputs
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
    let _ = out.callback((index, value));
}

fn race_lost<T: 'static>(state: &Rc<RefCell<RaceState<T>>>, index: usize, failure: Failure) {
    let mut st = state.borrow_mut();
    st.failures.push((index, failure));
    if st.failures.len() == st.inputs.len() {
        let mut failures = std::mem::take(&mut st.failures);
        failures.sort_by_key(|(i, _)| *i);
        let out = st.out.clone();
        drop(st);
        let _ = out.errback(FailureGroup {
            failures: failures.into_iter().map(|(_, f)| f).collect(),
        });
    }
}
