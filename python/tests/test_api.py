"""The Python API: points in and derivatives out as numpy arrays, every error path,
Ctrl-C during a long run, progress, and the docstrings' examples."""

from __future__ import annotations

import _thread
import doctest
import threading
import time
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest

import hasme

ROOT = Path(__file__).resolve().parents[2]
SADDLE = str(ROOT / "examples" / "saddle.hasme")


def saddle_gradient(x: float, y: float, lam: float = 2.0, mu: float = 0.5) -> List[float]:
    """∇f of examples/saddle.hasme, f = λx²/2 − y²/2 + μ(x² + y²)²/4, by hand."""
    r2 = x * x + y * y
    return [lam * x + mu * r2 * x, -y + mu * r2 * y]


# --- numpy in and out -------------------------------------------------------------


def test_problem_properties() -> None:
    problem = hasme.Problem.from_file(SADDLE)
    assert problem.variables == ["x", "y"]
    assert problem.dimension == 2
    assert problem.observables == ["dist2", "y2"]
    assert problem.params == {"lambda": 2.0, "mu": 0.5}
    assert problem.file == SADDLE
    start = problem.start
    assert start.dtype == np.float64 and start.shape == (2,)
    assert start.tolist() == [0.01, 0.0]


def test_points_in_derivatives_out() -> None:
    problem = hasme.Problem.from_file(SADDLE)
    at = np.array([0.3, -0.2])
    result = problem.derive(at=at)
    for name, shape in [("point", (2,)), ("gradient", (2,)), ("hessian", (2, 2))]:
        value = getattr(result, name)
        assert isinstance(value, np.ndarray), name
        assert value.dtype == np.float64 and value.shape == shape, name
    assert result.point.tolist() == at.tolist()
    # 1e-15: a few roundings of terms of size ≤ 1.
    np.testing.assert_allclose(result.gradient, saddle_gradient(0.3, -0.2), rtol=0, atol=1e-15)
    np.testing.assert_array_equal(result.hessian, result.hessian.T)
    # The same point as a list, a dict (y keeps its start value 0) and a string.
    assert problem.derive(at=[0.3, -0.2]).json() == result.json()
    assert problem.derive(at={"x": 0.3, "y": -0.2}).json() == result.json()
    assert problem.derive(at="x=0.3,y=-0.2").json() == result.json()
    assert problem.derive(at={"x": 0.3}).point.tolist() == [0.3, 0.0]
    assert problem.point({"y": 2}).tolist() == [0.01, 2.0]


def test_to_dict_has_arrays() -> None:
    problem = hasme.Problem.from_file(SADDLE)
    data = problem.derive(eta=0.1, models=["sme1"]).to_dict()
    assert data["variables"] == ["x", "y"]
    assert isinstance(data["value"], float)
    assert data["hessian"].shape == (2, 2) and data["hessian"].dtype == np.float64
    assert data["noise_cov"].shape == (2, 2)
    drift = data["models"]["sme1"]["drift"]
    assert drift.shape == (2,) and drift.dtype == np.float64
    np.testing.assert_array_equal(drift, -data["gradient"])
    sim = hasme.simulate(problem, eta=0.1, horizon=0.5, paths=256, models=["sme1"]).to_dict()
    assert sim["models"] == ["sme1"]
    times = sim["times"]
    assert isinstance(times, np.ndarray) and times.shape == (6,)


def test_stationary_point_is_an_array() -> None:
    problem = hasme.Problem.from_source("var x = 1, y = 1\nminimize x^2 - y^2 + y^4")
    result = hasme.stationary(problem)
    assert result.converged
    assert result.point.dtype == np.float64
    # The saddle's y: 2y(2y² − 1) = 0 at y = 1/√2; 1e-12: Newton stops at ‖∇f‖ ≤ 1e-10.
    np.testing.assert_allclose(result.point, [0.0, 2**-0.5], atol=1e-12)


# --- errors -------------------------------------------------------------------------


