//! Conformance against Twisted itself (issue 12, item 7).
//!
//! `deferred_conformance/corpus.jsonl` holds programs of the Deferred conformance language
//! (the project's `shared/conformance/deferred/SPEC.md`), each with the trace real Twisted
//! printed for it (see `deferred_conformance/README.md`). This file interprets the language
//! over torsion's public Deferred API and compares traces line for line.
//!
//! A program either reproduces Twisted's trace exactly, or stops at an operation the typed API
//! cannot express because of a difference the `torsion::defer` module docs list ([`Unsupported`]):
//! the lines before the stop must then be Twisted's first lines. Any other difference is a
//! mismatch, and fails the test.
//!
//! `CONFORMANCE_VERBOSE=1 cargo test -p torsion --test deferred_conformance -- --nocapture`
//! also prints where each unsupported program stopped.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

use torsion::defer::{
    gather_results, race, AlreadyCalled, Cancelled, Deferred, DeferredList, Failure, FailureGroup,
    FirstError, ListResult, Resolver, Step,
};

// ---------------------------------------------------------------------------------------------
// A small JSON reader (objects, arrays, strings without escapes beyond \" \\ \/ \n, integers,
// booleans, null): all the corpus needs.

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn parse(text: &str) -> Json {
        let mut r = Reader {
            s: text.as_bytes(),
            i: 0,
        };
        let v = r.value();
        r.ws();
        assert_eq!(r.i, r.s.len(), "trailing characters in JSON");
        v
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) {
        self.ws();
        assert_eq!(
            self.s.get(self.i),
            Some(&c),
            "JSON: expected {:?}",
            c as char
        );
        self.i += 1;
    }

    fn peek(&mut self) -> u8 {
        self.ws();
        *self.s.get(self.i).expect("JSON: unexpected end")
    }

    fn value(&mut self) -> Json {
        match self.peek() {
            b'{' => {
                self.eat(b'{');
                let mut fields = Vec::new();
                if self.peek() == b'}' {
                    self.eat(b'}');
                    return Json::Obj(fields);
                }
                loop {
                    let Json::Str(k) = self.value() else {
                        panic!("JSON: object key is not a string")
                    };
                    self.eat(b':');
                    fields.push((k, self.value()));
                    if self.peek() == b',' {
                        self.eat(b',');
                    } else {
                        self.eat(b'}');
                        return Json::Obj(fields);
                    }
                }
            }
            b'[' => {
                self.eat(b'[');
                let mut items = Vec::new();
                if self.peek() == b']' {
                    self.eat(b']');
                    return Json::Arr(items);
                }
                loop {
                    items.push(self.value());
                    if self.peek() == b',' {
                        self.eat(b',');
                    } else {
                        self.eat(b']');
                        return Json::Arr(items);
                    }
                }
            }
            b'"' => {
                self.eat(b'"');
                let mut out = Vec::new();
                loop {
                    let c = self.s[self.i];
                    self.i += 1;
                    match c {
                        b'"' => break,
                        b'\\' => {
                            let e = self.s[self.i];
                            self.i += 1;
                            out.push(match e {
                                b'"' | b'\\' | b'/' => e,
                                b'n' => b'\n',
                                other => panic!("JSON: unsupported escape \\{}", other as char),
                            });
                        }
                        c => out.push(c),
                    }
                }
                Json::Str(String::from_utf8(out).expect("JSON: UTF-8"))
            }
            b't' => self.word("true", Json::Bool(true)),
            b'f' => self.word("false", Json::Bool(false)),
            b'n' => self.word("null", Json::Null),
            _ => {
                let start = self.i;
                if self.s[self.i] == b'-' {
                    self.i += 1;
                }
                while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                Json::Int(text.parse().expect("JSON: only integers are used"))
            }
        }
    }

    fn word(&mut self, w: &str, v: Json) -> Json {
        assert!(
            self.s[self.i..].starts_with(w.as_bytes()),
            "JSON: bad literal"
        );
        self.i += w.len();
        v
    }
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn at(&self, key: &str) -> &Json {
        self.get(key)
            .unwrap_or_else(|| panic!("missing key {key} in {self:?}"))
    }
    fn int(&self) -> i64 {
        match self {
            Json::Int(n) => *n,
            other => panic!("expected an integer, got {other:?}"),
        }
    }
    fn idx(&self) -> usize {
        usize::try_from(self.int()).expect("a Deferred number")
    }
    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("expected a string, got {other:?}"),
        }
    }
    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            other => panic!("expected an array, got {other:?}"),
        }
    }
    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some(Json::Bool(true)))
    }
}

