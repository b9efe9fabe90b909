#!/usr/bin/env python3
"""JAX reference for one HA-SME evaluation on a teacher-student network.

The evaluation a researcher would write with JAX (jit, CPU, float64): at a point x of
a two-layer tanh network's mean squared loss over n rows,

  g       = grad f(x)                         (jax.grad)
  H       = hessian f(x), d x d               (jax.hessian)
  G_i     = grad F_i(x), one row per example  (jax.vmap(jax.grad))
  u       = A zeta,  A = sqrt(kappa / n) [G_1 - g, ..., G_n - g],  zeta in R^n given
            (A A^T = Sigma, the minibatch noise covariance; kappa = (n - b)/(b (n - 1)))
  H = U diag(lam) U^T                         (jnp.linalg.eigh)
  drift   = -U diag(phi(eta lam)) U^T g,      phi(z) = -log(1 - z) / z
  incr    = sqrt(eta) U diag(sqrt(psi(eta lam))) U^T u,
            psi(z) = -2 log(1 - z) / (z (2 - z))

(docs/models.md: section 2 for the models, section 8 for the matrix-free evaluation
hasme does instead). The script

  1. writes the network's data (a random teacher network, inputs N(0, 1), label noise,
     all from --seed) and its objective file for hasme into --dir;
  2. times the JAX evaluation (after jit warm-up, best of --repeats);
  3. runs the library's matrix-free evaluation on the same file, point and zeta
     (`examples/evaluation.rs`: the gradient over the rows, u = A zeta, Lanczos on
     Hessian-vector products; `--hasme PATH` names its binary,
     `target/release/examples/evaluation`), so both are measured in one run;
  4. checks that both give the same drift and increment (same dW) and prints the ratio.

Not run by the tests: it needs JAX (`pip install jax`). Usage:

  python3 benches/baseline/jax_network.py --hidden 32 --inputs 20 --rows 2000 \
      --hasme target/release/examples/evaluation

With --write-only it writes the objective file, the point and zeta and stops (numpy
only, no JAX): the inputs of `examples/evaluation.rs` at sizes JAX's dense Hessian
cannot take, e.g. d = 6400 for the peak-memory figure of docs/performance.md.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

if "--write-only" not in sys.argv:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)


def write_problem(directory, hidden, inputs, rows, batch, seed):
    """The teacher's data (CSV) and the student's objective file; returns the start."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, inputs))
    w_teacher = rng.standard_normal((hidden, inputs)) / np.sqrt(inputs)
    v_teacher = rng.uniform(-1.0, 1.0, hidden)
    y = np.tanh(x @ w_teacher.T) @ v_teacher + 0.1 * rng.standard_normal(rows)
    os.makedirs(directory, exist_ok=True)
    csv = os.path.join(directory, "teacher.csv")
    with open(csv, "w") as out:
        out.write(",".join([f"x{i + 1}" for i in range(inputs)] + ["y"]) + "\n")
        for row, label in zip(x, y):
            out.write(",".join(repr(float(v)) for v in row) + f",{float(label)!r}\n")
    # The student's start: small random weights, the same for both programs (written
    # as an explicit start file, so no random draw has to agree between them).
    w0 = rng.standard_normal((hidden, inputs)) / np.sqrt(inputs)
    b0 = 0.1 * rng.standard_normal(hidden)
    v0 = rng.uniform(-0.5, 0.5, hidden)
    source = f"""# Teacher-student tanh network for the JAX comparison (written by jax_network.py).
param p = {inputs}
param h = {hidden}
data d = "teacher.csv"
var W[h, p] = 0
var b[h] = 0
var v[h] = 0
minimize mean(d, 0.5*(sum(j = 1..h, v[j]*tanh(sum(i = 1..p, W[j, i]*d.x[i]) + b[j])) - d.y)^2)
batch {batch}
"""
    with open(os.path.join(directory, "network.hasme"), "w") as out:
        out.write(source)
    names = (
        [f"W[{j + 1},{i + 1}]" for j in range(hidden) for i in range(inputs)]
        + [f"b[{j + 1}]" for j in range(hidden)]
        + [f"v[{j + 1}]" for j in range(hidden)]
    )
    point = np.concatenate([w0.ravel(), b0, v0])
    assert len(names) == point.size
    with open(os.path.join(directory, "point.json"), "w") as out:
        json.dump([float(v) for v in point], out)
    return x, y, point


