//! `Reactor::run_until_complete` and awaitable, cancellable tasks (issue 12, item 5).

use std::future::Future;
use std::time::Duration;

use torsion::defer::{Cancelled, Deferred, Failure, Panicked, ReactorStopped};
use torsion::task::defer_later;
use torsion::Reactor;

#[test]
fn run_until_complete_returns_the_deferreds_result() {
    let reactor = Reactor::new().unwrap();
    let d = defer_later(&reactor, Duration::from_millis(2), || Ok("done"));
    assert_eq!(reactor.run_until_complete(d).unwrap(), "done");
    assert!(!reactor.running());

    // A failure comes back as the Err.
    let reactor = Reactor::new().unwrap();
    let d: Deferred<u8> = defer_later(&reactor, Duration::ZERO, || Err(Failure::new(Cancelled)));
    assert!(reactor
        .run_until_complete(d)
        .unwrap_err()
        .check::<Cancelled>());

    // A future runs on the local executor.
    let reactor = Reactor::new().unwrap();
    let r = reactor.clone();
    let out = reactor.run_until_complete(async move {
        let n = defer_later(&r, Duration::from_millis(1), || Ok(20)).await?;
        Ok(n + 1)
    });
    assert_eq!(out.unwrap(), 21);

    // Already fired: the reactor is not run (it can still be run later).
    let reactor = Reactor::new().unwrap();
    assert_eq!(
        reactor
            .run_until_complete(torsion::defer::succeed(5))
            .unwrap(),
        5
    );
    let r = reactor.clone();
    reactor.call_when_running(move |_| r.stop().unwrap());
    reactor.run().unwrap();
}

#[test]
fn run_until_complete_reports_a_reactor_stopped_by_something_else() {
    let reactor = Reactor::new().unwrap();
    let (never, _fire) = Deferred::<u8>::new();
    reactor.call_later(Duration::from_millis(1), |r| r.stop().unwrap());
    let f = reactor.run_until_complete(never).unwrap_err();
    assert!(f.check::<ReactorStopped>());
    // And a reactor runs only once.
    let f = reactor
        .run_until_complete(defer_later(&reactor, Duration::ZERO, || Ok(1)))
        .unwrap_err();
    assert!(f.downcast_ref::<torsion::Error>().is_some(), "{f}");
}

#[test]
fn a_task_can_be_awaited_for_its_output() {
    let reactor = Reactor::new().unwrap();
    let r = reactor.clone();
    let inner = reactor.spawn_task(async move {
        defer_later(&r, Duration::from_millis(1), || Ok(6))
            .await
            .unwrap()
    });
    let outer = reactor.spawn_task(async move { inner.await.map(|n| n * 7) });
    // The outer task's output is the inner one's Result.
    let got = reactor
        .run_until_complete(async move { outer.await? })
        .unwrap();
    assert_eq!(got, 42);
}

#[test]
fn a_cancelled_or_panicking_task_gives_its_failure() {
    let reactor = Reactor::new().unwrap();
    let (never, _fire) = Deferred::<u8>::new();
    let waiting = reactor.spawn_task(async move { never.await });
    assert!(!waiting.is_finished());
    let boom = reactor.spawn_task(async {
        if true {
            panic!("task boom");
        }
    });
    assert!(boom.is_finished());
    waiting.cancel();
    assert!(waiting.is_finished());
    let (a, b) = reactor
        .run_until_complete(async move { Ok((waiting.await, boom.await)) })
        .unwrap();
    assert!(a.unwrap_err().check::<Cancelled>());
    let f = b.unwrap_err();
    assert_eq!(f.downcast_ref::<Panicked>().unwrap().0, "task boom");
}

#[test]
fn a_task_dropped_with_its_reactor_is_cancelled() {
    let reactor = Reactor::new().unwrap();
    let (never, _fire) = Deferred::<u8>::new();
    let t = reactor.spawn_task(async move { never.await });
    drop(reactor);
    assert!(t.is_finished());
    let mut t = std::pin::pin!(t);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match t.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Err(f)) => assert!(f.check::<Cancelled>()),
        other => panic!("expected a Cancelled failure, got {:?}", other.is_ready()),
    }
}
