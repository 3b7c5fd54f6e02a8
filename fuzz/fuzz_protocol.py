"""Fuzz the sans-IO protocol layer for a long time (the CI test runs a few hundred cases).

    python fuzz/fuzz_protocol.py                     # atheris (coverage-guided) if installed, else hypothesis
    python fuzz/fuzz_protocol.py -atheris_runs=2000000
    python fuzz/fuzz_protocol.py --hypothesis 200000  # hypothesis, this many examples per strategy

The target (tests/protocol/fuzz_target.py): any bytes give events or AMQPError/BadProtocolHeader with a
valid reply code and text; any other exception is a bug and stops the run with the input that caused it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_hypothesis(examples: int) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.protocol import test_fuzz

    cfg = settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    total = 0
    names = (
        "test_any_bytes", "test_mutated_valid_session", "test_well_framed_garbage", "test_atheris_entry_point",
        "test_valid_but_extreme_values",  # deep and wide tables, 255-byte names, full-frame headers, many channels
    )  # fmt: skip
    for name in names:
        fn = getattr(test_fuzz, name).hypothesis.inner_test
        t0 = time.monotonic()
        strategies = getattr(test_fuzz, name).hypothesis._given_kwargs
        cfg(given(**strategies)(fn))()
        total += examples
        print(f"{name}: {examples} examples in {time.monotonic() - t0:.0f} s", flush=True)
    _ = st
    print(f"hypothesis: {total} examples, no contract broken")


def run_atheris(argv: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["leveret"]):
        from tests.protocol.fuzz_target import SEED, run_bytes

    counter = [0]

    def target(data: bytes) -> None:
        counter[0] += 1
        run_bytes(data)

    # libFuzzer writes every interesting input into the corpus directory: keep it out of the repo
    corpus = Path(tempfile.mkdtemp(prefix="leveret-fuzz-corpus-"))
    (corpus / "seed-session").write_bytes(b"\xff" + SEED)
    atheris.Setup([argv[0], *argv[1:], str(corpus)], target)
    try:
        atheris.Fuzz()
    finally:
        print(f"atheris: {counter[0]} inputs run")


def main() -> None:
    argv = sys.argv
    if len(argv) > 2 and argv[1] == "--hypothesis":
        run_hypothesis(int(argv[2]))
        return
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris not installed: using hypothesis")
        run_hypothesis(int(argv[1]) if len(argv) > 1 else 100_000)
        return
    run_atheris(argv)


if __name__ == "__main__":
    main()