// ---------------------------------------------------------------------------------------------
// The language's values and errors.

#[derive(Debug)]
struct E1;
#[derive(Debug)]
struct E2;
#[derive(Debug)]
struct E3;
impl fmt::Display for E1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("E1")
    }
}
impl fmt::Display for E2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("E2")
    }
}
impl fmt::Display for E3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("E3")
    }
}
impl std::error::Error for E1 {}
impl std::error::Error for E2 {}
impl std::error::Error for E3 {}

/// What an unsupported CB returns: the run stops there, and nothing after it is compared.
#[derive(Debug)]
struct Stopped;
impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the run stopped here")
    }
}
impl std::error::Error for Stopped {}

fn new_error(kind: &str) -> Failure {
    match kind {
        "E1" => Failure::new(E1),
        "E2" => Failure::new(E2),
        "E3" => Failure::new(E3),
        "Cancelled" => Failure::new(Cancelled),
        other => panic!("unknown error kind {other}"),
    }
}

/// A value of the language (Twisted's Python values, as far as the programs make them).
#[derive(Clone, Debug)]
enum V {
    Int(i64),
    /// Python's `None`: here only the `()` a Deferred goes on with after
    /// [`Deferred::hand_off`] (Twisted leaves `None` in a Deferred a callback returned).
    None,
    Bool(bool),
    List(Vec<V>),
    Tuple(Vec<V>),
    Fail(Failure),
}

fn render_failure(f: &Failure) -> String {
    if f.check::<E1>() {
        "E1".into()
    } else if f.check::<E2>() {
        "E2".into()
    } else if f.check::<E3>() {
        "E3".into()
    } else if f.check::<Cancelled>() {
        "Cancelled".into()
    } else if f.check::<AlreadyCalled>() {
        "AlreadyCalled".into()
    } else if let Some(fe) = f.downcast_ref::<FirstError>() {
        format!(
            "FirstError(index={}, {})",
            fe.index,
            render_failure(&fe.failure)
        )
    } else if let Some(g) = f.downcast_ref::<FailureGroup>() {
        let parts: Vec<String> = g.failures.iter().map(render_failure).collect();
        format!("FailureGroup([{}])", parts.join(", "))
    } else if f.check::<Stopped>() {
        // Made after the run stopped: the trace is cut before this line.
        "<stopped>".into()
    } else {
        panic!("a failure outside the language: {f}")
    }
}

