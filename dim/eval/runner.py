"""``dim-eval``'s work: load the encoder and data, run the chosen protocols, write the report.

Outputs in the eval's run dir: ``eval.json`` (see :func:`dim.eval.report.to_json`), ``eval.md``
(the markdown table) and ``tensorboard/`` (the same numbers as scalars ``eval/<protocol>/<key>``,
the classifiers' curves and the table as text).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from dim.errors import DimError
from dim.eval.context import EvalContext
from dim.eval.features import TAPS, resolve_device
from dim.eval.registry import NEEDS_LABELS, PROTOCOLS, protocol, with_defaults
from dim.eval.report import ProtocolResult, log_tensorboard, markdown_table, to_json, write_json
from dim.eval.source import build_eval_splits, data_config, load_source
from dim.run.diskio import write_text
from dim.run.hparams import record_eval, training_run_of


def check_taps(taps: list[str]) -> tuple[str, ...]:
    """Validate ``features=[...]`` (a subset of conv / fc / y)."""
    bad = [t for t in taps if t not in TAPS]
    if bad or not taps:
        raise DimError(f"features must be a non-empty subset of {list(TAPS)}, got {list(taps)}")
    return tuple(t for t in TAPS if t in taps)


def evaluate(
    settings: dict[str, Any],
    protocols: dict[str, dict[str, Any]],
    out_dir: Path,
    data_group: dict[str, Any] | None = None,
    data_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the evaluation protocols on one encoder and write the report into ``out_dir``.

    Args:
        settings: ``run``, ``init``, ``seed``, ``device``, ``batch_size``, ``features``,
            ``max_train``, ``max_test``, ``num_threads`` (see ``configs/eval.yaml``).
        protocols: protocol name -> its options (missing ones: ``configs/eval/<name>.yaml``).
        out_dir: the eval's run dir.
        data_group: a ``data=<name>`` config that replaces the run's data config.
        data_overrides: ``data.key=value`` patches of the data config.

    Returns:
        The ``eval.json`` document.
    """
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        raise DimError(f"unknown eval '{unknown[0]}'; choose among {', '.join(PROTOCOLS)}")
    selected = [p for p in PROTOCOLS if p in protocols]
    if not selected:
        raise DimError(f"nothing to evaluate: choose eval= among {', '.join(PROTOCOLS)}")
    if settings.get("num_threads"):
        torch.set_num_threads(int(settings["num_threads"]))
    taps = check_taps(list(settings.get("features") or TAPS))
    seed = int(settings.get("seed", 0))
    source = load_source(settings.get("run"), str(settings.get("init", "trained")), seed)
    data = data_config(source.run_data, data_group, data_overrides)
    splits = build_eval_splits(data, source.config)
    needs = [p for p in selected if p in NEEDS_LABELS]
    if needs and not splits.num_classes:
        raise DimError(f"eval={needs[0]} needs labels but data '{data.get('name')}' has none")
    device = resolve_device(str(settings.get("device", "auto")))
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out_dir / "tensorboard"))
    ctx = EvalContext(
        source,
        splits,
        device,
        seed=seed,
        batch_size=int(settings.get("batch_size", 256)),
        taps=taps,
        max_train=settings.get("max_train"),
        max_test=settings.get("max_test"),
        writer=writer,
    )
    results: dict[str, ProtocolResult] = {}
    try:
        for name in selected:
            print(f"[dim-eval] {name} ...", flush=True)
            torch.manual_seed(seed)
            results[name] = protocol(name)(ctx, with_defaults(name, dict(protocols[name])))
            print(f"[dim-eval] {name} done in {results[name].seconds:.1f}s", flush=True)
        meta = {
            "run": str(settings.get("run")),
            "checkpoint": str(source.path),
            "init": source.init,
            "encoder": source.config,
            "data": data,
            "n_train": len(ctx.features("train")),
            "n_test": len(ctx.features("test")),
            "features": list(taps),
            "seed": seed,
            "device": str(device),
            "protocols": selected,
            "eval_dir": str(out_dir),
            "created": datetime.now().isoformat(timespec="seconds"),
        }
        doc = to_json(results, meta)
        table = markdown_table(results)
        write_json(out_dir / "eval.json", doc)
        caption = (
            f"dim-eval of `{settings.get('run')}` (init={source.init}, data={data.get('name')}, "
            f"{meta['n_train']} train / {meta['n_test']} test images)"
        )
        write_text(out_dir / "eval.md", f"{caption}\n\n{table}")
        log_tensorboard(writer, results, table)
    finally:
        writer.close()
    trained_run = (
        training_run_of(Path(str(settings.get("run")))) if source.init == "trained" else None
    )
    if trained_run is not None:  # the run's HParams entry and dim-compare show these results
        record_eval(trained_run, doc, out_dir)
    print(f"\n{caption}\n\n{table}")
    print(f"eval.json:   {out_dir / 'eval.json'}")
    print(f"markdown:    {out_dir / 'eval.md'}")
    print(f"tensorboard: tensorboard --logdir {out_dir / 'tensorboard'}", flush=True)
    if trained_run is not None:
        print(f"recorded in: {trained_run} (dim-compare, TensorBoard HParams)", flush=True)
    return doc
