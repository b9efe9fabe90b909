"""hasme: SGD and its stochastic modified equations (GF, SME-1, SME-2, HA-SME).

The library behind the ``hasme`` command line, from Python. A :class:`Problem` is an
objective file checked once; every analysis is a function of it, taking the command's
options as keyword arguments of the same names (hyphens as underscores) with the same
defaults, and returning a result whose :meth:`Result.json` is the text the command
prints with ``--json``, byte for byte.

>>> import hasme
>>> problem = hasme.Problem.from_source("var x = 1\\nminimize 0.5*x^2\\nnoise sd 0.5")
>>> problem.variables
['x']
>>> problem.derive(at=[2.0]).gradient
array([2.])
>>> result = hasme.simulate(problem, eta=0.1, horizon=1.0, paths=1000, models=["sme1"])
>>> result.to_dict()["times"].shape  # result.json(): what `hasme simulate … --json` prints
(11,)

Errors: bad input raises :class:`InputError` (a ``ValueError``), a failure while
running :class:`RunError` (a ``RuntimeError``). See docs/python.md.
"""

from __future__ import annotations

import json as _json
import os
import sys
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    TextIO,
    Tuple,
    Union,
)

import numpy as np
import numpy.typing as npt

from . import _hasme
from ._hasme import InputError, RunError

__all__ = [
    "InputError",
    "RunError",
    "Problem",
    "Result",
    "CheckResult",
    "DeriveResult",
    "MomentsResult",
    "SimResult",
    "WeakOrderResult",
    "EscapeResult",
    "StationaryResult",
    "ReportResult",
    "moments",
    "simulate",
    "weak_order",
    "escape",
    "stationary",
    "report",
    "DEFAULT_TOLERANCE",
]

__version__: str = _hasme.__version__

#: The default target accuracy of ``weak_order(method="quadrature")``.
DEFAULT_TOLERANCE: float = _hasme.DEFAULT_TOLERANCE

PathLike = Union[str, "os.PathLike[str]"]
#: A point: an array or sequence of every coordinate, a dict of names to values (the
#: others keep their start values), or the command line's ``"x=0.1,y=2"``.
Point = Union[npt.ArrayLike, Mapping[str, float], str]
#: ``True`` for a bar on ``sys.stderr``, or a function called with
#: ``(done, total, stage)`` as the run goes (about every 50 ms).
ProgressArg = Union[bool, Callable[[int, int, str], None]]
Array = npt.NDArray[Any]


def _arrays(value: Any) -> Any:
    """JSON values with the vectors and matrices as numpy arrays.

    A non-empty list of numbers becomes a 1-D array (int64 when every entry is an
    integer, else float64, with ``None``, JSON's null for a missing or non-finite
    number, as NaN); a list of such lists of one length and kind a 2-D array.
    """
    if isinstance(value, dict):
        return {k: _arrays(v) for k, v in value.items()}
    if not isinstance(value, list) or not value:
        return value
    if all(_number(v) or v is None for v in value) and any(_number(v) for v in value):
        if all(type(v) is int for v in value):
            return np.array(value, dtype=np.int64)
        if all(v is None or isinstance(v, float) for v in value) or all(
            v is not None for v in value
        ):
            return np.array(
                [np.nan if v is None else v for v in value], dtype=np.float64
            )
    items = [_arrays(v) for v in value]
    if all(isinstance(v, np.ndarray) and v.ndim == 1 for v in items):
        shapes = {(v.shape, v.dtype) for v in items}
        if len(shapes) == 1:
            return np.stack(items)
    return items


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Result:
    """What an analysis returned.

    ``json()`` is the command's ``--json`` output, ``text()`` what it prints without
    ``--json``, ``to_dict()`` the JSON's content with vectors and matrices as numpy
    arrays.
    """

    __slots__ = ("_output", "_dict")

    def __init__(self, output: _hasme.Output) -> None:
        self._output = output
        self._dict: Optional[Dict[str, Any]] = None

    def json(self) -> str:
        """The text the command prints with ``--json``, ending in a newline."""
        return self._output.json()

    def text(self) -> str:
        """The text the command prints without ``--json``."""
        return self._output.text()

    def to_dict(self) -> Dict[str, Any]:
        """The JSON's content, vectors and matrices as numpy arrays (a fresh copy)."""
        data: Dict[str, Any] = _arrays(_json.loads(self.json()))
        return data

    def _data(self) -> Dict[str, Any]:
        if self._dict is None:
            self._dict = self.to_dict()
        return self._dict

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class _Figure(Result):
    """A result whose command draws a figure (``--plot``)."""

    __slots__ = ()

    def svg(self) -> str:
        """The figure as SVG, the bytes ``--plot`` writes."""
        svg = self._output.svg()
        assert svg is not None, "every figure result draws a figure"
        return svg

    def plot(self, ax: Any = None) -> Any:
        """Draws the command's figure with matplotlib on ``ax`` (default: a new
        figure's axes) and returns the axes.

        Raises ImportError when matplotlib is not installed.
        """
        figure = self._output.figure()
        assert figure is not None, "every figure result draws a figure"
        return _draw(figure, ax)