fn render_value(v: &V) -> String {
    let seq = |items: &[V]| {
        items
            .iter()
            .map(render_value)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match v {
        V::Int(n) => n.to_string(),
        V::None => "None".into(),
        V::Bool(true) => "True".into(),
        V::Bool(false) => "False".into(),
        V::List(items) => format!("[{}]", seq(items)),
        V::Tuple(items) => format!("({})", seq(items)),
        V::Fail(f) => render_failure(f),
    }
}

fn render_result(r: &Result<V, Failure>) -> String {
    match r {
        Ok(v) => format!("value {}", render_value(v)),
        Err(f) => format!("failure {}", render_failure(f)),
    }
}

// ---------------------------------------------------------------------------------------------
// The interpreter.

/// Why a program stops: an operation the typed API cannot express, each one a difference the
/// `torsion::defer` module docs list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Unsupported {
    /// Module docs, "A returned Deferred is consumed": a callback returns a Deferred (the
    /// interpreter splits it with [`Deferred::hand_off`], which takes the handle) while the
    /// program is lending that Deferred to a list being made (a cancel by `race` ran the
    /// callback): it cannot be moved then.
    ReturnedDeferredConsumed,
    /// Module docs, "The type changes along the chain": the Deferred is paused before a stage
    /// that changes the type (a list's own conversion of its result, `gather_results`' or this
    /// interpreter's), so it holds a value of an earlier type, which its handle cannot read
    /// ([`Deferred::current_result`] is `None`; Twisted reads any `d.result`).
    PausedBeforeTypeChange,
    /// Module docs, "Re-entrant hand-overs": a callback returns a Deferred whose own stages are
    /// running (it is re-entered): Twisted hands over the result it holds between two of its
    /// callbacks; torsion's loop finishes the stages in progress first.
    ReturnedWhileRunning,
    /// Module docs, "Re-entrant hand-overs": a Deferred hands its result to a chain that is
    /// paused while it still has stages to run: Twisted leaves those stages unrun until the
    /// Deferred is touched again; torsion runs them.
    HandedToPausedChain,
    /// Module docs, "Values must be of the chain's type": Twisted replaced this Deferred's
    /// result with `None` (DeferredList/gatherResults with consumeErrors, or race), which a
    /// `Deferred<T>` cannot hold; torsion leaves the result in place, and the program now
    /// looks at it.
    NoneInTypedChain,
}

struct Slot {
    /// The consuming handle; taken out while an op uses it.
    d: Option<Deferred<V>>,
    /// The firing handle (Deferreds made by `new`).
    fire: Option<Resolver<V>>,
    /// Twisted holds `None` here where torsion holds the original result.
    diverged: bool,
    /// The Deferred its chain waits on (the last one one of its callbacks returned).
    waits_on: Option<usize>,
    /// Stages the program added to it (adds, and lists watching it), to tell whether a stage
    /// comes after a given one.
    stages: usize,
    /// The program's pauses minus its unpauses.
    user_paused: u32,
    /// A race's callback runs on its result (Twisted: the Deferred is running then).
    racing: bool,
}

#[derive(Default)]
struct Interp {
    slots: RefCell<Vec<Slot>>,
    trace: RefCell<Vec<String>>,
    /// The first unsupported operation, and the trace length then.
    stop: Cell<Option<(usize, Unsupported)>>,
}

type Cb = Rc<dyn Fn(Result<V, Failure>) -> Step<V>>;

impl Interp {
    fn log(&self, line: String) {
        self.trace.borrow_mut().push(line);
    }

    fn unsupported(&self, why: Unsupported) {
        if self.stop.get().is_none() {
            self.stop.set(Some((self.trace.borrow().len(), why)));
        }
    }

    /// Takes the consuming handle of `k` out for an op (put it back with `put`), or says why
    /// the op cannot run.
    fn take(&self, k: usize) -> Result<Deferred<V>, Unsupported> {
        let mut slots = self.slots.borrow_mut();
        let s = &mut slots[k];
        if s.diverged {
            return Err(Unsupported::NoneInTypedChain);
        }
        Ok(s.d.take().expect("no other op holds it"))
    }

    fn put(&self, k: usize, d: Deferred<V>) {
        self.slots.borrow_mut()[k].d = Some(d);
    }

    fn push_slot(&self, d: Deferred<V>, fire: Option<Resolver<V>>) {
        self.slots.borrow_mut().push(Slot {
            d: Some(d),
            fire,
            diverged: false,
            waits_on: None,
            stages: 0,
            user_paused: 0,
            racing: false,
        });
    }

