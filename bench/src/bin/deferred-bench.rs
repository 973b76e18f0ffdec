//! `deferred-bench [--stages N] [--rounds R]`: callbacks per second of one long Deferred chain,
//! the same chain as `bench/twisted/deferred_bench.py` runs on Twisted.
//!
//! A Deferred gets `stages` callbacks, each `|v| Ok(v + 1)`, then fires with 0; the best of
//! `rounds` rounds is kept (the least disturbed by other work on the machine). Prints one line:
//! `impl=torsion stages=N run_per_s=.. total_per_s=..`, where `run` times firing the chain (the
//! callbacks running) and `total` also counts adding them.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bench::args::Args;
use torsion::defer::Deferred;

fn main() {
    let args = Args::from_env();
    let stages: usize = args.get("stages", 100_000);
    let rounds: usize = args.get("rounds", 20);
    let mut best_run = Duration::MAX;
    let mut best_total = Duration::MAX;
    for _ in 0..rounds {
        let start = Instant::now();
        let d = Deferred::<u64>::new();
        let fire = d.resolver();
        let mut d = d;
        for _ in 0..stages {
            d = d.add_callback(|v| Ok(black_box(v) + 1));
        }
        let fired = Instant::now();
        fire.callback(0).unwrap();
        let end = Instant::now();
        assert_eq!(d.try_result().unwrap().unwrap(), stages as u64);
        best_run = best_run.min(end - fired);
        best_total = best_total.min(end - start);
    }
    let rate = |d: Duration| stages as f64 / d.as_secs_f64();
    println!(
        "impl=torsion stages={stages} run_per_s={:.0} total_per_s={:.0}",
        rate(best_run),
        rate(best_total)
    );
}