def test_syntax_error_is_located() -> None:
    with pytest.raises(hasme.InputError) as caught:
        hasme.Problem.from_source("var x = 1\nminimize 2*x^^2", name="bad.hasme")
    err = caught.value
    assert isinstance(err, ValueError)
    assert (err.path, err.line) == ("bad.hasme", 2)
    assert err.column == 14
    assert str(err).startswith("bad.hasme:2:14: error:")
    assert "^" in str(err)


def test_unknown_name_is_located_with_a_suggestion() -> None:
    with pytest.raises(hasme.InputError) as caught:
        hasme.Problem.from_source("var xx = 1\nminimize x^2")
    err = caught.value
    assert (err.path, err.line, err.column) == ("<string>", 2, 10)
    assert "xx" in str(err)


def test_unreadable_file() -> None:
    with pytest.raises(hasme.InputError) as caught:
        hasme.Problem.from_file(ROOT / "examples" / "absent.hasme")
    assert "cannot read" in str(caught.value)
    assert caught.value.line is None and caught.value.path is None


def test_unknown_param() -> None:
    with pytest.raises(hasme.InputError, match="lamda"):
        hasme.Problem.from_file(SADDLE, params={"lamda": 3.0})


def test_unknown_model() -> None:
    problem = hasme.Problem.from_file(SADDLE)
    with pytest.raises(hasme.InputError, match="sme3"):
        problem.derive(eta=0.1, models=["sme3"])
    with pytest.raises(hasme.InputError, match="sme3"):
        hasme.simulate(problem, eta=0.1, horizon=1.0, models=["sme3"])


def test_wrong_point() -> None:
    problem = hasme.Problem.from_file(SADDLE)
    with pytest.raises(hasme.InputError, match=r"expected 2 coordinates \(x, y\), got 3"):
        problem.derive(at=np.array([0.1, 0.2, 0.3]))
    with pytest.raises(hasme.InputError, match="1-D"):
        problem.derive(at=np.zeros((2, 2)))
    with pytest.raises(hasme.InputError, match="z"):
        problem.derive(at={"z": 1.0})
    with pytest.raises(hasme.InputError):
        hasme.escape(problem, eta=0.1, radius=0.5, centre=[0.0])


def test_model_outside_its_domain() -> None:
    problem = hasme.Problem.from_file(SADDLE)
    # HA-SME needs ηλ_max < 1; here ηλ_max ≈ 1.2.
    with pytest.raises(hasme.RunError, match="model `hasme`") as caught:
        problem.derive(eta=0.6, models=["sme1", "hasme"])
    partial = caught.value.result
    assert isinstance(partial, hasme.DeriveResult)
    assert "sme1" in partial.to_dict()["models"]


def test_evaluation_error_is_a_run_error_located() -> None:
    problem = hasme.Problem.from_source("var x = 1\nminimize log(x)", name="log.hasme")
    with pytest.raises(hasme.RunError) as caught:
        problem.derive(at=[-1.0])
    assert (caught.value.path, caught.value.line) == ("log.hasme", 2)


def test_bad_settings() -> None:
    problem = hasme.Problem.from_file(SADDLE)
    with pytest.raises(hasme.InputError, match="η must be"):
        hasme.simulate(problem, eta=-0.1, horizon=1.0)
    with pytest.raises(hasme.InputError, match="horizon"):
        hasme.simulate(problem, eta=0.3, horizon=1.0)
    with pytest.raises(hasme.InputError, match="scheme"):
        hasme.simulate(problem, eta=0.1, horizon=1.0, scheme="rk4")
    with pytest.raises(hasme.InputError, match="paths") as caught:
        hasme.escape(problem, eta=0.1, radius=0.5, paths=-1)
    assert caught.value.line is None
    with pytest.raises(hasme.InputError, match="models"):
        hasme.simulate(problem, eta=0.1, horizon=1.0, models=[1])  # type: ignore[list-item]
    with pytest.raises(hasme.InputError, match="step sizes"):
        hasme.weak_order(problem, horizon=1.0)
    with pytest.raises(hasme.InputError, match="escape region"):
        hasme.escape(problem, eta=0.1)
    with pytest.raises(hasme.InputError, match="quadratic"):
        hasme.moments(problem, eta=0.1, steps=10)
    with pytest.raises(hasme.InputError, match="eta"):
        problem.derive(models=["sme1"])