    fn make_cb(self: &Rc<Self>, spec: &Json, owner: usize) -> Option<Cb> {
        if spec == &Json::Str("pass".into()) {
            return None;
        }
        let it = self.clone();
        let label = if spec.flag("quiet") {
            None
        } else {
            Some(spec.at("id").int())
        };
        let spec = spec.clone();
        Some(Rc::new(move |x: Result<V, Failure>| {
            if let Some(id) = label {
                it.log(format!("cb {id} got {}", render_result(&x)));
            }
            match spec.at("do").str() {
                "const" => Step::Value(V::Int(spec.at("v").int())),
                "inc" => match x {
                    Ok(V::Int(n)) => Step::Value(V::Int(n + 1)),
                    Ok(v) => Step::Value(v),
                    Err(f) => Step::Failure(f),
                },
                "same" => match x {
                    Ok(v) => Step::Value(v),
                    Err(f) => Step::Failure(f),
                },
                "raise" => Step::Failure(new_error(spec.at("e").str())),
                "ret_d" => it.return_deferred(owner, spec.at("k").idx()),
                other => panic!("unknown CB {other}"),
            }
        }))
    }

    /// A CB of `owner`'s chain returns Deferred `k`, which the program keeps using: the chain
    /// waits on the first half of [`Deferred::hand_off`], and `k` goes on with `()` (`None`).
    fn return_deferred(self: &Rc<Self>, owner: usize, k: usize) -> Step<V> {
        let taken = {
            let mut slots = self.slots.borrow_mut();
            let s = &mut slots[k];
            if s.diverged {
                Err(Unsupported::NoneInTypedChain)
            } else if s.racing {
                Err(Unsupported::ReturnedWhileRunning)
            } else {
                s.stages += 1;
                // `None`: a `list` op is lending it to the list being made (a member's cancel,
                // by race, ran this CB), so it cannot be split now.
                s.d.take().ok_or(Unsupported::ReturnedDeferredConsumed)
            }
        };
        let d = match taken {
            Ok(d) if d.called() && !d.is_waiting() && d.paused() == 0 && !d.has_result() => {
                // Fired, not paused, not waiting, and no result: its stages are running.
                self.put(k, d);
                Err(Unsupported::ReturnedWhileRunning)
            }
            other => other,
        };
        match d {
            Ok(d) => {
                let (for_chain, rest) = d.hand_off();
                let it = self.clone();
                let stages_then = self.slots.borrow()[k].stages;
                let rest = rest
                    .add_both(move |r| {
                        // The hand-off just ran: Twisted stops here if `owner` is paused and
                        // leaves the stages added to `k` since then unrun.
                        let slots = it.slots.borrow();
                        if slots[owner].user_paused > 0 && slots[k].stages > stages_then {
                            drop(slots);
                            it.unsupported(Unsupported::HandedToPausedChain);
                        }
                        r
                    })
                    .map(|()| V::None);
                self.put(k, rest);
                self.slots.borrow_mut()[owner].waits_on = Some(k);
                Step::Deferred(for_chain)
            }
            Err(why) => {
                self.unsupported(why);
                Step::Failure(Failure::new(Stopped))
            }
        }
    }

    /// After a list's stage on member `k`: notes where Twisted's result became `None`.
    fn watch_divergence(
        self: &Rc<Self>,
        k: usize,
        diverges: impl Fn(&Result<V, Failure>) -> bool + 'static,
    ) {
        let Ok(d) = self.take(k) else {
            unreachable!("members are checked before the list is made")
        };
        let it = self.clone();
        let stages_then = self.slots.borrow()[k].stages;
        let d = d.add_both(move |r| {
            if diverges(&r) {
                it.note_divergence(k, stages_then);
            }
            r
        });
        self.put(k, d);
    }

    /// Twisted's result in `k` became `None` (or a failure) where torsion's did not, at the
    /// point of its chain where it had `stages_then` stages: a stage added since sees the
    /// difference at once; later ops on `k` stop when they look at it.
    fn note_divergence(&self, k: usize, stages_then: usize) {
        let seen = {
            let mut slots = self.slots.borrow_mut();
            slots[k].diverged = true;
            slots[k].stages > stages_then
        };
        if seen {
            self.unsupported(Unsupported::NoneInTypedChain);
        }
    }

