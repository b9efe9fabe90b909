"""Every analysis from Python prints what the command line prints with --json, byte for
byte, on the bundled examples with the same settings and seeds.

The command line is the release binary the Rust tests built (`target/release/hasme`),
or the one HASME_CLI names. Runs are small (hundreds of paths): equality holds for any
number of paths, the same seed giving the same numbers on any number of threads.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
import pytest

import hasme

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(os.environ.get("HASME_CLI", ROOT / "target" / "release" / "hasme"))


@pytest.fixture(autouse=True)
def at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """File names print as given: both sides read `examples/…` from the root."""
    monkeypatch.chdir(ROOT)


def cli(*args: str, ok: bool = True) -> str:
    """The command's standard output (`ok`: it must exit 0; else 1, a failed run)."""
    assert CLI.is_file(), f"{CLI}: build the command line first (cargo build --release)"
    done = subprocess.run(
        [str(CLI), *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == (0 if ok else 1), done.stderr
    return done.stdout


EXAMPLES = sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "examples").glob("*.hasme")
)


@pytest.mark.parametrize("file", EXAMPLES)
def test_check_and_derive_on_every_example(file: str) -> None:
    problem = hasme.Problem.from_file(file, init_seed=3)
    assert problem.check().json() == cli("check", file, "--init-seed", "3", "--json")
    assert problem.derive().json() == cli("derive", file, "--init-seed", "3", "--json")


@pytest.mark.parametrize("file", EXAMPLES)
def test_derive_models_on_every_example(file: str) -> None:
    problem = hasme.Problem.from_file(file)
    try:
        result = problem.derive(eta=0.05, series=2)
        ok = True
    except hasme.RunError as err:
        # A model outside its domain: the command exits 1 and prints the rest.
        assert isinstance(err.result, hasme.DeriveResult)
        result, ok = err.result, False
    expected = cli("derive", file, "--eta", "0.05", "--series", "2", "--json", ok=ok)
    assert result.json() == expected


def test_derive_at_a_point_with_params() -> None:
    problem = hasme.Problem.from_file("examples/saddle.hasme", params={"lambda": 4.0})
    result = problem.derive(at={"x": 0.1, "y": -0.25}, eta=0.1, models=["sme1", "hasme"])
    expected = cli(
        "derive", "examples/saddle.hasme", "--set", "lambda=4", "--at", "x=0.1,y=-0.25",
        "--eta", "0.1", "--model", "sme1,hasme", "--json",
    )  # fmt: skip
    assert result.json() == expected
    assert result.text() == cli(
        "derive", "examples/saddle.hasme", "--set", "lambda=4", "--at", "x=0.1,y=-0.25",
        "--eta", "0.1", "--model", "sme1,hasme",
    )  # fmt: skip


def test_derive_matrix_free() -> None:
    """`linear_algebra` and `krylov_tol` are derive's --linear-algebra and --krylov-tol."""
    problem = hasme.Problem.from_file("examples/network.hasme")
    result = problem.derive(eta=0.05, linear_algebra="krylov", krylov_tol=1e-9)
    expected = cli(
        "derive", "examples/network.hasme", "--eta", "0.05", "--linear-algebra", "krylov",
        "--krylov-tol", "1e-9", "--json",
    )  # fmt: skip
    assert result.json() == expected
    with pytest.raises(hasme.InputError, match="hasme-exact"):
        problem.derive(eta=0.05, models=["hasme-exact"], linear_algebra="krylov")
    with pytest.raises(hasme.InputError, match="linear_algebra"):
        problem.derive(eta=0.05, linear_algebra="sparse")


def test_moments() -> None:
    problem = hasme.Problem.from_file("examples/quadratic.hasme")
    result = hasme.moments(problem, eta=0.1, steps=50)
    assert result.json() == cli(
        "moments", "examples/quadratic.hasme", "--eta", "0.1", "--steps", "50", "--json"
    )
    result = hasme.moments(problem, eta=0.05, steps=40, every=4, models=["sme1", "hasme"])
    assert result.json() == cli(
        "moments", "examples/quadratic.hasme", "--eta", "0.05", "--steps", "40",
        "--every", "4", "--models", "sme1,hasme", "--json",
    )  # fmt: skip


