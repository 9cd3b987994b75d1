"""MKL's packed GEMM against the plain one for the LSTM inference loop's per-step
products: tried, and not kept (docs/benchmarks.md, "Packed weights: tried, not kept").

    python benchmarks/bench_packed_gemm.py                  # the paper's size, r = 0.5
    python benchmarks/bench_packed_gemm.py --offset 4       # the weights 16 bytes off a 64-byte line

A forward's layers x steps calls of one weight block (the shared rows S, the
private rows P_hp, and P_h unfolded), each z^T (rows x n) += A (rows x d) h^T:
plain ``sgemm_`` against ``sgemm_pack`` once + ``sgemm_compute`` per call, the
routines of the oneMKL that torch's CPU library exports; medians of --repeats.
Needs torch built with MKL.
"""

import argparse
import ctypes
import os
import statistics
import sys
import time

import torch

I64 = ctypes.POINTER(ctypes.c_int64)
F32 = ctypes.POINTER(ctypes.c_float)


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _mkl():
    """torch's CPU library, already loaded by ``import torch``."""
    lib_dir = os.path.join(os.path.dirname(torch.__file__), "lib")
    name = next(f for f in sorted(os.listdir(lib_dir)) if f.startswith("libtorch_cpu."))
    return ctypes.CDLL(os.path.join(lib_dir, name))


def _address(lib, name: str) -> int:
    return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value


def products(rows: int, n: int, d: int, calls: int, repeats: int, offset: int) -> tuple[float, float]:
    """ms for `calls` products z^T (rows x n) += A (rows x d) h^T, plain and packed;
    A starts `offset` floats past a 64-byte boundary (torch allocates on one)."""
    lib = _mkl()
    gemm = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, I64, I64, I64, F32, ctypes.c_void_p,
                            I64, ctypes.c_void_p, I64, F32, ctypes.c_void_p, I64)(_address(lib, "sgemm_"))  # fmt: skip
    size = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_char_p, I64, I64, I64)(_address(lib, "sgemm_pack_get_size"))
    pack = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, I64, I64, I64, F32, ctypes.c_void_p,
                            I64, ctypes.c_void_p)(_address(lib, "sgemm_pack"))  # fmt: skip
    compute = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, I64, I64, I64, ctypes.c_void_p, I64,
                               ctypes.c_void_p, I64, F32, ctypes.c_void_p, I64)(_address(lib, "sgemm_compute"))  # fmt: skip
    w = -(-rows // 16) * 16  # rows of a multiple of 16 values, as the loop's P_h^T
    a = torch.randn(d * w + offset)[offset:].view(d, w)
    h, z = torch.randn(n, d), torch.zeros(n, w)
    v = lambda x: ctypes.byref(ctypes.c_int64(x))  # noqa: E731
    one = ctypes.byref(ctypes.c_float(1))
    buf = torch.empty(size(b"A", v(rows), v(n), v(d)) // 4 + 16)
    dest = buf.data_ptr() + (-buf.data_ptr() % 64)

    def plain():
        for _ in range(calls):
            gemm(b"N", b"N", v(rows), v(n), v(d), one, a.data_ptr(), v(w), h.data_ptr(), v(d), one, z.data_ptr(), v(w))

    def packed():
        pack(b"A", b"N", v(rows), v(n), v(d), one, a.data_ptr(), v(w), dest)
        for _ in range(calls):
            compute(b"P", b"N", v(rows), v(n), v(d), dest, v(w), h.data_ptr(), v(d), one, z.data_ptr(), v(w))

    return _median_ms(plain, repeats), _median_ms(packed, repeats)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=0.5, help="sharing rate r")
    ap.add_argument("--hidden", type=int, default=200, help="hidden (and input) size")
    ap.add_argument("--layers", type=int, default=3, help="recurrent layers")
    ap.add_argument("--batch", type=int, default=80, help="batch size")
    ap.add_argument("--steps", type=int, default=35, help="time steps per sequence")
    ap.add_argument("--repeats", type=int, default=15, help="timed repeats of the products")
    ap.add_argument("--offset", type=int, default=0, help="floats by which the weights miss a 64-byte line")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads(N)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not torch.backends.mkl.is_available():
        print("torch is not built with MKL here: no packed GEMM to measure", file=sys.stderr)
        return 1
    d, n, calls = args.hidden, args.batch, args.layers * args.steps
    s = round(args.rate * d)
    q = d - s
    print(f"{torch.__version__}, {args.threads} thread(s); {calls} calls, n = {n}, d = {d}, "
          f"weights {4 * args.offset} bytes off a 64-byte line (ms, plain -> packed)")
    for name, rows in (("S", s), ("P_hp", 4 * q), ("P_h unfolded", s + 4 * q)):
        if rows > 0:
            plain, packed = products(rows, n, d, calls, args.repeats, args.offset)
            print(f"  {name:13s} {rows:5d} rows: {plain:7.3f} -> {packed:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
