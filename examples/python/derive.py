"""f, ∇f, ∇²f and Σ at a point, then each model's drift and diffusion at a step size:
`hasme derive` from Python. Run: python examples/python/derive.py"""

from pathlib import Path

import numpy as np

import hasme

EXAMPLES = Path(__file__).resolve().parents[1]

problem = hasme.Problem.from_file(EXAMPLES / "saddle.hasme", params={"lambda": 3.0})
print(f"{problem.file}: variables {problem.variables}, start {problem.start}")

# A point as an array (or a dict: {"x": 0.1, "y": -0.2}, or "x=0.1,y=-0.2").
at = np.array([0.1, -0.2])
result = problem.derive(at=at, eta=0.1, models=["sme1", "sme2", "hasme"])
print("f       ", result.value)
print("∇f      ", result.gradient)
print("∇²f\n", result.hessian)

data = result.to_dict()
print("Σ\n", data["noise_cov"])
for name, model in data["models"].items():
    print(f"{name:6} drift {model['drift']}")

# A model outside its domain: HA-SME needs η·λ_max < 1.
try:
    problem.derive(at=at, eta=0.5, models=["sme1", "hasme"])
except hasme.RunError as err:
    print("RunError:", err)
    assert isinstance(err.result, hasme.DeriveResult)
    models = err.result.to_dict()["models"]
    print("the others are still there:", [m for m, v in models.items() if "drift" in v])
