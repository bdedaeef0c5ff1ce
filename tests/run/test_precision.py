"""trainer.precision=auto: bf16 where the CPU computes it natively, float32 where it does not."""

import pytest

from dim.run import precision
from dim.run.precision import cpuinfo_field, resolve_precision

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse2 avx512f avx512_bf16

processor\t: 1
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse2 avx512f avx512_bf16
"""


def test_cpuinfo_fields_are_read_from_the_first_processor(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    assert cpuinfo_field("model name", info) == "AMD EPYC 9654 96-Core Processor"
    assert cpuinfo_field("flags", info).split() == ["fpu", "sse2", "avx512f", "avx512_bf16"]
    assert cpuinfo_field("bogomips", info) is None
    assert cpuinfo_field("flags", tmp_path / "absent") is None  # not Linux: no file


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_on_cpu_is_bf16_only_where_native(monkeypatch, capsys, native, expected):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", on_cpu=True) == expected
    assert capsys.readouterr().err == ""


def test_explicit_bf16_without_native_support_is_kept_with_one_note(monkeypatch, capsys):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("bf16-mixed", on_cpu=True) == "bf16-mixed"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no native bf16" in err[0] and "precision=auto" in err[0]
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("bf16-mixed", on_cpu=True) == "bf16-mixed"
    assert resolve_precision("32-true", on_cpu=True) == "32-true"
    assert capsys.readouterr().err == ""
