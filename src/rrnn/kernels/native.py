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
import re
import shutil
import subprocess
import sys
import tempfile
import threading
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
# x86: let the vectorizer use 512-bit registers where the CPU has them (GCC's default
# for -march=native on AVX-512 Intel CPUs is 256): libmvec's 16-wide expf/tanhf took
# the fused step's sigmoid and tanh passes from 0.34/0.63 to 0.24/0.25 ns per value
# (docs/kernels.md). On a CPU without AVX-512 the preference does nothing.
if platform.machine().lower() in ("x86_64", "amd64"):
    FLAGS.append("-mprefer-vector-width=512")
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
    """What the build hash reads of the CPU: its flags (a -march=native build is
    only valid on CPUs with the same), else the processor's name."""
    from ..fileio import cpu_info

    info = cpu_info()
    return info.get("flags") or info.get("Features") or platform.processor()


def _cache_dir() -> Path:
    from ..fileio import cache_root

    return cache_root() / "kernels"


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
    """Compile ``cells.c`` into the cache (atomically) and return its path.

    The build attempts (OpenMP where torch uses libgomp, then without; with libm,
    then without) are tried in order; each is cached under a name hashed from the
    flags that built it, and one that failed leaves a ``.failed`` marker, so that
    the cache never names a fallback build after flags it was not built with."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc or clang)")
    source = SOURCE.read_bytes()
    omp = OPENMP if torch_uses_gomp() and os.environ.get("RRNN_OPENMP", "1") != "0" else NO_OPENMP
    attempts = [(o, libs) for o in dict.fromkeys([tuple(omp), tuple(NO_OPENMP)]) for libs in LIBS]
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags, libs in attempts:
        cmd = [cc, *FLAGS, *flags, str(SOURCE), "-o", "OUT", *libs]
        key = hashlib.sha256(source + " ".join(cmd).encode() + _cpu_flags().encode())
        target = cache / f"cells-{key.hexdigest()[:16]}.so"
        failed = target.with_suffix(".failed")
        if target.is_file():
            return target
        if failed.is_file():
            errors.append(failed.read_text())
            continue
        error = _compile(cmd, target)
        if error is None:
            return target
        errors.append(error)
        atomic_failed = failed.with_suffix(f".tmp{os.getpid()}")
        atomic_failed.write_text(error)
        os.replace(atomic_failed, failed)
    raise RuntimeError("every build of cells.c failed:\n" + "\n".join(errors)[-2000:])


def _compile(cmd: list[str], target: Path) -> str | None:
    """Run ``cmd`` (its "OUT" replaced by a temporary file), then move the result to
    ``target``; the compiler's error text if it failed."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so")
    os.close(fd)
    try:
        run = [tmp if a == "OUT" else a for a in cmd]
        done = subprocess.run(run, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            return f"{' '.join(run)} failed:\n{done.stderr[-1500:]}"
        os.replace(tmp, target)
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_L, _P = ctypes.c_int64, ctypes.c_void_p
_PROTOTYPE = re.compile(r"void rrnn_(\w+?)_##SUF\(([^)]*)\)")


def c_signatures(source: str) -> dict[str, list]:
    """The ctypes argument types of every exported kernel, read from the C
    prototypes themselves (``void rrnn_<name>_##SUF(...)`` in ``cells.c``), so that
    the C source is the one place an argument list is written: a pointer is
    ``c_void_p``, an ``int64_t`` ``c_int64`` (a C long may be 32 bits), a
    ``double`` ``c_double``; any other by-value type is refused here."""
    out = {}
    for name, params in _PROTOTYPE.findall(source):
        types = []
        for param in params.replace("\\", " ").split(","):
            words = param.split()
            if "*" in param:
                types.append(_P)
            elif words and words[0] == "int64_t":
                types.append(_L)
            elif words and words[0] == "double":
                types.append(ctypes.c_double)
            else:
                raise RuntimeError(f"cells.c: rrnn_{name} takes {param.strip()!r}, which "
                                   "native.c_signatures does not map to a ctypes type")  # fmt: skip
        out[name] = types
    return out


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    for name, argtypes in c_signatures(SOURCE.read_text()).items():
        for suffix in ("f32", "f64"):
            fn = getattr(lib, f"rrnn_{name}_{suffix}")
            fn.argtypes = argtypes
            fn.restype = None
    lib.rrnn_set_threads.argtypes, lib.rrnn_set_threads.restype = [_L], None
    lib.rrnn_max_threads.argtypes, lib.rrnn_max_threads.restype = [], _L
    return lib


_thread = threading.local()  # per thread: the OpenMP count last set from torch's


def _follow_torch_threads(lib: ctypes.CDLL) -> None:
    """OpenMP's thread count is per thread: make this thread's torch's."""
    import torch

    n = torch.get_num_threads()
    if getattr(_thread, "threads", None) != n:
        lib.rrnn_set_threads(n)
        _thread.threads = n


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
    _follow_torch_threads(lib)
    return getattr(lib, f"rrnn_{name}_{'f32' if dtype == torch.float32 else 'f64'}")


_GEMM_SYMBOLS = {"float32": "sgemm_", "float64": "dgemm_"}
_gemm: dict = {}  # dtype name -> address of the checked GEMM, or None


def _torch_library():
    """torch's own CPU library, already loaded in this process, or None."""
    import torch

    lib_dir = Path(torch.__file__).parent / "lib"
    mode = getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_LAZY", 0)
    for path in sorted(lib_dir.glob("*torch_cpu.*")):
        try:
            return ctypes.CDLL(str(path), mode=mode)
        except OSError:
            continue
    return None


def _gemm_works(address: int, dtype) -> bool:
    """One product through ``address`` exactly as cells.c calls it (int64_t sizes,
    column-major z^T += P h^T with P (m, d) row-major read transposed, z's rows
    wider than m), against torch.mm: a BLAS that reads its integers differently,
    or a symbol that is not GEMM, gives a wrong number here, not later."""
    import torch

    scalar = ctypes.c_float if dtype == torch.float32 else ctypes.c_double
    size = ctypes.POINTER(ctypes.c_int64)
    proto = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, size, size, size,
                             ctypes.POINTER(scalar), _P, size, _P, size, ctypes.POINTER(scalar),
                             _P, size)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    m, b, d, w = 7, 3, 5, 9
    ph, h = torch.randn(m, d, generator=g, dtype=dtype), torch.randn(b, d, generator=g, dtype=dtype)
    z = torch.randn(b, w, generator=g, dtype=dtype)
    want = z.clone()
    want[:, :m] += h @ ph.t()
    n = lambda v: ctypes.byref(ctypes.c_int64(v))  # noqa: E731
    one = scalar(1)
    proto(address)(b"T", b"N", n(m), n(b), n(d), ctypes.byref(one), ph.data_ptr(), n(d),
                   h.data_ptr(), n(d), ctypes.byref(one), z.data_ptr(), n(w))  # fmt: skip
    return torch.allclose(z, want, rtol=1e-5, atol=1e-5)


