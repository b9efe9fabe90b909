"""What the Python boundary costs: `problem.derive(at=…)` on examples/saddle.hasme per
call (to set against the same call in Rust, `cargo bench --bench derive_report`), and
a `weak_order` run from Python against the command line's.

Run after `pip install .` and `cargo build --release`, from the repository root:
    python python/benchmarks/boundary.py [path/to/hasme]
Figures: docs/python.md, "Speed"."""

import subprocess
import sys
import time
import timeit
from pathlib import Path
from typing import Callable, List

import numpy as np

import hasme

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target" / "release" / "hasme"


def per_call(call: Callable[[], object], number: int = 20_000) -> float:
    """Microseconds per call: the best of 7 rounds of `number` calls (the least
    disturbed by other work on the machine)."""
    return min(timeit.repeat(call, number=number, repeat=7)) / number * 1e6


def best_of(call: Callable[[], object], rounds: int = 3) -> float:
    """Seconds: the best of `rounds` runs."""
    times: List[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


saddle = hasme.Problem.from_file(ROOT / "examples" / "saddle.hasme")
at = np.array([0.3, -0.2])
listed = [0.3, -0.2]
named = {"x": 0.3, "y": -0.2}
print("problem.derive on examples/saddle.hasme, µs per call:")
print(f"  at=ndarray                      {per_call(lambda: saddle.derive(at=at)):8.3f}")
print(f"  at=list                         {per_call(lambda: saddle.derive(at=listed)):8.3f}")
print(f"  at=dict                         {per_call(lambda: saddle.derive(at=named)):8.3f}")
print(f"  at=ndarray, then .gradient      {per_call(lambda: saddle.derive(at=at).gradient):8.3f}")
print(f"  at=ndarray, then .json()        {per_call(lambda: saddle.derive(at=at).json()):8.3f}")

cosine = hasme.Problem.from_file(ROOT / "examples" / "cosine.hasme")
settings = dict(etas=[0.2, 0.1, 0.05, 0.025], horizon=1.0, paths=20_000, seed=1)
python = best_of(lambda: hasme.weak_order(cosine, **settings))  # type: ignore[arg-type]
command = [
    str(CLI), "weak-order", "examples/cosine.hasme", "--etas", "0.2,0.1,0.05,0.025",
    "--horizon", "1", "--paths", "20000", "--seed", "1", "--json", "--quiet",
]  # fmt: skip
cli = best_of(lambda: subprocess.run(command, cwd=ROOT, check=True, capture_output=True))
print("weak_order on examples/cosine.hasme, 4 step sizes, 20000 paths, best of 3:")
print(f"  Python {python:.3f} s, command line {cli:.3f} s, ratio {python / cli:.3f}")
