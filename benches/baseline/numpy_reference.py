#!/usr/bin/env python3
"""Straightforward vectorised NumPy reference for one weak-order experiment.

Reproduces what `hasme weak-order examples/reference2d.hasme --eta-max 0.5 --levels 4
--horizon 1 --substeps 16` computes (without its integration check), following the
docs/models.md (sections 1, 2 and 4):

  objective   f(x, y) = 0.5 x^2 + 0.5 cos x + 0.25 y^2 + 0.1 x y,  start (1.0, -0.5)
  noise       constant Gaussian, Sigma = diag(0.25, 0.1)
  observable  phi(x, y) = x^2 + y^2,   horizon T = 1
  step sizes  eta in {0.5, 0.25, 0.125, 0.0625},  N = T / eta SGD steps

  SGD         x_{k+1} = x_k + eta (Sigma^{1/2} xi_k - g(x_k)),  xi_k ~ N(0, I)
  SDE models  dX = b(X) dt + sigma(X) dW  (sme1, sme2, hasme, hasme-exact),
              integrated with m substeps per SGD step by Talay-Tubaro extrapolation
              of Euler-Maruyama (steps h and h/2 on one Brownian path).

Coupling (common random numbers): over SGD step k the SDE's Brownian increments sum to
sqrt(eta) xi_k. We draw the 2m half-substep increments of step k iid N(0, h/2 I) per
path and set xi_k = (their sum) / sqrt(eta), which has exactly the required joint law.

Reported per eta and model: d = mean over paths of (phi_model - phi_SGD), paired on
the same path, with its standard error; and E phi for SGD.

Deliberately plain: vectorised over paths, float64, generic stacked linear algebra
(np.linalg.eigh on (paths, 2, 2) stacks, einsum products), no 2x2 closed forms.
Only numpy and the standard library.
"""

import argparse
import json
import sys
import time

import numpy as np

# ----------------------------------------------------------------------------------
# The problem
# ----------------------------------------------------------------------------------

X0 = np.array([1.0, -0.5])
SIGMA = np.diag([0.25, 0.1])  # constant gradient-noise covariance
HORIZON = 1.0


def grad(x):
    """g = grad f at points x of shape (P, 2)."""
    u, v = x[:, 0], x[:, 1]
    return np.stack([u - 0.5 * np.sin(u) + 0.1 * v, 0.5 * v + 0.1 * u], axis=-1)


def hessian(x):
    """H = grad^2 f at points x of shape (P, 2): shape (P, 2, 2)."""
    P = x.shape[0]
    H = np.empty((P, 2, 2))
    H[:, 0, 0] = 1.0 - 0.5 * np.cos(x[:, 0])
    H[:, 0, 1] = H[:, 1, 0] = 0.1
    H[:, 1, 1] = 0.5
    return H


def phi(x):
    """Observable phi(x, y) = x^2 + y^2, shape (P,)."""
    return np.sum(x * x, axis=-1)


# ----------------------------------------------------------------------------------
# Linear-algebra helpers (stacked)
# ----------------------------------------------------------------------------------

PSD_TOL = 1e-12  # relative round-off floor for an indefinite diffusion


def ell(p):
    """l(p) = log(p)/(p - 1), l(1) = 1, stable near p = 1 (docs/models.md §2).

    With q = p - 1: log1p(q)/q, or the series 1 - q/2 + q^2/3 - q^3/4 + q^4/5 for
    |q| < 1e-4 (error ~ q^5 < 1e-20 relative).
    """
    q = p - 1.0
    small = np.abs(q) < 1e-4
    q_safe = np.where(small, 1.0, q)  # avoid 0/0 in the branch not taken
    direct = np.log1p(q_safe) / q_safe
    series = 1.0 - q * (1.0 / 2 - q * (1.0 / 3 - q * (1.0 / 4 - q / 5)))
    return np.where(small, series, direct)


