"""Process-level CPU settings that make a Dreamer update faster without changing its maths.

glibc's malloc hands every allocation above 32 MB (and, by its default dynamic threshold,
many smaller ones) to mmap and returns it to the OS on free, so each imagination step's
activations [N, units] come back as fresh pages and fault in again: on the 2-core CPU that
was ~2 million page faults and ~5 s of system time per 8 size-S updates. Keeping freed
memory in the heap (no mmap, high trim threshold) cut the faults 5x and the update time
by 4-6% (two paired runs of 8 updates, results/speed/dreamerv3_cpu.md). Intel's PyTorch CPU
guide gets the same effect by preloading jemalloc or tcmalloc; this needs no extra library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_done = False


def tune_allocator() -> bool:
    """Keep freed memory in glibc's heap (Linux only; idempotent). Returns whether it applied.
    Set WORLDZOO_MALLOC=default to leave the allocator alone."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("WORLDZOO_MALLOC") == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    ok = (mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, 1 << 30)
          and mallopt(_M_TOP_PAD, 256 << 20))
    _done = bool(ok)
    return _done


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (from /proc/cpuinfo; the platform's processor name elsewhere)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_bf16_native(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes bf16 matmuls in hardware (AMX-BF16 or AVX512-BF16; read from
    /proc/cpuinfo), None where that cannot be read. Without them bf16 is emulated: slower
    than float32."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return None
