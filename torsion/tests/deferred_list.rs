//! DeferredList / gather_results cancellation as Twisted's `DeferredList.cancel` (issue 12,
//! item 2), observers and fan-out, and lists over inputs the program keeps (item 3).

use std::cell::Cell;
use std::io::Write;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use torsion::defer::{
    gather_results, race, succeed, AlreadyCalled, Cancelled, Deferred, DeferredList, Failure,
    FirstError, ListResult, Message,
};
use torsion::testing::{failure_result_of as failure, success_result_of as value};

/// Twisted: `DeferredList([], fireOnOneCallback=True)`, cancelled, is still not fired
/// (v1 failed it with `Cancelled`).
#[test]
fn cancelling_an_empty_fire_on_one_callback_list_leaves_it_unfired() {
    let dl = DeferredList::new(Vec::<Deferred<u8>>::new())
        .fire_on_one_callback(true)
        .into_deferred();
    dl.cancel();
    assert!(!dl.called());
    assert!(dl.try_result().is_err(), "no result");
}

/// An unfired list whose inputs are cancelled but do not fire it (a paused input) stays
/// unfired: the list itself gets no `Cancelled`.
#[test]
fn cancelling_a_list_whose_inputs_do_not_fire_it_leaves_it_unfired() {
    let (d, fire) = Deferred::<u8>::new();
    d.pause();
    let dl = DeferredList::new([&d]).into_deferred();
    dl.cancel();
    assert!(fire.called(), "the input was cancelled");
    assert!(!dl.called(), "the paused input did not reach the list");
    d.unpause();
    // Now the input's Cancelled reaches the list, which fires with it.
    let ListResult::All(all) = value(dl) else {
        panic!("expected All")
    };
    assert!(all[0].as_ref().unwrap_err().check::<Cancelled>());
    assert!(
        failure(d).check::<Cancelled>(),
        "the input keeps its failure"
    );

    // The same with gather_results.
    let (d, _fire) = Deferred::<u8>::new();
    d.pause();
    let g = gather_results([&d], true);
    g.cancel();
    assert!(!g.called());
    d.unpause();
    let f = failure(g);
    let fe = f.trap::<FirstError>().unwrap();
    assert_eq!(fe.index, 0);
    assert!(fe.failure.check::<Cancelled>());
}

/// Cancelling a fired list that waits on a Deferred returned by its own callback does nothing:
/// the returned Deferred is not cancelled and its canceller does not run (v1 cancelled it).
#[test]
fn cancelling_a_fired_list_waiting_on_its_callbacks_deferred_does_nothing() {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let (inner, fire_inner) = Deferred::<u32>::with_canceller(move |_| r.set(true));
    let dl = DeferredList::new([succeed(1u32)])
        .into_deferred()
        .add_callback_deferred(move |_| inner);
    assert!(dl.is_waiting());
    dl.cancel();
    assert!(
        !ran.get(),
        "the canceller of the returned Deferred did not run"
    );
    assert!(!fire_inner.called());
    fire_inner.callback(7).unwrap();
    assert_eq!(value(dl), 7);

    // gather_results is that same list: the same holds.
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let (inner, fire_inner) = Deferred::<u32>::with_canceller(move |_| r.set(true));
    let g = gather_results([succeed(1u32), succeed(2)], false)
        .add_callback_deferred(move |v| inner.map(move |n| n + v.iter().sum::<u32>()));
    g.cancel();
    assert!(!ran.get());
    fire_inner.callback(10).unwrap();
    assert_eq!(value(g), 13);
}

/// A Deferred waiting on a list forwards its cancel to the list, which applies its own rule.
#[test]
fn a_deferred_waiting_on_a_list_forwards_cancel_with_the_lists_rule() {
    let list = DeferredList::new(Vec::<Deferred<u8>>::new())
        .fire_on_one_callback(true)
        .into_deferred();
    let outer = succeed(()).add_callback_deferred(move |()| list);
    assert!(outer.is_waiting());
    outer.cancel();
    assert!(outer.is_waiting(), "the list was not fired by its cancel");
    drop(outer);

    // An unfired list behind a chain: its inputs are cancelled, the list fires from them.
    let (input, fire) = Deferred::<u8>::new();
    let list = DeferredList::new([input]).into_deferred();
    let outer = succeed(()).add_callback_deferred(move |()| list);
    outer.cancel();
    assert!(fire.called());
    let ListResult::All(all) = value(outer) else {
        panic!()
    };
    assert!(all[0].as_ref().unwrap_err().check::<Cancelled>());
}

