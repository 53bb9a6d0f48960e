"""Compiled CPU kernels: the C sources in `worldzoo/kernels/`, built at first use with the
system C compiler (`$CC`, else `cc`, `gcc` or `clang`; `-O3 -march=native`) and kept in
`$XDG_CACHE_HOME/worldzoo/native/` (default `~/.cache`) under a name that hashes the source,
the compiler and the CPU (model and flags), so an edit, another compiler or another machine
builds afresh and nothing stale is loaded. Products inside a kernel go to the MKL that
PyTorch exports (`sgemm_`, the one `torch.mm` uses, with torch's thread setting, and its
packed GEMM for weights multiplied at every step).

`WORLDZOO_NATIVE` says whether to use them:
- `auto` (default): where they build and MKL is there; otherwise the PyTorch path, with one
  log line saying why (no compiler, no MKL, the compiler's error);
- `off`: never (the PyTorch path everywhere);
- `on`: always; a build that fails raises with the compiler's message.

A kernel computes what the PyTorch path it replaces computes, in float32, in another order
(not the same bits; tests/test_native.py compares the two)."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch

from worldzoo.perf import cpu_model

ENV = "WORLDZOO_NATIVE"
MODES = ("auto", "on", "off")
SOURCES = Path(__file__).parent / "kernels"
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-fPIC", "-shared")
log = logging.getLogger(__name__)


class NativeError(RuntimeError):
    """A kernel asked for with WORLDZOO_NATIVE=on could not be built or loaded."""


def mode() -> str:
    """WORLDZOO_NATIVE, checked."""
    value = (os.environ.get(ENV) or "auto").lower()
    if value not in MODES:
        raise ValueError(f"{ENV}={value!r} is not one of {', '.join(MODES)}")
    return value


def compiler() -> str | None:
    """The C compiler a build would use, or None."""
    if os.environ.get("CC"):
        return shutil.which(os.environ["CC"])
    return next(filter(None, map(shutil.which, ("cc", "gcc", "clang"))), None)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "worldzoo" / "native"


def _cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> str:
    try:
        with open(cpuinfo) as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def mkl_address(symbol: str) -> int | None:
    """The address of one of MKL's functions inside PyTorch (`sgemm_`, `cblas_sgemm_pack`,
    ...), or None (no MKL in this build, or a platform whose libtorch does not export it)."""
    if not torch.backends.mkl.is_available():
        return None
    lib = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        fn = getattr(ctypes.CDLL(str(lib)), symbol)
    except (OSError, AttributeError):
        return None
    return ctypes.cast(fn, ctypes.c_void_p).value


def build(name: str) -> Path:
    """Compile `kernels/<name>.c` into the cache (or find it there); returns the library."""
    cc = compiler()
    if cc is None:
        raise NativeError("no C compiler found (set CC, or install gcc or clang)")
    source = SOURCES / f"{name}.c"
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\n".join([
        source.read_text(), cc, version, " ".join(FLAGS), cpu_model(), _cpu_flags(),
        platform.machine()]).encode()).hexdigest()[:16]
    out = cache_dir() / f"{name}-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")  # runs building together: atomic
    proc = subprocess.run([cc, *FLAGS, "-o", str(tmp), str(source), "-lm"],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise NativeError(f"building {source} with {cc} failed:\n{proc.stderr.strip()}")
    os.replace(tmp, out)
    return out


_why_not: dict[str, str] = {}


@functools.cache
def load(name: str) -> ctypes.CDLL | None:
    """The kernel library `name` with MKL's sgemm handed to it, or None where WORLDZOO_NATIVE
    is off or (auto) it cannot be had; `on` raises instead."""
    want = mode()
    if want == "off":
        _why_not[name] = f"{ENV}=off"
        return None
    try:
        sgemm = mkl_address("sgemm_")
        if sgemm is None:
            raise NativeError("this PyTorch build has no MKL sgemm_ to call")
        lib = ctypes.CDLL(str(build(name)))
    except (NativeError, OSError, subprocess.SubprocessError) as e:
        if want == "on":
            raise NativeError(f"{ENV}=on, but the '{name}' kernels are not available: {e}") \
                from None
        _why_not[name] = str(e).splitlines()[0]
        log.info("worldzoo: compiled '%s' kernels not used (%s); the PyTorch path runs", name,
                 _why_not[name])
        return None
    lib.wz_sgemm = sgemm
    # MKL's packed GEMM, where it is there (the kernels fall back to plain sgemm)
    pack = [mkl_address(f"cblas_sgemm_{f}") for f in ("pack_get_size", "pack", "compute")]
    lib.wz_pack = pack if None not in pack else [None] * 3
    return lib


def available(name: str) -> bool:
    """Whether `load(name)` gives a library (building it if need be)."""
    return load(name) is not None


def describe(name: str = "observe") -> str:
    """One line for run records and benchmark tables: "c" where the kernels load, else
    "pytorch (why)"."""
    return "c" if load(name) is not None else f"pytorch ({_why_not.get(name, 'not loaded')})"
