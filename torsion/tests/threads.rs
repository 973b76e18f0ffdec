//! The reactor's thread pool: `defer_to_thread`, `call_in_thread`, `blocking_call_from_thread`
//! (issue 12, item 4).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use torsion::defer::{gather_results, Deferred, Failure, Panicked};
use torsion::Reactor;

#[test]
fn defer_to_thread_runs_on_a_worker_and_fires_on_the_reactor_thread() {
    let reactor = Reactor::new().unwrap();
    let me = std::thread::current().id();
    let d = reactor
        .defer_to_thread(|| std::thread::current().id())
        .add_callback(move |worker| {
            assert_eq!(
                std::thread::current().id(),
                me,
                "fired on the reactor thread"
            );
            Ok(worker)
        });
    let worker = reactor.run_until_complete(d).unwrap();
    assert_ne!(worker, me);
}

#[test]
fn a_panic_in_the_function_is_the_failure() {
    let reactor = Reactor::new().unwrap();
    let d: Deferred<u8> = reactor.defer_to_thread(|| panic!("worker boom"));
    let f = reactor.run_until_complete(d).unwrap_err();
    assert_eq!(f.downcast_ref::<Panicked>().unwrap().0, "worker boom");
}

#[test]
fn the_pool_is_bounded() {
    let reactor = Reactor::new().unwrap();
    reactor.set_thread_pool_size(2);
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let threads = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let jobs: Vec<Deferred<()>> = (0..8)
        .map(|_| {
            let (running, most, threads) = (running.clone(), most.clone(), threads.clone());
            reactor.defer_to_thread(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                threads.lock().unwrap().insert(std::thread::current().id());
                std::thread::sleep(Duration::from_millis(10));
                running.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    let all = gather_results(jobs, false);
    assert_eq!(reactor.run_until_complete(all).unwrap().len(), 8);
    assert!(most.load(Ordering::SeqCst) <= 2, "at most 2 at once");
    assert!(threads.lock().unwrap().len() <= 2, "at most 2 threads");
}

#[test]
fn call_in_thread_runs_the_function() {
    let reactor = Reactor::new().unwrap();
    let handle = reactor.handle();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    reactor.call_in_thread(move || {
        r.store(true, Ordering::SeqCst);
        handle.stop().unwrap();
    });
    reactor.run().unwrap();
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
fn blocking_call_from_thread_returns_the_deferreds_result() {
    let reactor = Reactor::new().unwrap();
    let handle = reactor.handle();
    let d = reactor.defer_to_thread(move || {
        let ok = handle.blocking_call_from_thread(|r| {
            torsion::task::defer_later(r, Duration::from_millis(1), || Ok(String::from("hi")))
        });
        let failed =
            handle.blocking_call_from_thread(|_| torsion::defer::fail::<u8>(Failure::msg("nope")));
        (ok, failed)
    });
    let (ok, failed) = reactor.run_until_complete(d).unwrap();
    assert_eq!(ok.unwrap(), "hi");
    assert_eq!(failed.unwrap_err().message, "nope");

    // On the reactor thread it would deadlock: an error instead.
    let reactor = Reactor::new().unwrap();
    let err = reactor
        .handle()
        .blocking_call_from_thread(|_| torsion::defer::succeed(1))
        .unwrap_err();
    assert!(err.message.contains("deadlock"), "{err}");
}

#[test]
fn shutdown_joins_the_workers_and_unblocks_waiting_ones() {
    let reactor = Reactor::new().unwrap();
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    let _slow = reactor.defer_to_thread(move || {
        std::thread::sleep(Duration::from_millis(50));
        f.store(true, Ordering::SeqCst);
    });
    // A worker waiting on a Deferred that never fires.
    let handle = reactor.handle();
    let waited = Arc::new(Mutex::new(None));
    let w = waited.clone();
    reactor.call_in_thread(move || {
        let r = handle.blocking_call_from_thread(|_| {
            let (d, fire) = Deferred::<u8>::new();
            std::mem::forget(fire); // never fires, never dropped
            d
        });
        *w.lock().unwrap() = Some(r);
    });
    reactor.call_later(Duration::from_millis(5), |r| r.stop().unwrap());
    let start = Instant::now();
    reactor.run().unwrap();
    assert!(
        finished.load(Ordering::SeqCst),
        "run returned after joining the slow job"
    );
    let waited = waited
        .lock()
        .unwrap()
        .take()
        .expect("the waiting worker returned");
    assert!(waited.unwrap_err().message.contains("shutting"));
    assert!(start.elapsed() < Duration::from_secs(5));
}