/// A cancelled list has no canceller behaviour of a plain Deferred: no "late fire ignored
/// once" (the list is fired by its inputs only, and a fire after it fired is refused as usual).
#[test]
fn an_unfired_list_cancelled_still_fires_from_its_inputs_later() {
    let (a, fire_a) = Deferred::<u8>::with_canceller(|_| {});
    a.pause();
    let dl = DeferredList::new([&a]).consume_errors(true).into_deferred();
    dl.cancel();
    assert!(!dl.called());
    assert_eq!(fire_a.callback(1), Err(AlreadyCalled), "a has a canceller");
    a.unpause();
    assert!(dl.called());
}

/// Observers: one result, many waiters; the observed chain goes on with the original.
#[test]
fn observe_fans_one_result_out_and_the_chain_goes_on() {
    let (d, fire) = Deferred::<String>::new();
    let waiters: Vec<_> = (0..3).map(|_| d.observe()).collect();
    let d = d.map(|s| s.len());
    fire.callback("poem".into()).unwrap();
    for w in waiters {
        assert_eq!(value(w), "poem");
    }
    assert_eq!(value(d), 4);

    // A failure is shared by every observer (clones of one Failure).
    let (d, fire) = Deferred::<u8>::new();
    let (w1, w2) = (d.observe(), d.observe());
    fire.errback(Failure::msg("down")).unwrap();
    let (f1, f2, f3) = (failure(w1), failure(w2), failure(d));
    assert!(f1.same(&f2) && f2.same(&f3));
    assert_eq!(f1.downcast_ref::<Message>().unwrap().0, "down");

    // An observer sees the result at the point of the chain where it was added.
    let (d, fire) = Deferred::<u32>::new();
    let d = d.map(|n| n + 1);
    let early = d.observe();
    let d = d.map(|n| n * 100);
    let late = d.observe();
    fire.callback(1).unwrap();
    assert_eq!((value(early), value(late), value(d)), (2, 200, 200));

    // Cancelling an observer does not cancel the observed Deferred; the late result is ignored.
    let cancelled = Rc::new(Cell::new(false));
    let c = cancelled.clone();
    let (d, fire) = Deferred::<u8>::with_canceller(move |_| c.set(true));
    let w = d.observe();
    w.cancel();
    assert!(!cancelled.get() && !fire.called());
    assert!(failure(w).check::<Cancelled>());
    fire.callback(3).unwrap();
    assert_eq!(value(d), 3);

    // Observing a fired Deferred gives a fired observer at once.
    let d = succeed(5u8);
    assert_eq!(value(d.observe()), 5);
    assert_eq!(value(d), 5);
}

/// A caching proxy hands one result to many waiters, including those that come after it.
#[test]
fn a_cache_hands_one_result_to_many_waiters() {
    struct Cache {
        pending: Deferred<Rc<str>>,
    }
    impl Cache {
        fn get(&self) -> Deferred<Rc<str>> {
            self.pending.observe()
        }
    }
    let (d, fire) = Deferred::new();
    let cache = Cache { pending: d };
    let a = cache.get();
    let b = cache.get();
    fire.callback(Rc::from("the poem")).unwrap();
    let c = cache.get();
    assert_eq!(&*value(a), "the poem");
    assert_eq!(&*value(b), "the poem");
    assert_eq!(&*value(c), "the poem");
    assert!(Rc::ptr_eq(&value(cache.get()), &value(cache.pending)));
}

