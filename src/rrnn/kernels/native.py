"""Build and load the fused C step kernels (``cells.c``) at first use.

The C file has no dependency but libm and POSIX threads, so any C compiler builds it in well
under a second. The shared library is cached in ``$RRNN_CACHE_DIR/kernels``
(default ``~/.cache/rrnn/kernels``) under a name that hashes the source, the
compiler command and the CPU's feature flags. Without a compiler, or with
``RRNN_NATIVE=0``, :func:`library` returns None and the kernels run on torch
ops instead (same results, slower).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

SOURCE = Path(__file__).with_name("cells.c")
# No -ffast-math: it links crtfastmath, which sets flush-to-zero and
# denormals-are-zero for the whole process, and its finite-math assumption lets
# NaN vanish. cells.c declares glibc's SIMD expf/exp (libmvec) itself, so the
# loops still vectorize; without libmvec the build falls back to scalar exp.
# -pthread for the cross-entropy rows' threads where OpenMP is not used.
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-pthread", "-fPIC",
         "-shared"]  # fmt: skip
# -fopenmp only where torch runs on GNU OpenMP: the library's libgomp.so.1 then
# resolves, by its soname, to the copy torch has already loaded, and the kernels share
# torch's thread pool and thread count. Anywhere else (Intel OpenMP, no OpenMP) a
# second runtime would fight torch's threads for the cores: -fopenmp-simd keeps the
# `omp simd` reductions without any runtime, and the step kernels run on one thread.
OPENMP = ["-fopenmp"]
NO_OPENMP = ["-fopenmp-simd"]
LIBS = (["-lmvec", "-lm"], ["-DRRNN_NO_MVEC", "-lm"])  # tried in order
_UNSET = object()
_lib = _UNSET


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _cache_dir() -> Path:
    env = os.environ.get("RRNN_CACHE_DIR")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "rrnn"
    return base / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def torch_uses_gomp() -> bool:
    """Whether torch's parallel backend is OpenMP on GNU libgomp, already loaded in
    this process (Linux: read from /proc/self/maps)."""
    import torch

    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return False
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    return "libgomp" in maps and "libiomp" not in maps


def build() -> Path:
    """Compile ``cells.c`` into the cache (atomically) and return its path."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc or clang)")
    source = SOURCE.read_bytes()
    omp = OPENMP if torch_uses_gomp() and os.environ.get("RRNN_OPENMP", "1") != "0" else NO_OPENMP
    key = hashlib.sha256(
        source + " ".join([cc, *FLAGS, *omp, *LIBS[0]]).encode() + _cpu_flags().encode()
    ).hexdigest()[:16]
    target = _cache_dir() / f"cells-{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so")
    os.close(fd)
    try:
        attempts = [(o, libs) for o in dict.fromkeys([tuple(omp), tuple(NO_OPENMP)]) for libs in LIBS]
        for flags, libs in attempts:  # in order: the first that compiles is kept
            cmd = [cc, *FLAGS, *flags, str(SOURCE), "-o", tmp, *libs]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if done.returncode == 0:
                break
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


# The argument types of each C function (see cells.c): the step kernels take three
# sizes (long), then pointers; the cross-entropy rows take sizes, pointers and a scale.
_L, _P = ctypes.c_long, ctypes.c_void_p
_SIGNATURES = {
    "lstm_fwd": [_L] * 3 + [_P] * 8,
    "lstm_bwd": [_L] * 3 + [_P] * 9,
    "lstm_bwd_out": [_L] * 3 + [_P] * 10,
    "gru_fwd": [_L] * 3 + [_P] * 8,
    "gru_bwd": [_L] * 3 + [_P] * 9,
    "gru_bwd_out": [_L] * 3 + [_P] * 10,
    "lstm_stream": [_L] * 3 + [_P] * 14,
    "xent": [_L] * 3 + [_P] * 3 + [ctypes.c_double, _P, _P],
}


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    for name, argtypes in _SIGNATURES.items():
        for suffix in ("f32", "f64"):
            fn = getattr(lib, f"rrnn_{name}_{suffix}")
            fn.argtypes = argtypes
            fn.restype = None
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None (no compiler, build failed, or RRNN_NATIVE=0)."""
    global _lib
    if _lib is _UNSET:
        if os.environ.get("RRNN_NATIVE", "1") == "0":
            _lib = None
        else:
            try:
                _lib = _bind(ctypes.CDLL(str(build())))
            except Exception as err:  # any failure: fall back to torch ops
                warnings.warn(
                    f"rrnn: the fused C step kernel is unavailable ({err}); the shared-row "
                    "kernels run on torch ops instead (same results, slower)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                _lib = None
    return _lib


def identity() -> str:
    """What the shared-row path's speed depends on here: a hash of the kernels'
    sources (C and Python) and the build in use (its flags, or none). The measured
    dispatch keys its cache with it, so a changed kernel is measured afresh."""
    h = hashlib.sha256()
    for path in sorted(SOURCE.parent.glob("*.[cp]*")):
        if path.suffix in (".c", ".py"):
            h.update(path.name.encode() + path.read_bytes())
    lib = library()
    h.update(b"none" if lib is None else Path(lib._name).name.encode())
    return h.hexdigest()[:12]


def kernel(name: str, dtype):
    """The C function ``rrnn_<name>_<f32|f64>`` for ``dtype``, or None where the
    library is unavailable. Called only by the operators of :mod:`.ops`, after
    their checks."""
    import torch

    lib = library()
    if lib is None or dtype not in (torch.float32, torch.float64):
        return None
    return getattr(lib, f"rrnn_{name}_{'f32' if dtype == torch.float32 else 'f64'}")


def reset() -> None:
    """Forget the loaded library (tests switch implementations with this)."""
    global _lib
    _lib = _UNSET
