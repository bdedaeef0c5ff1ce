"""Quiet by default: exactly the third-party messages listed in dim/monitor/warnings_filter.py go;
the same words from another module, other warnings and our own stay."""

from __future__ import annotations

import logging
import warnings

from dim.monitor.warnings_filter import quiet_third_party

LEAF = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`"
SUMMARY = "Precision bf16-mixed is not supported by the model summary.  Estimated model size"
PIN = "'pin_memory' argument is set as true but no accelerator is found, then ..."


def _shown(message: str, category: type[Warning], module: str) -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn_explicit(message, category, "x.py", 1, module=module)
    return bool(caught)


def test_the_listed_library_warnings_go_and_others_stay():
    assert not _shown(LEAF, FutureWarning, "pytorch_lightning.utilities._pytree")
    assert not _shown(PIN, UserWarning, "torch.utils.data.dataloader")
    model_summary = "pytorch_lightning.utilities.model_summary.model_summary"
    assert not _shown(SUMMARY, UserWarning, model_summary)
    assert _shown(SUMMARY, UserWarning, "dim.training")
    assert _shown(LEAF, FutureWarning, "dim.methods.base")  # the same words from our code
    assert _shown(PIN, UserWarning, "somewhere.else")
    assert _shown("The 'train_dataloader' does not have many workers", UserWarning, "lightning")
    assert _shown("3 unreadable images skipped", UserWarning, "dim.data.folders")


def test_the_litlogger_tip_goes_and_lightnings_other_info_stays(caplog):
    quiet_third_party()
    log = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger="pytorch_lightning.utilities.rank_zero"):
        log.info("💡 Tip: For seamless cloud logging and experiment tracking, try litlogger")
        log.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]