    fn step(self: &Rc<Self>, op: &Json) -> Result<(), Unsupported> {
        let name = op.at("op").str();
        match name {
            "new" => {
                let k = op.at("d").idx();
                let (d, fire) = match op.get("canceller") {
                    None => Deferred::new(),
                    Some(c) => {
                        let it = self.clone();
                        let c = c.clone();
                        Deferred::with_canceller(move |r: &Resolver<V>| {
                            it.log(format!("canceller d{k}"));
                            let _ = match c.at("do").str() {
                                "nothing" => Ok(()),
                                "callback" => r.callback(V::Int(c.at("v").int())),
                                "errback" => r.errback(new_error(c.at("e").str())),
                                other => panic!("unknown canceller {other}"),
                            };
                        })
                    }
                };
                self.push_slot(d, Some(fire));
            }
            "add" => {
                let k = op.at("d").idx();
                let d = self.take(k)?;
                let cb = self.make_cb(op.at("cb"), k);
                let eb = if op.at("cb") == op.at("eb") {
                    cb.clone() // an add_both: one CB for both sides
                } else {
                    self.make_cb(op.at("eb"), k)
                };
                self.slots.borrow_mut()[k].stages += 1;
                let d = d.add_callbacks_step(
                    move |v| match &cb {
                        Some(cb) => cb(Ok(v)),
                        None => Step::Value(v),
                    },
                    move |f| match &eb {
                        Some(eb) => eb(Err(f)),
                        None => Step::Failure(f),
                    },
                );
                self.put(k, d);
            }
            "callback" | "errback" => {
                let k = op.at("d").idx();
                let fire = self.slots.borrow()[k].fire.clone().expect("made by new");
                let r = if name == "callback" {
                    fire.callback(V::Int(op.at("v").int()))
                } else {
                    fire.errback(new_error(op.at("e").str()))
                };
                if r.is_err() {
                    self.log(format!("{name} d{k}: AlreadyCalled"));
                }
            }
            "cancel" => {
                let k = op.at("d").idx();
                let d = self.take_even_diverged(k)?;
                d.cancel();
                self.put(k, d);
            }
            "pause" | "unpause" => {
                let k = op.at("d").idx();
                let d = self.take_even_diverged(k)?;
                {
                    let mut slots = self.slots.borrow_mut();
                    let p = &mut slots[k].user_paused;
                    *p = if name == "pause" { *p + 1 } else { *p - 1 };
                }
                if name == "pause" {
                    d.pause();
                } else {
                    d.unpause();
                }
                self.put(k, d);
            }
            "result" => {
                let k = op.at("d").idx();
                let d = self.take(k)?;
                let s = self.state(k, &d);
                self.put(k, d);
                self.log(format!("result d{k}: {}", s?));
            }
            "drop" => {
                let k = op.at("d").idx();
                let d = self.take(k)?;
                let line = if d.called() && !d.is_waiting() {
                    match d.current_result() {
                        Some(Err(f)) => Ok(format!("drop d{k}: unhandled {}", render_failure(&f))),
                        Some(Ok(_)) => Ok(format!("drop d{k}: ok")),
                        None => Err(Unsupported::PausedBeforeTypeChange),
                    }
                } else {
                    Ok(format!("drop d{k}: ok"))
                };
                // The handle is kept: a CB added earlier may still return it.
                self.put(k, d);
                self.log(line?);
            }
            "list" => self.list(op)?,
            other => panic!("unknown op {other}"),
        }
        Ok(())
    }

    /// As [`take`](Interp::take), for ops that do not look at the result (pause, cancel).
    fn take_even_diverged(&self, k: usize) -> Result<Deferred<V>, Unsupported> {
        Ok(self.slots.borrow_mut()[k]
            .d
            .take()
            .expect("no other op holds it"))
    }

