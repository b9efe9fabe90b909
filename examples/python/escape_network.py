"""Escape from a network's saddle: `hasme stationary` finds the stationary point,
`hasme escape` starts there and times how long SGD and each model take to leave a
ball around it.

The network is a tanh unit with an output weight, f(a, b) = mean over inputs x of
½(b·tanh(a·x) − y)², learning a teacher y = 0.8·tanh(1.5·x): at a = b = 0 the unit is
silent, a strict saddle. (On examples/network.hasme the same two calls run as they are,
with minutes instead of seconds of work.)

Run: python examples/python/escape_network.py"""

import json
import tempfile
from pathlib import Path

import hasme

NETWORK = """
param s = 0.1                 # gradient noise
var a = 0.3, b = -0.2         # input and output weights
let y1 = 0.8*tanh(-1.5)       # the teacher at x = -1, 0.5, 1
let y2 = 0.8*tanh(0.75)
let y3 = 0.8*tanh(1.5)
minimize (0.5*(b*tanh(-a) - y1)^2 + 0.5*(b*tanh(0.5*a) - y2)^2 + 0.5*(b*tanh(a) - y3)^2)/3
noise sd s
"""

problem = hasme.Problem.from_source(NETWORK, name="unit.hasme")

# Newton's method on ∇f = 0 finds the saddle from the start point.
found = hasme.stationary(problem)
data = found.to_dict()
print(f"{data['kind']} (index {data['index']}) at {found.point}, Hessian eigenvalues {data['hessian_eigenvalues']}")

# Start there: the stationary point's JSON is a start file.
with tempfile.TemporaryDirectory() as tmp:
    start = Path(tmp) / "saddle.json"
    start.write_text(found.json())
    at_saddle = hasme.Problem.from_source(NETWORK, name="unit.hasme", start=start)

result = hasme.escape(
    at_saddle, eta=0.1, radius=0.5, max_steps=5000, paths=2000, seed=3, progress=True
)
print(result.text())
models = result.to_dict()["models"]
print(json.dumps({m: round(v["mean_time"], 3) for m, v in models.items()}))
