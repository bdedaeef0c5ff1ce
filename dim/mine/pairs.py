"""(x, y) pairs for MI estimation: loading user arrays with validation, and synthetic tasks.

Loaders return float arrays of shape ``(n, features)``, first axis = samples, and raise
:class:`dim.errors.DimError` with one actionable line for anything that would make an estimate
meaningless: a missing file or key, unpaired rows, non-finite values, too few samples, a constant
column.

Synthetic tasks with analytic MI (docs/mine.md): correlated Gaussians
``y_i = ρ x_i + sqrt(1 − ρ²) ε_i`` on each of ``dim`` coordinates, with
``I(X;Y) = −(dim/2)·log(1 − ρ²)``; the same with ``y ↦ y³`` (an invertible map of y, so the MI
is unchanged); and the staircase, whose true MI steps through levels during training.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dim.errors import DimError

MIN_SAMPLES = 100
FILE_HINT = (
    "give data.path=<file.npz> (arrays x, y), data.x_path=<x.npy> data.y_path=<y.npy>, "
    "data.path=<file.csv> data.x_cols=[...] data.y_cols=[...], or a synthetic task such as "
    "data=gaussian data.dim=20 data.mi=4"
)


@dataclass
class Pairs:
    """Paired samples: row i of ``x`` goes with row i of ``y``; ``true_mi`` in nats if known."""

    x: np.ndarray
    y: np.ndarray
    true_mi: float | None = None
    name: str = "arrays"


# ---------------------------------------------------------------- analytic Gaussian MI


def gaussian_mi(rho: float, dim: int) -> float:
    """I(X;Y) in nats of ``dim`` independent coordinate pairs with correlation ``rho``."""
    return -0.5 * dim * math.log1p(-rho * rho)


def rho_for_mi(mi: float, dim: int) -> float:
    """The per-coordinate correlation that gives ``mi`` nats over ``dim`` coordinates."""
    return math.sqrt(-math.expm1(-2.0 * mi / dim))


def _resolve_rho(dim: int, mi: float | None, rho: float | None) -> float:
    if dim < 1:
        raise DimError(f"data.dim must be >= 1, got {dim}")
    if (mi is None) == (rho is None):
        raise DimError("set exactly one of data.mi (target nats) or data.rho (correlation)")
    if rho is not None:
        if not -1.0 < rho < 1.0:
            raise DimError(f"data.rho must be strictly between -1 and 1, got {rho}")
        return float(rho)
    if mi is None or mi < 0:
        raise DimError(f"data.mi must be >= 0 nats, got {mi}")
    return rho_for_mi(mi, dim)


def sample_gaussian(
    n: int, dim: int, rho: float, rng: np.random.Generator, cubic: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` pairs of correlated standard Gaussians (optionally with ``y ↦ y³``)."""
    x = rng.standard_normal((n, dim))
    y = rho * x + math.sqrt(1.0 - rho * rho) * rng.standard_normal((n, dim))
    return x.astype(np.float32), (y**3 if cubic else y).astype(np.float32)


def gaussian_pairs(
    n: int = 10_000,
    dim: int = 2,
    mi: float | None = None,
    rho: float | None = None,
    seed: int = 0,
    cubic: bool = False,
) -> Pairs:
    """Correlated Gaussians set by target MI (nats) or by per-coordinate correlation ``rho``.

    Args:
        n: number of pairs.
        dim: dimension of x and of y.
        mi: target I(X;Y) in nats (exclusive with ``rho``).
        rho: per-coordinate correlation in (−1, 1) (exclusive with ``mi``).
        seed: seed of the sample.
        cubic: apply ``y ↦ y³`` (MI unchanged; a harder, non-Gaussian task).
    """
    r = _resolve_rho(dim, mi, rho)
    x, y = sample_gaussian(n, dim, r, np.random.default_rng(seed), cubic)
    name = f"{'cubic' if cubic else 'gaussian'}(dim={dim}, rho={r:.4f})"
    return Pairs(x, y, gaussian_mi(r, dim), name)