    fn state(&self, k: usize, d: &Deferred<V>) -> Result<String, Unsupported> {
        let mut s = if !d.called() {
            "not-fired".to_string()
        } else if d.is_waiting() {
            let j = self.slots.borrow()[k].waits_on.expect("a CB returned it");
            format!("waiting d{j}")
        } else {
            match d.current_result() {
                Some(r) => render_result(&r),
                None => return Err(Unsupported::PausedBeforeTypeChange),
            }
        };
        if d.paused() > 0 {
            s.push_str(&format!(" paused={}", d.paused()));
        }
        Ok(s)
    }

    fn list(self: &Rc<Self>, op: &Json) -> Result<(), Unsupported> {
        let members: Vec<usize> = op.at("of").arr().iter().map(Json::idx).collect();
        // Every member must be readable: not holding a result Twisted replaced with None.
        if members.iter().any(|&m| self.slots.borrow()[m].diverged) {
            return Err(Unsupported::NoneInTypedChain);
        }
        let consume = op.flag("consume");
        let mode = op.at("mode").str();
        if mode == "race" {
            return self.race(op, &members);
        }
        let handles: Vec<Deferred<V>> = members
            .iter()
            .map(|&m| self.take(m).expect("checked above"))
            .collect();
        for &m in &members {
            self.slots.borrow_mut()[m].stages += 1;
        }
        let list: Deferred<V> = {
            let refs = handles.iter();
            match mode {
                "dlist" => DeferredList::new(refs)
                    .fire_on_one_callback(op.flag("fire_on_one_cb"))
                    .fire_on_one_errback(op.flag("fire_on_one_eb"))
                    .consume_errors(consume)
                    .into_deferred()
                    .map(|r| match r {
                        ListResult::All(all) => V::List(
                            all.into_iter()
                                .map(|r| match r {
                                    Ok(v) => V::Tuple(vec![V::Bool(true), v]),
                                    Err(f) => V::Tuple(vec![V::Bool(false), V::Fail(f)]),
                                })
                                .collect(),
                        ),
                        ListResult::First { index, value } => {
                            V::Tuple(vec![value, V::Int(index as i64)])
                        }
                    }),
                "gather" => gather_results(refs, consume).map(V::List),
                other => panic!("unknown list mode {other}"),
            }
        };
        for (&m, d) in members.iter().zip(handles) {
            self.put(m, d);
        }
        assert_eq!(self.slots.borrow().len(), op.at("d").idx());
        self.push_slot(list, None);
        if consume {
            // Twisted's consumed failure becomes None in the member; torsion keeps it.
            for &m in &members {
                self.watch_divergence(m, |r| r.is_err());
            }
        }
        Ok(())
    }

    /// Twisted's `race` leaves `None` in its members (the result of its own callbacks): the
    /// interpreter races the first halves of [`Deferred::hand_off`], and each member goes on
    /// with `()`, Twisted's `None`.
    fn race(self: &Rc<Self>, op: &Json, members: &[usize]) -> Result<(), Unsupported> {
        let mut firsts = Vec::new();
        let mut before = Vec::new();
        for &m in members {
            let d = self.take(m)?;
            let (first, rest) = d.hand_off();
            // The failure the member hands over, to tell race's own AlreadyCalled from it.
            let slot: Rc<RefCell<Option<Failure>>> = Rc::default();
            let s = slot.clone();
            let it = self.clone();
            firsts.push(first.add_both(move |r| {
                *s.borrow_mut() = r.as_ref().err().cloned();
                it.slots.borrow_mut()[m].racing = true;
                r
            }));
            before.push(slot);
            self.put(m, rest.map(|()| V::None));
            self.slots.borrow_mut()[m].stages += 1;
        }
        let list = race(firsts.iter()).map(|(i, v)| V::Tuple(vec![V::Int(i as i64), v]));
        assert_eq!(self.slots.borrow().len(), op.at("d").idx());
        self.push_slot(list, None);
        for ((&m, first), slot) in members.iter().zip(firsts).zip(before) {
            let it = self.clone();
            let stages_then = self.slots.borrow()[m].stages;
            let _ = first.add_both(move |r| {
                it.slots.borrow_mut()[m].racing = false;
                if let Err(f) = &r {
                    if !slot.borrow().as_ref().is_some_and(|g| g.same(f)) {
                        // race's callback raised AlreadyCalled, which Twisted leaves in the
                        // member; here the member goes on with None.
                        it.note_divergence(m, stages_then);
                    }
                }
                Ok::<(), Failure>(())
            });
        }
        Ok(())
    }
}

