"""Callbacks per second of one long Deferred chain on Twisted: the chain of
torsion/examples/deferred_bench.rs (``stages`` callbacks ``lambda v: v + 1``, fired with 0, best of
``rounds``). Prints ``impl=twisted stages=N run_per_s=.. total_per_s=..``."""

import argparse
import time

from twisted.internet.defer import Deferred


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    inc = lambda v: v + 1  # noqa: E731
    best_run = best_total = float("inf")
    for _ in range(a.rounds):
        start = time.perf_counter()
        d = Deferred()
        for _ in range(a.stages):
            d.addCallback(inc)
        fired = time.perf_counter()
        d.callback(0)
        end = time.perf_counter()
        got = []
        d.addCallback(got.append)
        assert got == [a.stages], got
        best_run = min(best_run, end - fired)
        best_total = min(best_total, end - start)
    print(
        f"impl=twisted stages={a.stages} run_per_s={a.stages / best_run:.0f} "
        f"total_per_s={a.stages / best_total:.0f}"
    )


if __name__ == "__main__":
    main()
