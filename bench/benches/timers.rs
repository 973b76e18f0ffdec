//! Timers: a million delayed calls scheduled and fired, and a million scheduled and cancelled,
//! on torsion's reactor and on tokio's timer wheel (`tokio::time::sleep`).
//!
//! The delays are spread over 0..1 ms, so that each run also waits about 1 ms of real time.
//! tokio has no "call this later" primitive: its idiom is a spawned task that sleeps, which
//! `tokio_spawn_sleep_and_fire` runs (task spawn included, as a tokio user pays it).
//! `tokio_wheel_sleep_and_fire` measures the wheel alone: one task polls each `Sleep` once
//! (which inserts it) with a waker that counts, and waits until every one has woken.
//! `tokio_sleep_and_cancel` polls each `Sleep` once and drops it (which removes it).
//!
//! `cargo bench -p bench --bench timers` (add `-- --sample-count 3` for a quick run).

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use divan::counter::ItemsCount;
use divan::Bencher;
use torsion::{Backend, DelayedCall, Reactor};

const N: usize = 1_000_000;

fn delay(i: usize) -> Duration {
    Duration::from_micros((i % 1000) as u64)
}

fn main() {
    divan::main();
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn torsion_schedule_and_fire(bencher: Bencher) {
    bencher
        .counter(ItemsCount::new(N))
        .with_inputs(|| Reactor::with_backend(Backend::Epoll).unwrap())
        .bench_local_values(|reactor| {
            let fired = Rc::new(Cell::new(0usize));
            for i in 0..N {
                let fired = fired.clone();
                reactor.call_later(delay(i), move |r| {
                    fired.set(fired.get() + 1);
                    if fired.get() == N {
                        r.stop().unwrap();
                    }
                });
            }
            reactor.run().unwrap();
            assert_eq!(fired.get(), N);
            reactor
        });
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn torsion_schedule_and_cancel(bencher: Bencher) {
    bencher
        .counter(ItemsCount::new(N))
        .with_inputs(|| {
            (
                Reactor::with_backend(Backend::Epoll).unwrap(),
                Vec::<DelayedCall>::with_capacity(N),
            )
        })
        .bench_local_values(|(reactor, mut calls)| {
            for i in 0..N {
                calls.push(reactor.call_later(delay(i), |_| unreachable!()));
            }
            for c in &calls {
                c.cancel().unwrap();
            }
            (reactor, calls)
        });
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn tokio_spawn_sleep_and_fire(bencher: Bencher) {
    bencher
        .counter(ItemsCount::new(N))
        .with_inputs(tokio_runtime)
        .bench_local_values(|rt| {
            let fired = Arc::new(AtomicUsize::new(0));
            rt.block_on(async {
                for i in 0..N {
                    let fired = fired.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay(i)).await;
                        fired.fetch_add(1, Ordering::Relaxed);
                    });
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                while fired.load(Ordering::Relaxed) < N {
                    tokio::task::yield_now().await;
                }
            });
            rt
        });
}

/// Counts wake-ups.
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn tokio_wheel_sleep_and_fire(bencher: Bencher) {
    bencher
        .counter(ItemsCount::new(N))
        .with_inputs(|| (tokio_runtime(), Vec::with_capacity(N)))
        .bench_local_values(|(rt, mut sleeps)| {
            let count = Arc::new(CountingWaker(AtomicUsize::new(0)));
            let waker = Waker::from(count.clone());
            rt.block_on(async {
                let mut cx = Context::from_waker(&waker);
                for i in 0..N {
                    let mut s = Box::pin(tokio::time::sleep(delay(i)));
                    if s.as_mut().poll(&mut cx).is_ready() {
                        count.0.fetch_add(1, Ordering::Relaxed);
                    }
                    sleeps.push(s);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                while count.0.load(Ordering::Relaxed) < N {
                    tokio::task::yield_now().await;
                }
            });
            (rt, sleeps)
        });
}

struct NoopWaker;

impl Wake for NoopWaker {
    fn wake(self: Arc<Self>) {}
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn tokio_sleep_and_cancel(bencher: Bencher) {
    let waker = Waker::from(Arc::new(NoopWaker));
    bencher
        .counter(ItemsCount::new(N))
        .with_inputs(|| (tokio_runtime(), Vec::with_capacity(N)))
        .bench_local_values(|(rt, mut sleeps)| {
            rt.block_on(async {
                let mut cx = Context::from_waker(&waker);
                for i in 0..N {
                    let mut s = Box::pin(tokio::time::sleep(delay(i + 1)));
                    let _ = s.as_mut().poll(&mut cx); // registers it in the wheel
                    sleeps.push(s);
                }
                sleeps.clear(); // dropping a registered Sleep removes it from the wheel
            });
            (rt, sleeps)
        });
}