def blas_gemm(dtype) -> int | None:
    """The address of the Fortran-interface GEMM (``sgemm_``/``dgemm_``) that torch
    exports from the BLAS it was built with, for cells.c's inference time loop (the
    same routine torch.mm reaches, following torch's thread setting); None where
    torch exports none, where the check against torch.mm fails, or with RRNN_BLAS=0.
    The callers then run the loop from Python with torch.mm."""
    import torch

    name = {torch.float32: "float32", torch.float64: "float64"}.get(dtype)
    if name is None or os.environ.get("RRNN_BLAS", "1") == "0" or sys.byteorder != "little":
        return None
    if name not in _gemm:
        lib = _torch_library()
        fn = None if lib is None else getattr(lib, _GEMM_SYMBOLS[name], None)
        address = None if fn is None else ctypes.cast(fn, ctypes.c_void_p).value
        if address is not None and not _gemm_works(address, dtype):
            warnings.warn(
                f"rrnn: torch's {_GEMM_SYMBOLS[name]} gave a wrong product when called from C; "
                "the LSTM inference loop runs from Python instead (same results, slower)",
                RuntimeWarning,
                stacklevel=2,
            )
            address = None
        _gemm[name] = address
    return _gemm[name]


def reset() -> None:
    """Forget the loaded library (tests switch implementations with this)."""
    global _lib
    _lib = _UNSET
    _gemm.clear()