/// Expands the sugar (`nest`, `add` with `times`), as SPEC.md section 2.
fn expand(program: &[Json]) -> Vec<Json> {
    let mut out = Vec::new();
    let obj = |fields: Vec<(&str, Json)>| {
        Json::Obj(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    };
    for op in program {
        match op.at("op").str() {
            "nest" => {
                let (a, n) = (op.at("d").int(), op.at("n").int());
                for j in 0..n {
                    out.push(obj(vec![
                        ("op", Json::Str("new".into())),
                        ("d", Json::Int(a + j)),
                    ]));
                }
                for j in 0..n - 1 {
                    let cb = obj(vec![
                        ("do", Json::Str("ret_d".into())),
                        ("k", Json::Int(a + j + 1)),
                        ("quiet", Json::Bool(true)),
                    ]);
                    out.push(obj(vec![
                        ("op", Json::Str("add".into())),
                        ("d", Json::Int(a + j)),
                        ("cb", cb),
                        ("eb", Json::Str("pass".into())),
                    ]));
                }
                for j in 0..n - 1 {
                    out.push(obj(vec![
                        ("op", Json::Str("callback".into())),
                        ("d", Json::Int(a + j)),
                        ("v", Json::Int(0)),
                    ]));
                }
            }
            "add" if op.get("times").is_some() => {
                let Json::Obj(fields) = op else {
                    unreachable!()
                };
                let base = Json::Obj(
                    fields
                        .iter()
                        .filter(|(k, _)| k != "times")
                        .cloned()
                        .collect(),
                );
                for _ in 0..op.at("times").int() {
                    out.push(base.clone());
                }
            }
            _ => out.push(op.clone()),
        }
    }
    out
}

/// What running one program gave.
struct Run {
    trace: Vec<String>,
    stopped: Option<Unsupported>,
    /// The (expanded) op it stopped at.
    stopped_at: Option<Json>,
}

fn run(program: &[Json]) -> Run {
    let it = Rc::new(Interp::default());
    for op in expand(program) {
        if let Err(why) = it.step(&op) {
            it.unsupported(why);
        }
        if let Some((len, why)) = it.stop.get() {
            let mut trace = it.trace.take();
            trace.truncate(len);
            return Run {
                trace,
                stopped: Some(why),
                stopped_at: Some(op),
            };
        }
    }
    let trace = it.trace.take();
    Run {
        trace,
        stopped: None,
        stopped_at: None,
    }
}

enum Verdict {
    Pass,
    /// Stopped at an unsupported op after reproducing this many lines.
    Unsupported(Unsupported, usize),
    /// First differing line.
    Mismatch(usize),
}

fn judge(run: &Run, expected: &[String]) -> Verdict {
    match run.stopped {
        None if run.trace == expected => Verdict::Pass,
        Some(why) if expected.starts_with(&run.trace) => Verdict::Unsupported(why, run.trace.len()),
        _ => Verdict::Mismatch(
            run.trace
                .iter()
                .zip(expected)
                .take_while(|(a, b)| a == b)
                .count(),
        ),
    }
}

struct Case {
    source: String,
    program: Vec<Json>,
    trace: Vec<String>,
}

fn corpus() -> Vec<Case> {
    let text = include_str!("deferred_conformance/corpus.jsonl");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let j = Reader::parse(line);
            Case {
                source: j.at("source").str().to_string(),
                program: j.at("program").arr().to_vec(),
                trace: j
                    .at("trace")
                    .arr()
                    .iter()
                    .map(|l| l.str().to_string())
                    .collect(),
            }
        })
        .collect()
}