def sym_sqrt(S, what="matrix"):
    """Symmetric PSD square root of a stack of symmetric matrices (..., d, d).

    Eigenvalues below -PSD_TOL * scale mean an indefinite matrix: an error (the spec
    forbids silent clipping); round-off negatives above that floor are set to 0.
    """
    w, V = np.linalg.eigh(S)
    scale = np.max(np.abs(w), axis=-1, keepdims=True)
    if np.any(w < -PSD_TOL * scale):
        raise FloatingPointError(f"{what} is indefinite (min eigenvalue {w.min():.3e})")
    r = np.sqrt(np.maximum(w, 0.0))
    return (V * r[..., None, :]) @ np.swapaxes(V, -1, -2)  # V diag(r) V^T


SIGMA_SQRT = sym_sqrt(SIGMA, "Sigma")  # Sigma^{1/2}, constant


# ----------------------------------------------------------------------------------
# The SDE models: drift b(x) (P, 2) and diffusion factor sigma(x) (P, 2, 2) or (2, 2)
# ----------------------------------------------------------------------------------


def sme1(x, eta):
    """SME-1: b = -g, sigma = sqrt(eta) Sigma^{1/2}."""
    return -grad(x), np.sqrt(eta) * SIGMA_SQRT


def sme2(x, eta):
    """SME-2: b = -g - (eta/2) H g, sigma = sqrt(eta) Sigma^{1/2}."""
    g = grad(x)
    Hg = np.einsum("pij,pj->pi", hessian(x), g)
    return -g - 0.5 * eta * Hg, np.sqrt(eta) * SIGMA_SQRT


def _hasme_common(x, eta, exact):
    """HA-SME (exact=False) or HA-SME-exact (exact=True) through H = U diag(lam) U^T.

    drift  b = -U diag(l(p_i)) U^T g,         p_i = 1 - eta lam_i
    Gamma  = U G_hat U^T,  G_hat_ij = eta (U^T Sigma U)_ij W_ij,
           W_ij = s_i s_j with s_i^2 = l(p_i^2)   (hasme)
           W_ij = l(p_i p_j)                      (hasme-exact)
    sigma  = Gamma^{1/2} (symmetric PSD square root).
    """
    g = grad(x)
    lam, U = np.linalg.eigh(hessian(x))  # (P, 2), (P, 2, 2); columns of U = eigvecs
    p = 1.0 - eta * lam
    if np.any(p <= 0.0):
        raise FloatingPointError(
            f"eta * lambda_max >= 1 (max eta*lambda = {np.max(eta * lam):.4f}): "
            "outside HA-SME's domain"
        )
    # Drift: -U diag(l(p)) U^T g
    Ut = np.swapaxes(U, -1, -2)
    Utg = np.einsum("pij,pj->pi", Ut, g)  # U^T g
    b = -np.einsum("pij,pj->pi", U, ell(p) * Utg)
    # Diffusion
    if exact:
        W = ell(p[:, :, None] * p[:, None, :])
    else:
        s = np.sqrt(ell(p * p))
        W = s[:, :, None] * s[:, None, :]
    Sig_hat = Ut @ SIGMA @ U  # Sigma in H's eigenbasis
    G_hat = eta * Sig_hat * W  # entrywise product
    Gamma = U @ G_hat @ Ut
    Gamma = 0.5 * (Gamma + np.swapaxes(Gamma, -1, -2))  # exact symmetry for eigh
    return b, sym_sqrt(Gamma, "the diffusion Gamma")


def hasme(x, eta):
    return _hasme_common(x, eta, exact=False)


def hasme_exact(x, eta):
    return _hasme_common(x, eta, exact=True)


MODELS = {"sme1": sme1, "sme2": sme2, "hasme": hasme, "hasme-exact": hasme_exact}


# ----------------------------------------------------------------------------------
# Simulation
# ----------------------------------------------------------------------------------


def euler(model, x, eta, dt, dW):
    """One Euler-Maruyama step x + b(x) dt + sigma(x) dW for a stack of paths."""
    b, sig = model(x, eta)
    if sig.ndim == 2:  # constant factor, shared by all paths
        noise = dW @ sig.T
    else:
        noise = np.einsum("pij,pj->pi", sig, dW)
    return x + b * dt + noise


