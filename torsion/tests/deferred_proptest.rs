//! Random chains of callbacks, errbacks, returned Deferreds, pauses and cancels, checked
//! against a small reference model of the rules (semantics 1-5 of the Deferred issue).
//!
//! The model is written from the rules, not from the implementation: a fired, unpaused,
//! non-waiting chain runs its stages in order; a value goes to a stage's callback, a failure to
//! its errback (a missing one passes it on); a stage that returns a pending Deferred makes the
//! chain wait for it; cancel errbacks an unfired Deferred with Cancelled (and ignores the next
//! late fire once) or cancels the Deferred it waits on.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;

use proptest::prelude::*;
use torsion::defer::{
    fail, succeed, AlreadyCalled, Cancelled, Deferred, Failure, Panicked, Resolver, Step,
};

/// A result in the model and in the observations: a value, or a failure code
/// (`CANCELLED`, `PANICKED`, or a user code >= 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Res {
    Val(i64),
    Err(i64),
}

const CANCELLED: i64 = -1;
const PANICKED: i64 = -2;
const PANIC_MSG: &str = "proptest-panic-stage";

#[derive(Debug)]
struct Code(i64);
impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "code {}", self.0)
    }
}
impl std::error::Error for Code {}

fn code_of(f: &Failure) -> i64 {
    if f.check::<Cancelled>() {
        CANCELLED
    } else if f.check::<Panicked>() {
        PANICKED
    } else {
        f.downcast_ref::<Code>().expect("a known failure").0
    }
}

/// What a callback or errback does with its input.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// Return a value: input + k for a callback, k for an errback.
    Value(i64),
    /// Fail with a code.
    Fail(i64),
    /// Return an already fired Deferred (of the value as above).
    ReturnFired(i64),
    /// Return an already failed Deferred.
    ReturnFailed(i64),
    /// Return a new pending Deferred (the next inner one).
    ReturnPending,
    /// Panic.
    Panic,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    AddCallback(Action),
    AddErrback(Action),
    AddCallbacks(Action, Action),
    AddBoth(Action),
    Fire(Res),
    FireInner(usize, Res),
    CancelInner(usize),
    Pause,
    Unpause,
    Cancel,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (-5i64..5).prop_map(Action::Value),
        2 => (0i64..5).prop_map(Action::Fail),
        1 => (-5i64..5).prop_map(Action::ReturnFired),
        1 => (0i64..5).prop_map(Action::ReturnFailed),
        2 => Just(Action::ReturnPending),
        1 => Just(Action::Panic),
    ]
}

fn res() -> impl Strategy<Value = Res> {
    prop_oneof![
        3 => (0i64..100).prop_map(Res::Val),
        1 => (0i64..5).prop_map(Res::Err),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => action().prop_map(Op::AddCallback),
        3 => action().prop_map(Op::AddErrback),
        1 => (action(), action()).prop_map(|(a, b)| Op::AddCallbacks(a, b)),
        1 => action().prop_map(Op::AddBoth),
        2 => res().prop_map(Op::Fire),
        3 => (0usize..4, res()).prop_map(|(i, r)| Op::FireInner(i, r)),
        1 => (0usize..4).prop_map(Op::CancelInner),
        1 => Just(Op::Pause),
        1 => Just(Op::Unpause),
        1 => Just(Op::Cancel),
    ]
}

// ---------------------------------------------------------------------------------------------
// The reference model.

#[derive(Debug, Clone, Copy)]
struct StageSpec {
    id: usize,
    callback: Option<Action>,
    errback: Option<Action>,
}

#[derive(Debug, Default)]
struct InnerModel {
    fired: bool,
    suppress: bool,
    result: Option<Res>,
}

#[derive(Debug, Default)]
struct Model {
    fired: bool,
    suppress: bool,
    result: Option<Res>,
    stages: VecDeque<StageSpec>,
    paused: u32,
    waiting: Option<usize>,
    inners: Vec<InnerModel>,
    log: Vec<(usize, Res)>,
}

impl Model {
    fn fire(&mut self, r: Res) -> Result<(), AlreadyCalled> {
        if self.fired {
            if self.suppress {
                self.suppress = false;
                return Ok(());
            }
            return Err(AlreadyCalled);
        }
        self.fired = true;
        self.result = Some(r);
        self.run();
        Ok(())
    }

    fn fire_inner(&mut self, i: usize, r: Res) -> Result<(), AlreadyCalled> {
        let inner = &mut self.inners[i];
        if inner.fired {
            if inner.suppress {
                inner.suppress = false;
                return Ok(());
            }
            return Err(AlreadyCalled);
        }
        inner.fired = true;
        inner.result = Some(r);
        if self.waiting == Some(i) {
            self.waiting = None;
            self.result = inner.result.take();
            self.run();
        }
        Ok(())
    }