#[test]
fn torsion_reproduces_twisteds_traces() {
    let cases = corpus();
    assert!(cases.len() >= 100, "the corpus is there");
    let (mut pass, mut total_lines, mut reproduced) = (0, 0, 0);
    let mut unsupported: std::collections::BTreeMap<Unsupported, usize> = Default::default();
    let mut mismatches = Vec::new();
    for case in &cases {
        if std::env::var_os("CONFORMANCE_VERBOSE").is_some() {
            eprintln!("running {}", case.source);
        }
        let run = run(&case.program);
        total_lines += case.trace.len();
        match judge(&run, &case.trace) {
            Verdict::Pass => {
                pass += 1;
                reproduced += case.trace.len();
            }
            Verdict::Unsupported(why, n) => {
                if std::env::var_os("CONFORMANCE_VERBOSE").is_some() {
                    eprintln!(
                        "{}: {why:?} at {:?} after {n}/{} lines",
                        case.source,
                        run.stopped_at,
                        case.trace.len()
                    );
                }
                *unsupported.entry(why).or_default() += 1;
                reproduced += n;
            }
            Verdict::Mismatch(at) => mismatches.push(format!(
                "{}: line {at}: torsion {:?}, Twisted {:?}{}",
                case.source,
                run.trace.get(at),
                case.trace.get(at),
                run.stopped
                    .map(|w| format!(" (stopped: {w:?})"))
                    .unwrap_or_default()
            )),
        }
    }
    let share = reproduced as f64 / total_lines as f64;
    println!(
        "conformance: {} programs: {pass} pass, {} unsupported {unsupported:?}, {} mismatch; \
         {reproduced}/{total_lines} trace lines reproduced ({:.1}%)",
        cases.len(),
        unsupported.values().sum::<usize>(),
        mismatches.len(),
        share * 100.0
    );
    assert!(
        mismatches.is_empty(),
        "mismatches:\n{}",
        mismatches.join("\n")
    );
    assert!(
        share >= 0.80,
        "only {:.1}% of the lines reproduced",
        share * 100.0
    );
}

/// The comparison itself can fail: a trace with one line changed is a mismatch, and a run that
/// stops must have reproduced Twisted's lines up to there.
#[test]
fn the_judge_catches_a_changed_line() {
    let case = corpus()
        .into_iter()
        .find(|c| c.trace.len() >= 3 && run(&c.program).stopped.is_none())
        .expect("a passing program with a few lines");
    let mut wrong = case.trace.clone();
    wrong[1].push('!');
    assert!(matches!(
        judge(&run(&case.program), &wrong),
        Verdict::Mismatch(1)
    ));
    let stopped = Run {
        trace: vec!["something else".into()],
        stopped: Some(Unsupported::ReturnedDeferredConsumed),
        stopped_at: None,
    };
    assert!(matches!(judge(&stopped, &case.trace), Verdict::Mismatch(0)));
}

/// The SPEC's own example.
#[test]
fn the_spec_example() {
    let program = Reader::parse(
        r#"[{"op":"new","d":0},{"op":"add","d":0,"cb":{"id":1,"do":"raise","e":"E1"},"eb":{"id":2,"do":"const","v":10}},{"op":"add","d":0,"cb":"pass","eb":{"id":3,"do":"same"}},{"op":"callback","d":0,"v":1},{"op":"result","d":0}]"#,
    );
    let r = run(program.arr());
    assert_eq!(
        r.trace,
        [
            "cb 1 got value 1",
            "cb 3 got failure E1",
            "result d0: failure E1"
        ]
    );
    assert!(r.stopped.is_none());
}