def test_simulate() -> None:
    problem = hasme.Problem.from_file("examples/saddle.hasme")
    result = hasme.simulate(
        problem, eta=0.1, horizon=1.0, paths=600, models=["sme1", "hasme"], seed=5, every=2
    )
    assert result.json() == cli(
        "simulate", "examples/saddle.hasme", "--eta", "0.1", "--horizon", "1",
        "--paths", "600", "--models", "sme1,hasme", "--seed", "5", "--every", "2", "--json",
    )  # fmt: skip


def test_simulate_finite_sum() -> None:
    problem = hasme.Problem.from_file("examples/linreg.hasme")
    result = hasme.simulate(problem, eta=0.05, horizon=0.5, paths=300, models="sme1")
    assert result.json() == cli(
        "simulate", "examples/linreg.hasme", "--eta", "0.05", "--horizon", "0.5",
        "--paths", "300", "--models", "sme1", "--json",
    )  # fmt: skip


def test_matrix_free_runs() -> None:
    problem = hasme.Problem.from_file("examples/finite_sum.hasme")
    result = hasme.simulate(
        problem, eta=0.2, horizon=0.4, paths=300, models=["sme2", "hasme"],
        sgd_noise="gaussian", linear_algebra="krylov", krylov_tol=1e-9,
    )  # fmt: skip
    assert result.json() == cli(
        "simulate", "examples/finite_sum.hasme", "--eta", "0.2", "--horizon", "0.4",
        "--paths", "300", "--models", "sme2,hasme", "--sgd-noise", "gaussian",
        "--linear-algebra", "krylov", "--krylov-tol", "1e-9", "--json",
    )  # fmt: skip
    assert result.to_dict()["lanczos_steps"]["evaluations"] > 0
    weak = hasme.weak_order(
        problem, etas=[0.2, 0.1], horizon=0.4, paths=200, models=["sme2", "hasme"],
        sgd_noise="gaussian", linear_algebra="krylov",
    )  # fmt: skip
    assert weak.json() == cli(
        "weak-order", "examples/finite_sum.hasme", "--etas", "0.2,0.1", "--horizon", "0.4",
        "--paths", "200", "--models", "sme2,hasme", "--sgd-noise", "gaussian",
        "--linear-algebra", "krylov", "--json",
    )  # fmt: skip
    escape = hasme.escape(
        hasme.Problem.from_file("examples/saddle.hasme"), eta=0.1, radius=0.5, paths=50,
        max_steps=200, models=["sme2", "hasme"], linear_algebra="krylov",
    )  # fmt: skip
    assert escape.json() == cli(
        "escape", "examples/saddle.hasme", "--eta", "0.1", "--radius", "0.5", "--paths",
        "50", "--max-steps", "200", "--models", "sme2,hasme", "--linear-algebra", "krylov",
        "--json",
    )  # fmt: skip
    with pytest.raises(hasme.InputError, match="eigenbasis"):
        hasme.simulate(problem, eta=0.2, horizon=0.4, models="hasme-exact", linear_algebra="krylov")
    with pytest.raises(hasme.InputError, match="sgd_noise"):
        hasme.simulate(problem, eta=0.2, horizon=0.4, sgd_noise="uniform")


def test_weak_order() -> None:
    problem = hasme.Problem.from_file("examples/cosine.hasme")
    result = hasme.weak_order(problem, etas=[0.2, 0.1], horizon=1.0, paths=800, seed=2)
    assert result.json() == cli(
        "weak-order", "examples/cosine.hasme", "--etas", "0.2,0.1", "--horizon", "1",
        "--paths", "800", "--seed", "2", "--json",
    )  # fmt: skip


