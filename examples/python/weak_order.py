"""The weak error of each model against SGD over a grid of step sizes, its fitted order
in η, and the log-log plot: `hasme weak-order --plot` from Python.

Run: python examples/python/weak_order.py [OUT.png]   (default: weak-order.png)"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write a file; in a notebook, leave the backend alone

import hasme

EXAMPLES = Path(__file__).resolve().parents[1]
out = Path(sys.argv[1] if len(sys.argv) > 1 else "weak-order.png")

problem = hasme.Problem.from_file(EXAMPLES / "cosine.hasme")
result = hasme.weak_order(
    problem,
    etas=[0.2, 0.1, 0.05, 0.025],
    horizon=1.0,
    paths=20_000,
    seed=1,
    progress=True,
)
print(result.text())

for name, models in result.to_dict()["observables"].items():
    for model, fit in models.items():
        print(f"{name}: {model:12} order {fit['nominal_order']}, fitted slope {fit['slope']}")

ax = result.plot()
ax.figure.savefig(out, dpi=120, bbox_inches="tight")
print(f"plot: {out}")