def _draw(figure: Dict[str, Any], ax: Any) -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plot() draws with matplotlib: pip install matplotlib"
        ) from e
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    styles = ["o-", "s--", "^-.", "D:", "v-", "P--", "X-."]
    drawn = 0
    for s in figure["series"]:
        points = np.asarray(s["points"], dtype=np.float64).reshape(-1, 2)
        x, y = points[:, 0], points[:, 1]
        if s["kind"] == "guide":
            ax.plot(x, y, ":", color="grey", linewidth=1)
            if len(x):
                ax.annotate(s["name"], (x[0], y[0]), color="grey", fontsize=8)
            continue
        style = styles[drawn % len(styles)]
        drawn += 1
        if s["kind"] == "steps":
            (line,) = ax.step(x, y, where="post", label=s["name"])
            ax.plot(x[1:], y[1:], style[0], color=line.get_color(), markersize=3)
            continue
        bars = s["error_bars"]
        if bars:
            low = np.array([b[0] for b in bars], dtype=np.float64)
            high = np.array([b[1] for b in bars], dtype=np.float64)
            ok = np.isfinite(low) & np.isfinite(high)
            if figure["y_log"]:
                ok &= low > 0
            err = np.vstack([np.where(ok, y - low, 0.0), np.where(ok, high - y, 0.0)])
            ax.errorbar(x, y, yerr=np.abs(err), fmt=style, capsize=3, label=s["name"])
        else:
            ax.plot(x, y, style, label=s["name"])
    if figure["x_log"]:
        ax.set_xscale("log")
    if figure["y_log"]:
        ax.set_yscale("log")
    if figure["x_ticks"]:
        ax.minorticks_off()
        ax.set_xticks(figure["x_ticks"])
        ax.set_xticklabels([f"{t:g}" for t in figure["x_ticks"]])
    if figure["x_limits"]:
        ax.set_xlim(*figure["x_limits"])
    ax.set_title(figure["title"])
    ax.set_xlabel(figure["x_label"])
    ax.set_ylabel(figure["y_label"])
    if drawn:
        ax.legend(fontsize=8)
    if figure["notes"]:
        ax.annotate(
            "\n".join(figure["notes"]),
            (0, -0.16),
            xycoords="axes fraction",
            va="top",
            fontsize=7,
        )
    return ax


class CheckResult(Result):
    """``hasme check``: the problem's summary."""

    __slots__ = ()


