//! `call_from_thread` throughput: one producer thread queues calls on a running reactor; the
//! last one stops it. Measures the whole hand-off (queue, eventfd wake-up, run on the reactor).
//!
//! `cargo bench -p bench --bench thread_calls`.

use divan::counter::ItemsCount;
use divan::Bencher;
use torsion::{Backend, Reactor};

const N: usize = 100_000;

fn main() {
    divan::main();
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn call_from_thread(bencher: Bencher) {
    bencher
        .counter(ItemsCount::new(N))
        .with_inputs(|| Reactor::with_backend(Backend::Epoll).unwrap())
        .bench_local_values(|reactor| {
            let handle = reactor.handle();
            let producer = std::thread::spawn(move || {
                for i in 0..N {
                    handle
                        .call_from_thread(move |r| {
                            if i == N - 1 {
                                r.stop().unwrap();
                            }
                        })
                        .unwrap();
                }
            });
            reactor.run().unwrap();
            producer.join().unwrap();
            reactor
        });
}
