"""Process-level CPU settings (worldzoo.perf)."""

from __future__ import annotations

from worldzoo.perf import cpu_bf16_native, cpu_model


def test_cpu_bf16_native_reads_the_cpu_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512bw\n")
    assert cpu_bf16_native(str(info)) is False
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_tile amx_bf16\n")
    assert cpu_bf16_native(str(info)) is True
    info.write_text("flags\t\t: avx512_bf16\n")
    assert cpu_bf16_native(str(info)) is True
    assert cpu_bf16_native(str(tmp_path / "missing")) is None


def test_cpu_model_reads_the_model_name(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\nflags\t: fpu\n")
    assert cpu_model(str(info)) == "Some CPU @ 2.0GHz"
    assert cpu_model(str(tmp_path / "missing"))  # the platform's name, never empty


def test_check_precision_names_what_would_work():
    import pytest

    from worldzoo.agent import check_precision
    from worldzoo.config import ConfigError

    check_precision("float32", "mps")
    check_precision("bfloat16", "cpu")
    with pytest.raises(ConfigError, match="runs on cpu and cuda devices, not on mps"):
        check_precision("bfloat16", "mps")
    with pytest.raises(ConfigError, match="use one of float32, bfloat16"):
        check_precision("half", "cpu")