class DeriveResult(Result):
    """``hasme derive``: f, ∇f, ∇²f, Σ and the observables at a point; with ``eta``,
    each model's drift and diffusion."""

    __slots__ = ()

    def _derivatives(self) -> Tuple[List[float], float, List[float], List[List[float]]]:
        derivatives = self._output.derivatives()
        assert derivatives is not None, "a derive result holds derivatives"
        return derivatives

    @property
    def point(self) -> Array:
        """The point, one value per variable, float64 of shape (d,)."""
        return np.array(self._derivatives()[0], dtype=np.float64)

    @property
    def value(self) -> float:
        """f at the point."""
        return self._derivatives()[1]

    @property
    def gradient(self) -> Array:
        """∇f at the point, float64 of shape (d,)."""
        return np.array(self._derivatives()[2], dtype=np.float64)

    @property
    def hessian(self) -> Array:
        """∇²f at the point, float64 of shape (d, d)."""
        return np.array(self._derivatives()[3], dtype=np.float64).reshape(
            len(self._derivatives()[0]), -1
        )


class MomentsResult(_Figure):
    """``hasme moments``: exact Gaussian moments of SGD and each model; the figure is
    the W2 distance to SGD against t."""

    __slots__ = ()


class SimResult(Result):
    """``hasme simulate``: means, standard errors and coupled differences at t = kη."""

    __slots__ = ()


class WeakOrderResult(_Figure):
    """``hasme weak-order``: weak errors over the η grid and the fitted orders; the
    figure is the errors against η on log axes with 95% bars."""

    __slots__ = ()


class EscapeResult(_Figure):
    """``hasme escape``: escape times of SGD and each model; the figure is the
    survival curves."""

    __slots__ = ()


class StationaryResult(Result):
    """``hasme stationary``: a stationary point and its kind."""

    __slots__ = ()

    @property
    def point(self) -> Array:
        """The point found (a ``start`` for another run: see :meth:`Problem.from_file`)."""
        return np.asarray(self._data()["point"], dtype=np.float64)

    @property
    def converged(self) -> bool:
        """Whether ‖∇f‖ reached the tolerance."""
        return bool(self._data()["converged"])


class _Part(Result):
    """One part of a report, as its JSON file holds it."""

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        self._text = text
        self._dict = None

    def json(self) -> str:
        return self._text

    def text(self) -> str:
        return self._text


class ReportResult:
    """``hasme report``: the page and the JSON of every part, written to ``out``."""

    def __init__(
        self, summary: str, files: List[str], parts: List[Tuple[str, str]]
    ) -> None:
        #: What the command prints: the weak-order slopes and the page's path.
        self.summary = summary
        #: The files written, the page first.
        self.files = files
        #: The page, ``out/report.html``.
        self.page = files[0]
        #: Every part by file name (``"weak_order.json"`` …); each part's ``json()``
        #: is the file's text.
        self.parts: Dict[str, Result] = {name: _Part(text) for name, text in parts}

    def to_dict(self) -> Dict[str, Any]:
        """Every part's content by file name."""
        return {name: part.to_dict() for name, part in self.parts.items()}

    def __str__(self) -> str:
        return self.summary