def run_eta(eta, paths, substeps, rng):
    """SGD and the four models on `paths` coupled paths at step size eta.

    Returns phi(x_N) for SGD (P,) and the Talay-Tubaro estimates
    2 phi(X_fine) - phi(X_coarse) per model (dict of (P,)).
    """
    n_steps = int(round(HORIZON / eta))
    h = eta / substeps
    sgd = np.tile(X0, (paths, 1))
    coarse = {m: sgd.copy() for m in MODELS}
    fine = {m: sgd.copy() for m in MODELS}
    half_sd = np.sqrt(0.5 * h)
    for _ in range(n_steps):
        dW_sum = np.zeros((paths, 2))  # sum of the 2m half-substep increments
        for _ in range(substeps):
            dW1 = half_sd * rng.standard_normal((paths, 2))
            dW2 = half_sd * rng.standard_normal((paths, 2))
            dW_sum += dW1 + dW2
            for name, model in MODELS.items():
                # coarse: one step h on dW1 + dW2; fine: two steps h/2 on dW1, dW2
                coarse[name] = euler(model, coarse[name], eta, h, dW1 + dW2)
                xf = euler(model, fine[name], eta, 0.5 * h, dW1)
                fine[name] = euler(model, xf, eta, 0.5 * h, dW2)
        # SGD step with the coupled xi_k = dW_sum / sqrt(eta):
        # x <- x + eta (Sigma^{1/2} xi - g(x))  (sign as hasme's sim::terms::sgd_move)
        xi = dW_sum / np.sqrt(eta)
        sgd = sgd + eta * (xi @ SIGMA_SQRT.T - grad(sgd))
    phi_sgd = phi(sgd)
    phi_models = {m: 2.0 * phi(fine[m]) - phi(coarse[m]) for m in MODELS}
    return phi_sgd, phi_models


def mean_se(v):
    return float(np.mean(v)), float(np.std(v, ddof=1) / np.sqrt(v.size))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paths", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--substeps", type=int, default=16)
    ap.add_argument("--eta-max", type=float, default=0.5)
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args()

    etas = [args.eta_max / 2**i for i in range(args.levels)]
    for eta in etas:
        n = HORIZON / eta
        if abs(n - round(n)) > 1e-9:
            sys.exit(f"T / eta must be an integer (eta = {eta})")
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    results = []
    for eta in etas:
        phi_sgd, phi_models = run_eta(eta, args.paths, args.substeps, rng)
        row = {"eta": eta, "sgd": mean_se(phi_sgd), "models": {}}
        for m, v in phi_models.items():
            row["models"][m] = mean_se(v - phi_sgd)  # paired differences
        results.append(row)
    wall = time.perf_counter() - t0

    if args.json:
        out = {
            "numpy": np.__version__,
            "paths": args.paths,
            "seed": args.seed,
            "substeps": args.substeps,
            "wall_seconds": wall,
            "results": [
                {
                    "eta": r["eta"],
                    "sgd_mean": r["sgd"][0],
                    "sgd_se": r["sgd"][1],
                    "d": {m: v[0] for m, v in r["models"].items()},
                    "se": {m: v[1] for m, v in r["models"].items()},
                }
                for r in results
            ],
        }
        print(json.dumps(out, indent=1))
        return
    print(f"numpy {np.__version__}, {args.paths} paths, seed {args.seed}, "
          f"{args.substeps} substeps (Talay-Tubaro), T = {HORIZON}")
    print("d = mean(phi_model - phi_SGD) over coupled paths, se its standard error")
    print(f"{'eta':>8} {'E phi SGD':>12} {'(se)':>9}  "
          + "  ".join(f"{m:>24}" for m in MODELS))
    for r in results:
        cells = "  ".join(f"{d:>+12.4e} ({se:8.2e})" for d, se in r["models"].values())
        print(f"{r['eta']:>8g} {r['sgd'][0]:>12.6f} {r['sgd'][1]:>9.2e}  {cells}")
    print(f"wall time (all eta, all models): {wall:.2f} s")


if __name__ == "__main__":
    main()