    fn cancel_inner(&mut self, i: usize) {
        if !self.inners[i].fired {
            self.inners[i].suppress = true;
            let _ = self.fire_inner(i, Res::Err(CANCELLED));
        }
    }

    fn cancel(&mut self) {
        if !self.fired {
            self.suppress = true;
            let _ = self.fire(Res::Err(CANCELLED));
        } else if let Some(i) = self.waiting {
            self.cancel_inner(i);
        }
    }

    fn unpause(&mut self) {
        self.paused = self.paused.saturating_sub(1);
        self.run();
    }

    fn add(&mut self, s: StageSpec) {
        self.stages.push_back(s);
        self.run();
    }

    fn run(&mut self) {
        while self.fired && self.paused == 0 && self.waiting.is_none() {
            let Some(stage) = self.stages.pop_front() else {
                return;
            };
            let input = self.result.take().expect("a fired chain has a result");
            let action = match input {
                Res::Val(_) => stage.callback,
                Res::Err(_) => stage.errback,
            };
            let Some(action) = action else {
                self.result = Some(input); // pass-through
                continue;
            };
            self.log.push((stage.id, input));
            let base = match input {
                Res::Val(v) => v,
                Res::Err(_) => 0,
            };
            self.result = match action {
                Action::Value(k) | Action::ReturnFired(k) => Some(Res::Val(base + k)),
                Action::Fail(c) | Action::ReturnFailed(c) => Some(Res::Err(c)),
                Action::Panic => Some(Res::Err(PANICKED)),
                Action::ReturnPending => {
                    // The chain waits for a new inner Deferred; it has no result meanwhile.
                    self.inners.push(InnerModel::default());
                    self.waiting = Some(self.inners.len() - 1);
                    None
                }
            };
        }
    }

    /// The final result as `try_result` sees it.
    fn final_result(&mut self) -> Option<Res> {
        if self.waiting.is_some() || !self.stages.is_empty() {
            return None;
        }
        self.result.take()
    }
}

// ---------------------------------------------------------------------------------------------
// The system under test, driven by the same ops.

type Shared<T> = Rc<RefCell<T>>;

struct Sut {
    d: Option<Deferred<i64>>,
    fire: Resolver<i64>,
    inners: Shared<Vec<Resolver<i64>>>,
    log: Shared<Vec<(usize, Res)>>,
}

fn to_result(r: Res) -> Result<i64, Failure> {
    match r {
        Res::Val(v) => Ok(v),
        Res::Err(c) => Err(Failure::new(Code(c))),
    }
}

/// What a stage function does, in the real Deferred.
fn perform(
    action: Action,
    id: usize,
    input: Res,
    log: &Shared<Vec<(usize, Res)>>,
    inners: &Shared<Vec<Resolver<i64>>>,
) -> torsion::defer::Step<i64> {
    log.borrow_mut().push((id, input));
    let base = match input {
        Res::Val(v) => v,
        Res::Err(_) => 0,
    };
    match action {
        Action::Value(k) => Step::Value(base + k),
        Action::Fail(c) => Step::Failure(Failure::new(Code(c))),
        Action::ReturnFired(k) => Step::Deferred(succeed(base + k)),
        Action::ReturnFailed(c) => Step::Deferred(fail(Code(c))),
        Action::ReturnPending => {
            let (d, fire) = Deferred::new();
            inners.borrow_mut().push(fire);
            Step::Deferred(d)
        }
        Action::Panic => panic!("{PANIC_MSG}"),
    }
}

fn res_of(r: &Result<i64, Failure>) -> Res {
    match r {
        Ok(v) => Res::Val(*v),
        Err(f) => Res::Err(code_of(f)),
    }
}

impl Sut {
    fn new() -> Sut {
        let (d, fire) = Deferred::new();
        Sut {
            d: Some(d),
            fire,
            inners: Rc::default(),
            log: Rc::default(),
        }
    }