class _Bar:
    """A progress bar on a text stream, redrawn in place."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._line = ""
        self._stage: Optional[str] = None

    def __call__(self, done: int, total: int, stage: str) -> None:
        if self._stage is not None and stage != self._stage and self._line:
            self._stream.write("\n")
            self._line = ""
        self._stage = stage
        if total > 0:
            filled = min(30, 30 * done // total)
            line = f"\r{stage}: [{'=' * filled}{' ' * (30 - filled)}] {done}/{total} paths"
        else:
            line = f"\r{stage}"
        if line != self._line:
            self._stream.write(line)
            self._stream.flush()
            self._line = line

    def close(self) -> None:
        if self._line:
            self._stream.write("\n")
            self._stream.flush()


def _input_error(message: str) -> InputError:
    """An InputError raised here, not about a place in a file."""
    err = InputError(message)
    err.path = err.line = err.column = None
    return err


def _counts(**counts: Optional[int]) -> None:
    """Checks the whole-number settings (paths, steps, seeds …): an int ≥ 0 or None."""
    for name, value in counts.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise _input_error(f"{name} must be a whole number ≥ 0, got {value!r}")


def _progress(progress: ProgressArg) -> Tuple[Optional[Callable[[int, int, str], None]], Optional[_Bar]]:
    if progress is True:
        bar = _Bar(sys.stderr)
        return bar, bar
    if progress is False or progress is None:
        return None, None
    if callable(progress):
        return progress, None
    raise _input_error(f"progress: expected True, False or a function, got {progress!r}")


def _run(progress: ProgressArg, call: Callable[[Optional[Callable[[int, int, str], None]]], Any]) -> Any:
    callback, bar = _progress(progress)
    try:
        return call(callback)
    except OverflowError as e:
        # A count past 2⁶⁴ (the negative ones are caught by _counts).
        raise _input_error(str(e)) from None
    finally:
        if bar is not None:
            bar.close()


def _failed(result: Result, failures: Sequence[str]) -> None:
    """Raises RunError for the models that failed, with the rest of the report."""
    if failures:
        err = RunError("\n".join(failures))
        err.path = err.line = err.column = None
        err.result = result
        raise err


def _names(value: Optional[Union[str, Sequence[str]]], what: str) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    names = list(value)
    if not all(isinstance(n, str) for n in names):
        raise _input_error(f"{what}: expected a list of names, got {value!r}")
    return names


class Problem:
    """An objective file, parsed and checked once.

    >>> p = Problem.from_source("param a = 2\\nvar x = 1, y = 0\\nminimize 0.5*a*x^2 + 0.5*y^2")
    >>> p.variables, p.dimension
    (['x', 'y'], 2)
    >>> p.start
    array([1., 0.])
    >>> Problem.from_source("param a = 2\\nvar x = 1\\nminimize 0.5*a*x^2", params={"a": 4}).derive().hessian
    array([[4.]])
    """

    def __init__(self, inner: _hasme.Problem) -> None:
        self._inner = inner

    @staticmethod
    def from_file(
        path: PathLike,
        params: Optional[Mapping[str, float]] = None,
        init_seed: int = 0,
        start: Optional[PathLike] = None,
    ) -> "Problem":
        """Reads and checks an objective file (``.hasme``).

        ``params`` overrides params by name (``--set NAME=VALUE``), ``init_seed``
        seeds the random start values (``--init-seed``), ``start`` is a JSON file
        holding the start point (``--start``, as ``derive --json`` and
        ``stationary --json`` write it). Raises InputError on a file that cannot be
        read or is not valid, with the diagnostic's ``path``, ``line`` and ``column``.
        """
        _counts(init_seed=init_seed)
        return Problem(_hasme.Problem.from_file(path, params, init_seed, start))

    @staticmethod
    def from_source(
        text: str,
        params: Optional[Mapping[str, float]] = None,
        init_seed: int = 0,
        name: str = "<string>",
        start: Optional[PathLike] = None,
    ) -> "Problem":
        """Checks an objective given as text; ``name`` stands for the file's name in
        diagnostics and reports. The rest as :meth:`from_file`."""
        _counts(init_seed=init_seed)
        return Problem(_hasme.Problem.from_source(text, name, params, init_seed, start))

    @property
    def variables(self) -> List[str]:
        """The coordinates' names, in order (``w[1]``, ``W[1,1]`` … for arrays)."""
        return self._inner.variables

    @property
    def start(self) -> Array:
        """The start point, float64 of shape (dimension,)."""
        return np.array(self._inner.start, dtype=np.float64)

    @property
    def dimension(self) -> int:
        """The number of coordinates."""
        return self._inner.dimension

    @property
    def observables(self) -> List[str]:
        """The observables' names."""
        return self._inner.observables

    @property
    def params(self) -> Dict[str, float]:
        """The scalar params with their values (overrides applied)."""
        return dict(self._inner.params)

    @property
    def file(self) -> str:
        """The file's name as given (``name`` for :meth:`from_source`)."""
        return self._inner.file

    def point(self, at: Point) -> Array:
        """The coordinates of a point given as an array, a dict of names to values
        (the others keep their start values) or ``"x=0.1,y=2"``."""
        return np.array(self._inner.point_of(at, "at"), dtype=np.float64)

    def check(self) -> CheckResult:
        """``hasme check``: the summary of the problem."""
        return CheckResult(self._inner.check())

    def derive(
        self,
        at: Optional[Point] = None,
        eta: Optional[float] = None,
        models: Optional[Union[str, Sequence[str]]] = None,
        series: Optional[int] = None,
        psd: str = "error",
        linear_algebra: Optional[str] = None,
        krylov_tol: Optional[float] = None,
    ) -> DeriveResult:
        """``hasme derive``: f, ∇f, ∇²f, Σ and the observables at ``at`` (default:
        the start point); with ``eta``, the drift and diffusion of each of ``models``
        (default: all) and the first ``series`` terms of the series. ``psd``:
        ``"error"`` or ``"clip"`` for a Σ or Γ that is not positive semidefinite.
        ``linear_algebra``: ``"dense"`` or ``"krylov"`` (default: by size, as the
        command chooses); ``krylov_tol``: the Lanczos tolerance (default 1e-10).

        A model outside its domain (e.g. ``hasme`` with ηλ_max ≥ 1) raises RunError,
        whose ``result`` holds the report of the others.

        >>> p = Problem.from_source("var x = 1, y = 0\\nminimize x^2 + x*y\\nnoise sd 0.1")
        >>> r = p.derive(at={"y": 2.0})
        >>> r.point, r.gradient
        (array([1., 2.]), array([4., 1.]))
        """
        # The common case, a point and nothing else, is kept short: this call is made
        # in loops.
        if type(at) is np.ndarray:
            at = _point_arg(at)
        if series is not None:
            _counts(series=series)
        output, failures = self._inner.derive(
            at,
            eta,
            [] if models is None else _names(models, "models"),
            series,
            psd,
            linear_algebra,
            krylov_tol,
        )
        result = DeriveResult(output)
        if failures:
            _failed(result, failures)
        return result

    def __repr__(self) -> str:
        return repr(self._inner)