def test_weak_order_halving_grid_and_sweep() -> None:
    problem = hasme.Problem.from_file("examples/saddle.hasme")
    result = hasme.weak_order(
        problem, eta_max=0.2, levels=2, horizon=0.4, paths=300, models=["sme1"],
        observables=["y2"], no_integration_check=True, sweep="lambda=1,3",
    )  # fmt: skip
    assert result.json() == cli(
        "weak-order", "examples/saddle.hasme", "--eta-max", "0.2", "--levels", "2",
        "--horizon", "0.4", "--paths", "300", "--models", "sme1", "--observables", "y2",
        "--no-integration-check", "--sweep", "lambda=1,3", "--json",
    )  # fmt: skip


def test_weak_order_quadrature() -> None:
    problem = hasme.Problem.from_file("examples/cosine.hasme")
    result = hasme.weak_order(
        problem, etas=[0.2, 0.1], horizon=0.4, method="quadrature", models=["sme1"]
    )
    assert result.json() == cli(
        "weak-order", "examples/cosine.hasme", "--etas", "0.2,0.1", "--horizon", "0.4",
        "--method", "quadrature", "--models", "sme1", "--json",
    )  # fmt: skip


def test_escape() -> None:
    problem = hasme.Problem.from_file("examples/saddle.hasme")
    result = hasme.escape(
        problem, eta=0.1, radius=0.5, centre={"x": 0.0}, paths=300, max_steps=3000
    )
    assert result.json() == cli(
        "escape", "examples/saddle.hasme", "--eta", "0.1", "--radius", "0.5",
        "--centre", "x=0", "--paths", "300", "--max-steps", "3000", "--json",
    )  # fmt: skip
    result = hasme.escape(problem, eta=0.1, when="y^2 - 0.09", paths=200, models="sme2")
    assert result.json() == cli(
        "escape", "examples/saddle.hasme", "--eta", "0.1", "--when", "y^2 - 0.09",
        "--paths", "200", "--models", "sme2", "--json",
    )  # fmt: skip


def test_stationary_and_a_start_file(tmp_path: Path) -> None:
    problem = hasme.Problem.from_file("examples/network.hasme")
    point = hasme.stationary(problem)
    assert point.json() == cli("stationary", "examples/network.hasme", "--json")
    start = tmp_path / "start.json"
    start.write_text(point.json())
    at_point = hasme.Problem.from_file("examples/network.hasme", start=start)
    assert at_point.derive().json() == cli(
        "derive", "examples/network.hasme", "--start", str(start), "--json"
    )
    # Not converged: the command exits 1 and prints the last point.
    with pytest.raises(hasme.RunError) as caught:
        hasme.stationary(problem, method="gd", max_iter=50, tol=1e-3)
    assert isinstance(caught.value.result, hasme.StationaryResult)
    assert caught.value.result.json() == cli(
        "stationary", "examples/network.hasme", "--method", "gd", "--max-iter", "50",
        "--tol", "1e-3", "--json", ok=False,
    )  # fmt: skip


def test_report(tmp_path: Path) -> None:
    problem = hasme.Problem.from_file("examples/report.hasme")
    mine, theirs = tmp_path / "py", tmp_path / "cli"
    result = hasme.report(problem, out=mine, quick=True, seed=1)
    printed = cli("report", "examples/report.hasme", "--out", str(theirs), "--quick",
                  "--seed", "1", "--quiet")  # fmt: skip
    assert result.summary == printed.replace(str(theirs), str(mine))
    assert result.page == str(mine / "report.html")
    for name, part in result.parts.items():
        assert part.json() == (theirs / name).read_text(), name
        assert part.json() == (mine / name).read_text(), name
    assert set(result.parts) == {p.name for p in theirs.glob("*.json")}


def test_figures_are_the_commands(tmp_path: Path) -> None:
    problem = hasme.Problem.from_file("examples/quadratic.hasme")
    svg = tmp_path / "w2.svg"
    cli("moments", "examples/quadratic.hasme", "--eta", "0.1", "--steps", "30",
        "--plot", str(svg))  # fmt: skip
    assert hasme.moments(problem, eta=0.1, steps=30).svg() == svg.read_text()