class Staircase:
    """Streaming Gaussian task whose true MI steps through ``levels`` (Poole et al. 2019).

    Training step ``s`` (1-based) belongs to level ``(s − 1) // steps_per_level``; each batch is a
    fresh sample of that level.  Defaults follow the SMILE/Poole benchmark: dim 20, 2→10 nats.
    """

    def __init__(
        self,
        dim: int = 20,
        levels: Sequence[float] = (2.0, 4.0, 6.0, 8.0, 10.0),
        steps_per_level: int = 1000,
        cubic: bool = False,
    ) -> None:
        if not levels or steps_per_level < 1:
            raise DimError("the staircase needs at least one level and steps_per_level >= 1")
        self.dim, self.cubic = dim, cubic
        self.levels = [float(v) for v in levels]
        self.steps_per_level = steps_per_level
        self.rhos = [_resolve_rho(dim, v, None) for v in self.levels]

    @property
    def total_steps(self) -> int:
        """Steps needed to walk the whole staircase."""
        return self.steps_per_level * len(self.levels)

    def level(self, step: int) -> int:
        """Index of the level that training step ``step`` belongs to."""
        return min(max(step - 1, 0) // self.steps_per_level, len(self.levels) - 1)

    def true_mi(self, step: int) -> float:
        """Analytic MI (nats) at a training step."""
        return self.levels[self.level(step)]

    def sample(self, step: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` fresh pairs from the level of ``step``."""
        return sample_gaussian(n, self.dim, self.rhos[self.level(step)], rng, self.cubic)


# ---------------------------------------------------------------- loading user arrays


def _as_2d(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype == object or not (
        np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.bool_)
    ):
        raise DimError(f"{what} must hold numbers, got dtype {a.dtype}")
    if a.ndim == 0:
        raise DimError(f"{what} is a scalar; it needs one row per sample")
    a = a.reshape(len(a), -1) if a.ndim != 1 else a[:, None]
    return a.astype(np.float64)


def _existing(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not str(path):
        raise DimError(f"no {what} given")
    if p.is_dir():
        raise DimError(f"{what} {p.resolve()} is a directory; give a file in it")
    if not p.is_file():
        raise DimError(f"{what} not found: {p.resolve()}")
    return p


def load_npz(path: str | Path, x_key: str = "x", y_key: str = "y") -> tuple[np.ndarray, ...]:
    """Arrays ``x_key`` and ``y_key`` of an ``.npz`` file."""
    p = _existing(path, "data file")
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.files)
            missing = [k for k in (x_key, y_key) if k not in keys]
            if missing:
                held = ", ".join(keys) or "nothing"
                raise DimError(
                    f"{p.name} has no array '{missing[0]}' (it holds: {held}); "
                    "name the arrays with data.x_key=... data.y_key=..."
                )
            return _as_2d(z[x_key], f"array '{x_key}'"), _as_2d(z[y_key], f"array '{y_key}'")
    except (ValueError, OSError) as err:  # not an npz, or pickled objects
        raise DimError(f"cannot read {p} as .npz: {err}") from None


def load_npy(x_path: str | Path, y_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A pair of ``.npy`` files, one per variable."""
    out = []
    for path, what in ((x_path, "data.x_path"), (y_path, "data.y_path")):
        p = _existing(path, what) if path else None
        if p is None:
            raise DimError(f"{what} is not set; give both data.x_path and data.y_path")
        try:
            out.append(_as_2d(np.load(p, allow_pickle=False), p.name))
        except (ValueError, OSError) as err:
            raise DimError(f"cannot read {p} as .npy: {err}") from None
    return out[0], out[1]


def _column_index(spec: str | int, header: list[str], path: Path) -> int:
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit() and spec not in header):
        i = int(spec)
        if not 0 <= i < len(header):
            raise DimError(f"column {i} out of range: {path.name} has {len(header)} columns")
        return i
    if spec not in header:
        raise DimError(f"{path.name} has no column '{spec}' (it has: {', '.join(header)})")
    return header.index(spec)


def load_csv(
    path: str | Path, x_cols: Sequence[str | int], y_cols: Sequence[str | int], delimiter: str = ","
) -> tuple[np.ndarray, np.ndarray]:
    """Columns of a CSV file with a header row; columns named by header name or 0-based index.

    Empty cells become NaN (then handled like any non-finite value).
    """
    p = _existing(path, "data file")
    if isinstance(x_cols, str | int):
        x_cols = [x_cols]
    if isinstance(y_cols, str | int):
        y_cols = [y_cols]
    with p.open(newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = [h.strip() for h in next(reader, [])]
        rows = next((r for r in reader if any(c.strip() for c in r)), None) is not None
    if not header:
        raise DimError(f"{p} is empty")
    if not rows:
        raise DimError(f"{p} holds a header line but no rows of data")
    if not x_cols or not y_cols:
        raise DimError("a CSV needs data.x_cols=[...] and data.y_cols=[...] (names or indices)")
    xi = [_column_index(c, header, p) for c in x_cols]
    yi = [_column_index(c, header, p) for c in y_cols]
    with warnings.catch_warnings():  # "Empty input file": said below, in one line
        warnings.simplefilter("ignore", UserWarning)
        table = np.genfromtxt(p, delimiter=delimiter, skip_header=1, usecols=xi + yi, ndmin=2)
    if table.size == 0:  # a header and no rows (genfromtxt then gives an empty array)
        raise DimError(f"{p} holds a header line but no rows of data")
    text = [c for j, c in enumerate(xi + yi) if np.isnan(table[:, j]).all() and len(table)]
    if text:
        raise DimError(f"column '{header[text[0]]}' of {p.name} holds no numbers")
    return table[:, : len(xi)], table[:, len(xi) :]


def _file_format(d: Any) -> str:
    if d.format != "auto":
        if d.format not in ("npz", "npy", "csv"):
            raise DimError(f"data.format must be auto, npz, npy or csv, got '{d.format}'")
        return d.format
    if d.x_path or d.y_path:
        return "npy"
    if not d.path:
        raise DimError(f"no data given; {FILE_HINT}")
    if Path(str(d.path)).expanduser().is_dir():
        _existing(d.path, "data file")  # says it is a directory
    suffix = Path(d.path).suffix.lower()
    if suffix in (".npz", ".csv"):
        return suffix[1:]
    if suffix == ".tsv":
        return "csv"
    raise DimError(
        f"cannot tell the format of '{d.path}' from its suffix; use .npz or .csv, or set "
        "data.format=npz|csv"
    )


def _columns(spec: Any) -> list[str | int]:
    """``data.x_cols`` as a list: ``a`` and ``[a]`` alike (not the letters of ``ab``)."""
    if spec is None:
        return []
    return [spec] if isinstance(spec, str | int) else list(spec)


def load_pairs(d: Any) -> Pairs:
    """The (x, y) pairs a ``dim-mine`` ``data`` config describes (files or a synthetic task).

    ``d`` is the ``data`` node of configs/mine (attribute access: ``d.name``, ``d.path``, ...).
    """
    if d.name in ("gaussian", "cubic"):
        rho = d.rho
        return gaussian_pairs(d.n, d.dim, None if rho is not None else d.mi, rho, d.seed, d.cubic)
    fmt = _file_format(d)
    if fmt == "npz":
        if not d.path:
            raise DimError(f"data.path is not set; {FILE_HINT}")
        x, y = load_npz(d.path, d.x_key, d.y_key)
        return Pairs(x, y, None, str(d.path))
    if fmt == "npy":
        x, y = load_npy(d.x_path, d.y_path)
        return Pairs(x, y, None, f"{d.x_path}, {d.y_path}")
    if not d.path:
        raise DimError(f"data.path is not set; {FILE_HINT}")
    delimiter = "\t" if str(d.path).lower().endswith(".tsv") else d.delimiter
    x, y = load_csv(d.path, _columns(d.x_cols), _columns(d.y_cols), delimiter)
    return Pairs(x, y, None, str(d.path))


# ---------------------------------------------------------------- validation


def validate_pairs(
    x: np.ndarray,
    y: np.ndarray,
    drop_nonfinite: bool = False,
    min_samples: int = MIN_SAMPLES,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Check paired arrays; return them (float32) and the number of rows dropped.

    Raises:
        DimError: unpaired rows, non-finite values (unless ``drop_nonfinite``), fewer than
            ``min_samples`` rows, or a constant column.
    """
    x, y = _as_2d(np.asarray(x), "x"), _as_2d(np.asarray(y), "y")
    if len(x) != len(y):
        raise DimError(f"x has {len(x)} samples but y has {len(y)}; rows must be paired one to one")
    bad = ~(np.isfinite(x).all(1) & np.isfinite(y).all(1))
    dropped = int(bad.sum())
    if dropped and not drop_nonfinite:
        first = int(np.flatnonzero(bad)[0])
        raise DimError(
            f"{dropped} rows hold NaN or inf (first: row {first}); clean them or pass "
            "data.drop_nonfinite=true to drop them"
        )
    x, y = x[~bad], y[~bad]
    if len(x) < min_samples:
        extra = f" after dropping {dropped} non-finite rows" if dropped else ""
        raise DimError(
            f"only {len(x)} samples{extra}; MI estimation needs at least {min_samples} pairs"
        )
    for a, name in ((x, "x"), (y, "y")):
        const = np.flatnonzero(np.ptp(a, axis=0) == 0)
        if len(const):
            raise DimError(
                f"column {int(const[0])} of {name} is constant (all {a[0, const[0]]:g}); "
                "drop it, it carries no information"
            )
    return x.astype(np.float32), y.astype(np.float32), dropped
