#!/usr/bin/env python3
"""Generate the Deferred conformance corpus: programs from gen.py, traces from Twisted.

Usage:
    make_corpus.py CONFORMANCE_DIR FIRST_SEED LAST_SEED > corpus.jsonl

CONFORMANCE_DIR holds gen.py, lang.py and twisted_run.py (the project's shared
conformance/deferred directory); Twisted must be importable. One JSON object per line:
{"source": "gen SEED", "program": [...], "trace": [...]}. Seeds whose program Twisted cannot
trace (twisted_run.py exit 3) are left out and counted on stderr, as the README asks.
Run once; `cargo test` replays the file without Python.
"""

import json
import sys
from pathlib import Path


def main(argv):
    if len(argv) != 4:
        print(__doc__.strip(), file=sys.stderr)
        return 64
    sys.path.insert(0, str(Path(argv[1]).resolve()))
    import gen  # noqa: E402
    import twisted_run  # noqa: E402

    twisted_run.quiet_twisted_log()
    skipped = []
    for seed in range(int(argv[2]), int(argv[3]) + 1):
        program = gen.generate(seed)
        try:
            trace = twisted_run.run(program)
        except twisted_run.RunError as e:
            skipped.append((seed, str(e)))
            continue
        print(json.dumps({"source": f"gen {seed}", "program": program, "trace": trace}))
    print(f"skipped {len(skipped)} seeds (no trace): {[s for s, _ in skipped]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
