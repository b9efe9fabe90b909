"""Types of the compiled module behind `hasme` (private: use the package's API)."""

from os import PathLike
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__version__: str
DEFAULT_TOLERANCE: float

Progress = Optional[Callable[[int, int, str], None]]
_Path = Union[str, "PathLike[str]"]

class InputError(ValueError):
    path: Optional[str]
    line: Optional[int]
    column: Optional[int]

class RunError(RuntimeError):
    path: Optional[str]
    line: Optional[int]
    column: Optional[int]
    result: Any

class Output:
    def json(self) -> str: ...
    def text(self) -> str: ...
    def derivatives(
        self,
    ) -> Optional[Tuple[List[float], float, List[float], List[List[float]]]]: ...
    def svg(self) -> Optional[str]: ...
    def figure(self) -> Optional[Dict[str, Any]]: ...

class Problem:
    @staticmethod
    def from_file(
        path: _Path,
        params: Optional[Mapping[str, float]],
        init_seed: int,
        start: Optional[_Path],
    ) -> Problem: ...
    @staticmethod
    def from_source(
        text: str,
        name: str,
        params: Optional[Mapping[str, float]],
        init_seed: int,
        start: Optional[_Path],
    ) -> Problem: ...
    @property
    def variables(self) -> List[str]: ...
    @property
    def start(self) -> List[float]: ...
    @property
    def dimension(self) -> int: ...
    @property
    def observables(self) -> List[str]: ...
    @property
    def params(self) -> List[Tuple[str, float]]: ...
    @property
    def file(self) -> str: ...
    def point_of(self, at: Any, what: str) -> List[float]: ...
    def check(self) -> Output: ...
    def derive(
        self,
        at: Any,
        eta: Optional[float],
        models: List[str],
        series: Optional[int],
        psd: str,
        linear_algebra: Optional[str],
        krylov_tol: Optional[float],
    ) -> Tuple[Output, List[str]]: ...

def moments(
    problem: Problem,
    *,
    eta: float,
    steps: int,
    every: Optional[int],
    models: List[str],
) -> Tuple[Output, List[str]]: ...
def simulate(
    problem: Problem,
    *,
    eta: float,
    horizon: float,
    paths: int,
    models: List[str],
    substeps: int,
    scheme: str,
    coupling: Optional[str],
    every: int,
    seed: int,
    threads: Optional[int],
    sgd_noise: str,
    linear_algebra: Optional[str],
    krylov_tol: Optional[float],
    progress: Progress,
) -> Output: ...
def weak_order(
    problem: Problem,
    *,
    etas: Sequence[float],
    eta_max: Optional[float],
    levels: Optional[int],
    horizon: float,
    paths: int,
    models: Optional[List[str]],
    observables: List[str],
    substeps: int,
    scheme: str,
    no_integration_check: bool,
    sgd_paths: Optional[int],
    sweep: Optional[str],
    method: str,
    tolerance: float,
    seed: int,
    threads: Optional[int],
    sgd_noise: str,
    linear_algebra: Optional[str],
    krylov_tol: Optional[float],
    progress: Progress,
) -> Output: ...
def escape(
    problem: Problem,
    *,
    eta: float,
    radius: Optional[float],
    centre: Any,
    when: Optional[str],
    max_steps: int,
    paths: int,
    models: List[str],
    substeps: int,
    coupling: Optional[str],
    seed: int,
    threads: Optional[int],
    linear_algebra: Optional[str],
    krylov_tol: Optional[float],
    progress: Progress,
) -> Output: ...
def stationary(
    problem: Problem,
    *,
    method: str,
    tol: Optional[float],
    max_iter: Optional[int],
) -> Tuple[Output, Optional[str]]: ...
def report(
    problem: Problem,
    *,
    out: _Path,
    eta: Optional[float],
    quick: bool,
    seed: int,
    threads: Optional[int],
    progress: Progress,
) -> Tuple[str, List[str], List[Tuple[str, str]]]: ...