/// Lists over inputs the program keeps: it can still read them, add to them, pause them.
#[test]
fn lists_watch_inputs_given_by_reference() {
    let (a, fire_a) = Deferred::<u32>::new();
    let (b, fire_b) = Deferred::<u32>::new();
    let all = gather_results([&a, &b], false);
    let b = b.map(|n| n * 10); // still the program's Deferred
    fire_b.callback(2).unwrap();
    fire_a.callback(1).unwrap();
    assert_eq!(value(all), vec![1, 2]);
    assert_eq!(value(a), 1);
    assert_eq!(value(b), 20);

    // race over kept inputs: the loser is cancelled and still readable.
    let (a, fire_a) = Deferred::<u32>::new();
    let (b, _fire_b) = Deferred::<u32>::new();
    let w = race([&a, &b]);
    fire_a.callback(9).unwrap();
    assert_eq!(value(w), (0, 9));
    assert_eq!(value(a), 9, "the winner keeps its value (Twisted: None)");
    assert!(failure(b).check::<Cancelled>());
}

/// `consume_errors` on an observed input marks its failure handled (no "Unhandled error" when
/// it is dropped); without it the input's failure is logged, as in Twisted.
#[test]
fn consume_errors_on_observed_inputs_marks_their_failures_handled() {
    let logs = capture_logs(|| {
        let (d, fire) = Deferred::<u8>::new();
        let dl = DeferredList::new([&d]).consume_errors(true).into_deferred();
        fire.errback(Failure::msg("handled by the list")).unwrap();
        drop((d, fire));
        let _ = value(dl);
    });
    assert!(!logs.contains("Unhandled"), "{logs}");
    let logs = capture_logs(|| {
        let (d, fire) = Deferred::<u8>::new();
        let dl = DeferredList::new([&d]).into_deferred();
        fire.errback(Failure::msg("left in the input")).unwrap();
        drop((d, fire));
        let _ = value(dl);
    });
    assert!(
        logs.contains("Unhandled error in Deferred") && logs.contains("left in the input"),
        "{logs}"
    );
}

/// `Failure` clones share one error: cheap, and `trap` lends it.
#[test]
fn failure_clones_share_the_error() {
    let f = Failure::new(Cancelled);
    let g = f.clone();
    assert!(f.same(&g));
    assert!(!f.same(&Failure::new(Cancelled)));
    let t = g.trap::<Cancelled>().unwrap();
    assert_eq!(*t, Cancelled);
    assert!(t.failure().same(&f));
    let back = t.into_failure();
    assert!(back.trap::<AlreadyCalled>().is_err());
}

/// A tracing writer into a shared buffer, to check what gets logged.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
    type Writer = Buf;
    fn make_writer(&'a self) -> Buf {
        self.clone()
    }
}

fn capture_logs(f: impl FnOnce()) -> String {
    let buf = Buf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(buf.clone())
        .with_max_level(tracing::Level::TRACE)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buf.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

/// `hand_off`: Twisted's treatment of a Deferred a callback returns while the program keeps it.
#[test]
fn hand_off_gives_the_result_at_this_point_and_cancels_through() {
    // The first half gets the result the chain has where it was split; later stages of the
    // rest see `()` (Twisted: None).
    let (d, fire) = Deferred::<u32>::new();
    let d = d.map(|n| n + 1);
    let (first, rest) = d.hand_off();
    let rest = rest.map(|()| "rest");
    fire.callback(1).unwrap();
    assert_eq!(value(first), 2);
    assert_eq!(value(rest), "rest");

    // Cancelling the first half before it has its result cancels the source, and nothing
    // else: with a canceller that does not fire, the source fails with Cancelled, which the
    // first half then gets.
    let ran = Rc::new(Cell::new(0));
    let r = ran.clone();
    let (d, fire) = Deferred::<u32>::with_canceller(move |_| r.set(r.get() + 1));
    let (first, _rest) = d.hand_off();
    first.cancel();
    assert_eq!(ran.get(), 1);
    assert!(fire.called());
    assert!(failure(first).check::<Cancelled>());

    // A paused source: cancelling the first half cancels the (fired) source, which does
    // nothing; the first half is not failed by its own cancel.
    let (d, fire) = Deferred::<u32>::new();
    d.pause();
    fire.callback(5).unwrap();
    let (first, rest) = d.hand_off();
    first.cancel();
    assert!(!first.called());
    rest.unpause();
    assert_eq!(value(first), 5);
}
