"""Twisted's LineReceiver and LineOnlyReceiver splitting the data of bench/benches/lines.rs:
4 MiB of 64-byte lines (62 bytes + CRLF) delivered in 64 KiB reads to dataReceived, on a
StringTransport, with a lineReceived that adds up the line lengths. Best and median of
``rounds``. Prints one line per receiver:
``impl=twisted receiver=LineReceiver best_MBps=.. median_MBps=..`` (MB = 10**6 bytes, as divan)."""

import argparse
import statistics
import time

from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineOnlyReceiver, LineReceiver

TOTAL = 4 << 20
LINE = 64
READ = 64 * 1024


def data():
    out = bytearray()
    i = 0
    while len(out) < TOTAL:
        line = f"{i:020} the quick brown fox jumps over the lazy dog".encode()
        line = line[: LINE - 2].ljust(LINE - 2, b".")
        out += line + b"\r\n"
        i += 1
    return bytes(out)


def make(base):
    class Count(base):
        n = 0

        def lineReceived(self, line):
            self.n += len(line)

    return Count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    payload = data()
    reads = [payload[i : i + READ] for i in range(0, len(payload), READ)]
    for base in (LineReceiver, LineOnlyReceiver):
        cls = make(base)
        times = []
        for _ in range(a.rounds):
            p = cls()
            p.makeConnection(StringTransport())
            start = time.perf_counter()
            for r in reads:
                p.dataReceived(r)
            times.append(time.perf_counter() - start)
            assert p.n == TOTAL // LINE * (LINE - 2), p.n
        print(
            f"impl=twisted receiver={base.__name__} best_MBps={TOTAL / min(times) / 1e6:.1f} "
            f"median_MBps={TOTAL / statistics.median(times) / 1e6:.1f}"
        )


if __name__ == "__main__":
    main()