def _point_arg(at: Point) -> Any:
    if isinstance(at, np.ndarray):
        if at.ndim != 1:
            raise _input_error(f"at: expected a 1-D array, got shape {at.shape}")
        return at.tolist()
    return at


def moments(
    problem: Problem,
    *,
    eta: float,
    steps: int,
    every: Optional[int] = None,
    models: Optional[Union[str, Sequence[str]]] = None,
) -> MomentsResult:
    """``hasme moments``: the exact Gaussian moments of SGD and each model on a
    quadratic with constant noise, over ``steps`` SGD steps of size ``eta``, reported
    every ``every`` steps (default ⌈steps/200⌉).

    A model that fails raises RunError, whose ``result`` holds the rest.

    >>> p = Problem.from_source("var x = 1\\nminimize 0.5*x^2\\nnoise sd 0.5")
    >>> moments(p, eta=0.1, steps=10, models=["sme1"]).to_dict()["times"].tolist()[-1]
    1.0
    """
    _counts(steps=steps, every=every)
    output, failures = _run(
        False,
        lambda _: _hasme.moments(
            problem._inner, eta=eta, steps=steps, every=every, models=_names(models, "models")
        ),
    )
    result = MomentsResult(output)
    _failed(result, failures)
    return result


def simulate(
    problem: Problem,
    *,
    eta: float,
    horizon: float,
    paths: int = 10_000,
    models: Optional[Union[str, Sequence[str]]] = None,
    substeps: int = 8,
    scheme: str = "talay-tubaro",
    coupling: Optional[str] = None,
    every: int = 1,
    seed: int = 0,
    threads: Optional[int] = None,
    sgd_noise: str = "minibatch",
    linear_algebra: Optional[str] = None,
    krylov_tol: Optional[float] = None,
    progress: ProgressArg = False,
) -> SimResult:
    """``hasme simulate``: SGD and each model (default: all) simulated side by side
    over ``paths`` coupled paths up to ``horizon``; means and standard errors at
    t = kη. ``threads`` (default: every core) does not change the numbers.
    ``sgd_noise="gaussian"``: a finite sum's SGD with Gaussian noise of the minibatch
    covariance, coupled to the models. ``linear_algebra``: ``"dense"`` or
    ``"krylov"`` (matrix-free coefficients; default by size), ``krylov_tol`` its
    Lanczos tolerance.

    >>> p = Problem.from_source("var x = 1\\nminimize 0.5*x^2\\nnoise sd 0.5")
    >>> simulate(p, eta=0.1, horizon=1.0, paths=500, models=["sme1"]).to_dict()["models"]
    ['sme1']
    """
    _counts(paths=paths, substeps=substeps, every=every, seed=seed, threads=threads)
    return SimResult(
        _run(
            progress,
            lambda cb: _hasme.simulate(
                problem._inner,
                eta=eta,
                horizon=horizon,
                paths=paths,
                models=_names(models, "models"),
                substeps=substeps,
                scheme=scheme,
                coupling=coupling,
                every=every,
                seed=seed,
                threads=threads,
                sgd_noise=sgd_noise,
                linear_algebra=linear_algebra,
                krylov_tol=krylov_tol,
                progress=cb,
            ),
        )
    )


