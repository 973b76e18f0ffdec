//! Callbacks per second of a long Deferred chain.
//!
//! Run with `cargo run --release -p torsion --example deferred_bench [stages] [rounds]`
//! (defaults: 100,000 stages, 20 rounds). Prints the best round: the rate of running the
//! callbacks once fired, and the rate including adding them, then the same figures as one
//! `impl=torsion stages= run_per_s= total_per_s=` line for `bench/run.sh`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use torsion::defer::Deferred;

fn main() {
    let mut args = std::env::args().skip(1);
    let stages: usize = args.next().map_or(100_000, |a| a.parse().expect("stages"));
    let rounds: usize = args.next().map_or(20, |a| a.parse().expect("rounds"));
    let mut best_run = Duration::MAX;
    let mut best_total = Duration::MAX;
    for _ in 0..rounds {
        let start = Instant::now();
        let (d, fire) = Deferred::<u64>::new();
        let mut d = d;
        for _ in 0..stages {
            d = d.add_callback(|v| Ok(black_box(v) + 1));
        }
        let fired = Instant::now();
        fire.callback(0).unwrap();
        let end = Instant::now();
        let result = d.try_result().unwrap().unwrap();
        assert_eq!(result, stages as u64);
        best_run = best_run.min(end - fired);
        best_total = best_total.min(end - start);
    }
    let rate = |d: Duration| stages as f64 / d.as_secs_f64();
    println!(
        "{stages} stages: run {:.1} M callbacks/s ({:.1} ns each); add+run {:.1} M callbacks/s",
        rate(best_run) / 1e6,
        best_run.as_nanos() as f64 / stages as f64,
        rate(best_total) / 1e6,
    );
    println!(
        "impl=torsion stages={stages} run_per_s={:.0} total_per_s={:.0}",
        rate(best_run),
        rate(best_total)
    );
}
