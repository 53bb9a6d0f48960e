"""Process-level CPU settings (worldzoo.perf)."""

from __future__ import annotations

from worldzoo.perf import cpu_bf16_native


def test_cpu_bf16_native_reads_the_cpu_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512bw\n")
    assert cpu_bf16_native(str(info)) is False
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_tile amx_bf16\n")
    assert cpu_bf16_native(str(info)) is True
    info.write_text("flags\t\t: avx512_bf16\n")
    assert cpu_bf16_native(str(info)) is True
    assert cpu_bf16_native(str(tmp_path / "missing")) is None