def weak_order(
    problem: Problem,
    *,
    horizon: float,
    etas: Optional[Sequence[float]] = None,
    paths: int = 10_000,
    models: Optional[Union[str, Sequence[str]]] = None,
    observables: Optional[Union[str, Sequence[str]]] = None,
    substeps: int = 8,
    scheme: str = "talay-tubaro",
    no_integration_check: bool = False,
    sgd_paths: Optional[int] = None,
    sweep: Optional[str] = None,
    method: str = "monte-carlo",
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
    threads: Optional[int] = None,
    eta_max: Optional[float] = None,
    levels: Optional[int] = None,
    sgd_noise: str = "minibatch",
    linear_algebra: Optional[str] = None,
    krylov_tol: Optional[float] = None,
    progress: ProgressArg = False,
) -> WeakOrderResult:
    """``hasme weak-order``: the weak error |E φ(x_N) − E φ(X_T)| of each model
    (default: sme1, sme2, hasme, hasme-exact) over the step sizes ``etas`` (or a
    halving grid: ``eta_max`` with ``levels``) at ``horizon``, with 95% intervals and
    the fitted order in η; ``sweep="NAME=v1,v2"`` reruns it with a param varied,
    ``method="quadrature"`` computes it without Monte Carlo (d ≤ 2).
    ``sgd_noise="gaussian"`` measures a finite sum's error against SGD with Gaussian
    noise of the minibatch covariance (coupled, no SGD-only runs);
    ``linear_algebra``/``krylov_tol`` as for :func:`simulate`.

    >>> p = Problem.from_file("examples/cosine.hasme")  # doctest: +SKIP
    >>> r = weak_order(p, etas=[0.2, 0.1, 0.05], horizon=1.0, paths=4000)  # doctest: +SKIP
    >>> r.plot()  # doctest: +SKIP
    """
    _counts(
        paths=paths, substeps=substeps, sgd_paths=sgd_paths, seed=seed, threads=threads, levels=levels
    )
    return WeakOrderResult(
        _run(
            progress,
            lambda cb: _hasme.weak_order(
                problem._inner,
                etas=[] if etas is None else [float(e) for e in etas],
                eta_max=eta_max,
                levels=levels,
                horizon=horizon,
                paths=paths,
                models=None if models is None else _names(models, "models"),
                observables=_names(observables, "observables"),
                substeps=substeps,
                scheme=scheme,
                no_integration_check=no_integration_check,
                sgd_paths=sgd_paths,
                sweep=sweep,
                method=method,
                tolerance=tolerance,
                seed=seed,
                threads=threads,
                sgd_noise=sgd_noise,
                linear_algebra=linear_algebra,
                krylov_tol=krylov_tol,
                progress=cb,
            ),
        )
    )