def test_no_stationary_point_is_a_run_error() -> None:
    problem = hasme.Problem.from_file(SADDLE)
    with pytest.raises(hasme.RunError, match="no stationary point") as caught:
        hasme.stationary(problem, method="gd", max_iter=1)
    assert isinstance(caught.value.result, hasme.StationaryResult)
    assert not caught.value.result.converged


# --- interrupts and progress --------------------------------------------------------


def test_ctrl_c_stops_a_long_weak_order_within_a_second() -> None:
    problem = hasme.Problem.from_file(str(ROOT / "examples" / "cosine.hasme"))
    fired: List[float] = []

    def interrupt() -> None:
        fired.append(time.monotonic())
        _thread.interrupt_main()

    timer = threading.Timer(0.5, interrupt)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            # Minutes of work: 10⁷ paths per η.
            hasme.weak_order(problem, etas=[0.1, 0.05], horizon=10.0, paths=10_000_000)
        stopped = time.monotonic()
    finally:
        timer.cancel()
    assert fired, "the run ended before the interrupt"
    assert stopped - fired[0] < 1.0
    # Nothing is left half-done: the next run is whole.
    small = hasme.weak_order(problem, etas=[0.2, 0.1], horizon=1.0, paths=300)
    again = hasme.weak_order(problem, etas=[0.2, 0.1], horizon=1.0, paths=300)
    assert small.json() == again.json()


def test_ctrl_c_stops_a_report_within_a_second(tmp_path: Path) -> None:
    """A full report (ten seconds of simulations) stops at the next path and writes
    no page. (A path is the unit of work: a network whose single path takes seconds
    stops when its running paths end.)"""
    problem = hasme.Problem.from_file(SADDLE)
    fired: List[float] = []

    def interrupt() -> None:
        fired.append(time.monotonic())
        _thread.interrupt_main()

    timer = threading.Timer(1.0, interrupt)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            hasme.report(problem, out=tmp_path / "report", threads=2)
        stopped = time.monotonic()
    finally:
        timer.cancel()
    assert fired, "the report ended before the interrupt"
    assert stopped - fired[0] < 1.0
    assert not (tmp_path / "report" / "report.html").exists()


def test_progress_callback() -> None:
    problem = hasme.Problem.from_file(SADDLE)
    calls: List[Tuple[int, int, str]] = []
    hasme.simulate(
        problem, eta=0.1, horizon=1.0, paths=2000, progress=lambda d, t, s: calls.append((d, t, s))
    )
    assert calls and calls[-1] == (2000, 2000, "simulate")
    done = [d for d, _, _ in calls]
    assert done == sorted(done)


def test_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    problem = hasme.Problem.from_file(SADDLE)
    hasme.escape(problem, eta=0.1, radius=0.5, paths=500, max_steps=2000, progress=True)
    err = capsys.readouterr().err
    assert "escape: [" in err and "500/500 paths" in err


def test_a_failing_progress_callback_stops_the_run() -> None:
    problem = hasme.Problem.from_file(SADDLE)

    def fail(done: int, total: int, stage: str) -> None:
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        hasme.simulate(problem, eta=0.1, horizon=1.0, paths=1000, progress=fail)


def test_plot(tmp_path: Path) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    problem = hasme.Problem.from_file(str(ROOT / "examples" / "cosine.hasme"))
    result = hasme.weak_order(problem, etas=[0.2, 0.1, 0.05], horizon=1.0, paths=500)
    ax = result.plot()
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_title() == result._output.figure()["title"]  # type: ignore[index]
    ax.figure.savefig(tmp_path / "weak.png")
    saddle = hasme.Problem.from_file(SADDLE)
    survival = hasme.escape(saddle, eta=0.1, radius=0.5, paths=200, max_steps=2000)
    assert survival.plot().get_lines()


def test_docstring_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    failed, tried = doctest.testmod(hasme, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 5 and failed == 0
