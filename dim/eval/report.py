"""Results of the evaluation protocols: one data model, three views (JSON, tables, TensorBoard).

Every protocol returns a :class:`ProtocolResult`: what its numbers measure (``metric``), the
settings it ran with and ``values``, a mapping ``"[variant/]feature" -> Stat``, e.g.
``"y"``, ``"5shot/y"`` (few-shot, 5 labels per class) or ``"sigmoid/y"`` (NDM on sigmoid(Y)).
``eval.json`` stores exactly that; the tables put one row per (protocol, variant) and one column
per feature tap (conv / fc / y), like the paper's tables.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dim.eval.features import TAPS
from dim.run.diskio import write_text

PERCENT = {"accuracy"}  # metrics shown in percent in the tables (stored as fractions)


@dataclass
class Stat:
    """A number with its spread: ``mean`` of ``values`` and their ``std`` (None for one value)."""

    mean: float
    std: float | None = None
    values: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        """Mean and (sample) standard deviation of several runs."""
        vals = [float(v) for v in values]
        std = statistics.stdev(vals) if len(vals) > 1 else None
        return cls(statistics.fmean(vals), std, vals)


@dataclass
class ProtocolResult:
    """The outcome of one protocol (see the module docstring for the key scheme)."""

    metric: str
    values: dict[str, Stat]
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    units: dict[str, str] = field(default_factory=dict)  # variant -> metric, where it differs

    def metric_of(self, variant: str) -> str:
        """The metric of the values of one variant (``metric`` unless ``units`` says otherwise)."""
        return self.units.get(variant, self.metric)


def split_key(key: str) -> tuple[str, str]:
    """``"5shot/y"`` -> ``("5shot", "y")``; ``"y"`` -> ``("", "y")``."""
    variant, _, feature = key.rpartition("/")
    return variant, feature


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def to_json(results: dict[str, ProtocolResult], meta: dict[str, Any]) -> dict[str, Any]:
    """The ``eval.json`` document: ``meta`` keys plus ``results``.

    ``results.<protocol>`` = ``{"metric", "settings", "seconds", "values": {key: {"mean", "std",
    "values"}}}``; non-finite numbers become null.
    """
    doc = dict(meta)
    doc["results"] = {
        name: {
            "metric": r.metric,
            **({"units": r.units} if r.units else {}),
            "settings": r.settings,
            "seconds": round(r.seconds, 2),
            "values": {k: asdict(s) for k, s in r.values.items()},
        }
        for name, r in results.items()
    }
    return _clean(doc)


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write atomically (a reader never sees half a file; a full disk is one line)."""
    write_text(path, json.dumps(doc, indent=2) + "\n")


def format_stat(stat: Stat, metric: str) -> str:
    """``97.31 ± 0.20`` (accuracies in percent) or ``0.412`` for other metrics."""
    scale, digits = (100.0, 2) if metric in PERCENT else (1.0, 3)
    if stat.mean is None or not math.isfinite(stat.mean):
        return "nan"
    text = f"{stat.mean * scale:.{digits}f}"
    if stat.std is not None and math.isfinite(stat.std):
        text += f" ± {stat.std * scale:.{digits}f}"
    return text


def _warned(result: ProtocolResult, variant: str) -> bool:
    """Whether a protocol flagged this variant's value with warnings (``settings.warnings``, or
    ``settings.estimates.<variant>.warnings`` for protocols with several estimates)."""
    per_variant = result.settings.get("estimates", {}).get(variant, {})
    return bool(result.settings.get("warnings") or per_variant.get("warnings"))


def table_rows(results: dict[str, ProtocolResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the wide table (one column per feature tap that appears)."""
    features = [
        t for t in TAPS if any(split_key(k)[1] == t for r in results.values() for k in r.values)
    ]
    extra = sorted({split_key(k)[1] for r in results.values() for k in r.values} - set(TAPS))
    columns = features + extra
    header = ["protocol", "metric", *columns]
    rows = []
    for name, r in results.items():
        variants: dict[str, dict[str, Stat]] = {}
        for key, stat in r.values.items():
            variant, feature = split_key(key)
            variants.setdefault(variant, {})[feature] = stat
        for variant, cells in variants.items():
            label = f"{name} {variant}".strip()
            if _warned(r, variant):  # the estimator's own failure signatures (dim.mine)
                label += " (untrustworthy)"
            metric = r.metric_of(variant)
            unit = f"{metric} (%)" if metric in PERCENT else metric
            rows.append(
                [label, unit]
                + [format_stat(cells[c], metric) if c in cells else "–" for c in columns]
            )
    return header, rows


def markdown_table(results: dict[str, ProtocolResult]) -> str:
    """A GitHub-flavoured markdown table, column-aligned so that it also reads in a terminal."""
    header, rows = table_rows(results)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)]) + "\n"


def log_tensorboard(writer: Any, results: dict[str, ProtocolResult], markdown: str) -> None:
    """Scalars ``eval/<protocol>/<key>`` (the mean; ``.../std`` too) and the table as text."""
    for name, r in results.items():
        for key, stat in r.values.items():
            if stat.mean is not None and math.isfinite(stat.mean):
                writer.add_scalar(f"eval/{name}/{key}", stat.mean, 0)
            if stat.std is not None and math.isfinite(stat.std):
                writer.add_scalar(f"eval/{name}/{key}/std", stat.std, 0)
    writer.add_text("eval/table", markdown, 0)
    writer.flush()