    fn add(&mut self, spec: StageSpec, both: bool) {
        let d = self.d.take().unwrap();
        let (id, log, inners) = (spec.id, self.log.clone(), self.inners.clone());
        let (log2, inners2) = (log.clone(), inners.clone());
        // Every side may return a value, a failure or a Deferred: the general `Step` form.
        self.d = Some(match (spec.callback, spec.errback) {
            (Some(a), _) if both => d.add_callbacks_step(
                move |v| perform(a, id, Res::Val(v), &log, &inners),
                move |f: Failure| perform(a, id, Res::Err(code_of(&f)), &log2, &inners2),
            ),
            (Some(cb), Some(eb)) => d.add_callbacks_step(
                move |v| perform(cb, id, Res::Val(v), &log, &inners),
                move |f: Failure| perform(eb, id, Res::Err(code_of(&f)), &log2, &inners2),
            ),
            (Some(cb), None) => d.add_callbacks_step(
                move |v| perform(cb, id, Res::Val(v), &log, &inners),
                Step::Failure,
            ),
            (None, Some(eb)) => d.add_callbacks_step(Step::Value, move |f: Failure| {
                perform(eb, id, Res::Err(code_of(&f)), &log, &inners)
            }),
            (None, None) => unreachable!(),
        });
    }

    fn d(&self) -> &Deferred<i64> {
        self.d.as_ref().unwrap()
    }
}

fn check(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let mut sut = Sut::new();
    for (id, op) in ops.iter().enumerate() {
        match *op {
            Op::AddCallback(a) => {
                let s = StageSpec {
                    id,
                    callback: Some(a),
                    errback: None,
                };
                model.add(s);
                sut.add(s, false);
            }
            Op::AddErrback(a) => {
                let s = StageSpec {
                    id,
                    callback: None,
                    errback: Some(a),
                };
                model.add(s);
                sut.add(s, false);
            }
            Op::AddCallbacks(a, b) => {
                let s = StageSpec {
                    id,
                    callback: Some(a),
                    errback: Some(b),
                };
                model.add(s);
                sut.add(s, false);
            }
            Op::AddBoth(a) => {
                let s = StageSpec {
                    id,
                    callback: Some(a),
                    errback: Some(a),
                };
                model.add(s);
                sut.add(s, true);
            }
            Op::Fire(r) => {
                let expected = model.fire(r);
                prop_assert_eq!(sut.fire.fire(to_result(r)), expected, "fire at op {}", id);
            }
            Op::FireInner(i, r) => {
                if i < model.inners.len() {
                    let expected = model.fire_inner(i, r);
                    let resolver = sut.inners.borrow()[i].clone();
                    prop_assert_eq!(
                        resolver.fire(to_result(r)),
                        expected,
                        "fire inner at op {}",
                        id
                    );
                }
            }
            Op::CancelInner(i) => {
                if i < model.inners.len() {
                    model.cancel_inner(i);
                    let resolver = sut.inners.borrow()[i].clone();
                    resolver.cancel();
                }
            }
            Op::Pause => {
                model.paused += 1;
                sut.d().pause();
            }
            Op::Unpause => {
                model.unpause();
                sut.d().unpause();
            }
            Op::Cancel => {
                model.cancel();
                sut.d().cancel();
            }
        }
        prop_assert_eq!(
            &*sut.log.borrow(),
            &model.log,
            "stage log after op {} {:?}",
            id,
            op
        );
        prop_assert_eq!(sut.d().called(), model.fired, "called after op {}", id);
        prop_assert_eq!(
            sut.d().is_waiting(),
            model.waiting.is_some(),
            "waiting after op {}",
            id
        );
        prop_assert_eq!(sut.d().paused(), model.paused, "paused after op {}", id);
        prop_assert_eq!(sut.inners.borrow().len(), model.inners.len());
    }
    let expected = model.final_result();
    let got = match sut.d.take().unwrap().try_result() {
        Ok(r) => Some(res_of(&r)),
        Err(_) => None,
    };
    prop_assert_eq!(got, expected, "final result");
    Ok(())
}

fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let planned = payload
                .downcast_ref::<String>()
                .is_some_and(|s| s.contains(PANIC_MSG))
                || payload
                    .downcast_ref::<&str>()
                    .is_some_and(|s| s.contains(PANIC_MSG));
            if !planned {
                default(info);
            }
        }));
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_chains_match_the_reference_model(ops in prop::collection::vec(op(), 0..40)) {
        quiet_panics();
        check(&ops)?;
    }
}

#[test]
fn model_sanity_waiting_then_cancel() {
    quiet_panics();
    use Action::*;
    let ops = [
        Op::AddCallback(ReturnPending),
        Op::AddErrback(Value(3)),
        Op::Fire(Res::Val(1)),
        Op::Cancel,
        Op::FireInner(0, Res::Val(9)), // ignored once (cancelled without canceller)
        Op::FireInner(0, Res::Val(9)), // AlreadyCalled
        Op::Pause,
        Op::AddCallback(Panic),
        Op::Unpause,
    ];
    check(&ops).unwrap();
}