def evaluation(x, y, hidden, inputs, batch, eta):
    """The jitted evaluation (drift, increment) of HA-SME at a point, given dW."""
    n = x.shape[0]
    kappa = (n - batch) / (batch * (n - 1))

    def example_loss(theta, xi, yi):
        w = theta[: hidden * inputs].reshape(hidden, inputs)
        b = theta[hidden * inputs : hidden * (inputs + 1)]
        v = theta[hidden * (inputs + 1) :]
        return 0.5 * (jnp.dot(v, jnp.tanh(w @ xi + b)) - yi) ** 2

    def loss(theta):
        return jnp.mean(jax.vmap(example_loss, in_axes=(None, 0, 0))(theta, x, y))

    per_example = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))

    @jax.jit
    def evaluate(theta, zeta):
        g = jax.grad(loss)(theta)
        h = jax.hessian(loss)(theta)
        centred = per_example(theta, x, y) - g
        noise = jnp.sqrt(kappa / n) * (centred.T @ zeta)
        lam, u = jnp.linalg.eigh(h)
        z = eta * lam
        phi = jnp.where(jnp.abs(z) < 1e-8, 1.0 + z / 2, -jnp.log1p(-z) / z)
        psi = jnp.where(
            jnp.abs(z) < 1e-8, 1.0 + z, -2.0 * jnp.log1p(-z) / (z * (2.0 - z))
        )
        drift = -u @ (phi * (u.T @ g))
        increment = jnp.sqrt(eta) * (u @ (jnp.sqrt(psi) * (u.T @ noise)))
        return drift, increment, jnp.max(lam)

    return evaluate


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--inputs", type=int, default=20)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--eta", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default="target/jax-network")
    parser.add_argument("--hasme", help="the hasme binary (omit to time JAX only)")
    parser.add_argument(
        "--write-only",
        action="store_true",
        help="write the objective file, point.json and zeta.json, then stop (no JAX)",
    )
    args = parser.parse_args()

    x, y, point = write_problem(
        args.dir, args.hidden, args.inputs, args.rows, args.batch, args.seed
    )
    d = point.size
    zeta = np.random.default_rng(args.seed + 1).standard_normal(args.rows)
    zeta_file = os.path.join(args.dir, "zeta.json")
    with open(zeta_file, "w") as out:
        json.dump([float(v) for v in zeta], out)
    if args.write_only:
        print(f"d = {d}, n = {args.rows}: {args.dir}/network.hasme, point.json, zeta.json")
        return 0
    evaluate = evaluation(
        jnp.asarray(x), jnp.asarray(y), args.hidden, args.inputs, args.batch, args.eta
    )
    theta, zetaj = jnp.asarray(point), jnp.asarray(zeta)
    start = time.perf_counter()
    jax.block_until_ready(evaluate(theta, zetaj))
    compile_seconds = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        drift, increment, lam_max = jax.block_until_ready(evaluate(theta, zetaj))
        times.append(time.perf_counter() - start)
    jax_seconds = min(times)
    print(
        f"d = {d}, n = {args.rows}, eta = {args.eta}, eta*lam_max = "
        f"{args.eta * float(lam_max):.3f}"
    )
    print(
        f"JAX (jit, CPU, float64, dense Hessian + eigh): {jax_seconds * 1e3:.1f} ms "
        f"per evaluation (best of {args.repeats}; jit compile {compile_seconds:.1f} s)"
    )
    if not args.hasme:
        return 0

    command = [
        args.hasme,
        os.path.join(args.dir, "network.hasme"),
        os.path.join(args.dir, "point.json"),
        repr(args.eta),
        zeta_file,
        str(args.repeats),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        return 1
    report = json.loads(result.stdout)
    hasme_seconds = report["seconds_per_evaluation"]
    drift_error = np.max(np.abs(np.asarray(report["drift"]) - np.asarray(drift)))
    increment_error = np.max(
        np.abs(np.asarray(report["increment"]) - np.asarray(increment))
    )
    print(
        f"hasme (matrix-free, Lanczos steps {report['lanczos_steps']}): "
        f"{hasme_seconds * 1e3:.1f} ms per evaluation (best of {args.repeats})"
    )
    scale = max(np.max(np.abs(drift)), np.max(np.abs(increment)))
    print(
        f"agreement: max |drift difference| {drift_error:.2e}, "
        f"max |increment difference| {increment_error:.2e} (largest entry {scale:.2e})"
    )
    print(f"ratio JAX / hasme: {jax_seconds / hasme_seconds:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