def escape(
    problem: Problem,
    *,
    eta: float,
    radius: Optional[float] = None,
    centre: Optional[Point] = None,
    when: Optional[str] = None,
    max_steps: int = 100_000,
    paths: int = 1000,
    models: Optional[Union[str, Sequence[str]]] = None,
    substeps: int = 32,
    coupling: Optional[str] = None,
    seed: int = 0,
    threads: Optional[int] = None,
    linear_algebra: Optional[str] = None,
    krylov_tol: Optional[float] = None,
    progress: ProgressArg = False,
) -> EscapeResult:
    """``hasme escape``: escape times of SGD and each model (default: all) from a ball
    of ``radius`` around ``centre`` (default: the start point), or from where
    ``when > 0``, or from the file's ``escape when`` region; censored at
    ``max_steps`` SGD steps. ``linear_algebra``/``krylov_tol`` as for
    :func:`simulate`.

    >>> p = Problem.from_file("examples/saddle.hasme")  # doctest: +SKIP
    >>> escape(p, eta=0.1, radius=0.5, paths=500).plot()  # doctest: +SKIP
    """
    _counts(max_steps=max_steps, paths=paths, substeps=substeps, seed=seed, threads=threads)
    return EscapeResult(
        _run(
            progress,
            lambda cb: _hasme.escape(
                problem._inner,
                eta=eta,
                radius=radius,
                centre=None if centre is None else _point_arg(centre),
                when=when,
                max_steps=max_steps,
                paths=paths,
                models=_names(models, "models"),
                substeps=substeps,
                coupling=coupling,
                seed=seed,
                threads=threads,
                linear_algebra=linear_algebra,
                krylov_tol=krylov_tol,
                progress=cb,
            ),
        )
    )


def stationary(
    problem: Problem,
    *,
    method: str = "newton",
    tol: Optional[float] = None,
    max_iter: Optional[int] = None,
) -> StationaryResult:
    """``hasme stationary``: a stationary point from the start, by Newton's method
    on ∇f = 0 (``"newton"``: any kind) or gradient descent (``"gd"``: a minimum);
    its f, ‖∇f‖, Hessian eigenvalues, index and kind. A search that does not
    converge raises RunError, whose ``result`` holds the last point.

    >>> p = Problem.from_source("var x = 1, y = 1\\nminimize x^2 - y^2 + y^4")
    >>> stationary(p).point
    array([0.        , 0.70710678])
    """
    _counts(max_iter=max_iter)
    output, failure = _run(
        False,
        lambda _: _hasme.stationary(problem._inner, method=method, tol=tol, max_iter=max_iter),
    )
    result = StationaryResult(output)
    if failure is not None:
        _failed(result, [failure])
    return result


def report(
    problem: Problem,
    *,
    out: PathLike = "hasme-report",
    eta: Optional[float] = None,
    quick: bool = False,
    seed: int = 0,
    threads: Optional[int] = None,
    progress: ProgressArg = False,
) -> ReportResult:
    """``hasme report``: runs what fits the problem (check, derive, moments, weak
    order, escape) and writes ``out/report.html`` with the JSON of every part."""
    _counts(seed=seed, threads=threads)
    summary, files, parts = _run(
        progress,
        lambda cb: _hasme.report(
            problem._inner,
            out=out,
            eta=eta,
            quick=quick,
            seed=seed,
            threads=threads,
            progress=cb,
        ),
    )
    return ReportResult(summary, files, parts)
