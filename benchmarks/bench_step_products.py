"""What bounds the restricted LSTM's batched forward: the GEMMs of its inference
loop, timed alone, and the alternatives to them that were tried and not kept
(docs/benchmarks.md, "What bounds the forward at r = 0.5").

    python benchmarks/bench_step_products.py                 # the paper's size, r = 0.5
    python benchmarks/bench_step_products.py --rate 0.9 --hidden 650 --layers 2 --batch 20

One layer of the folded loop (x as wide as h, s = round(r d) shared rows, q = d - s,
the loop's row stride w: docs/kernels.md) makes, over T steps of n = batch rows:
the input projection x P_xp^T (T n x d by d x 4q, one GEMM), then per step
z_S = u S^T (u = x_t + h) and z_P += h P_hp^T. Timed here, one thread, medians of
--repeats taken in turns, through the plain ``sgemm_`` the C loop calls (torch's CPU library):

1. the loop's products as it makes them (z_t a fresh slice of the T-step buffer),
   and with z kept hot in cache (what an isolated GEMM benchmark measures);
2. alternatives: the weights packed once per layer (oneMKL's ``sgemm_pack`` /
   ``sgemm_compute``; torch built with MKL only); the input projection in chunks of
   c steps (to keep z in cache); one product per step over [x_t, h] (k = 2d) in
   place of the input projection and z_P; and the loop as it was until 2026-12-07,
   P_h^T copied into rows of w values once per layer and call, then read.

Each line is ms per forward (all layers); FLOP rates in GFLOP/s.
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
_v = lambda x: ctypes.byref(ctypes.c_int64(x))  # noqa: E731
ONE, ZERO = ctypes.byref(ctypes.c_float(1)), ctypes.byref(ctypes.c_float(0))


def _torch_cpu():
    """torch's CPU library, already loaded by ``import torch``."""
    lib_dir = os.path.join(os.path.dirname(torch.__file__), "lib")
    name = next(f for f in sorted(os.listdir(lib_dir)) if f.startswith("libtorch_cpu."))
    return ctypes.CDLL(os.path.join(lib_dir, name))


def _fn(lib, name: str, *argtypes, restype=None):
    address = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
    return ctypes.CFUNCTYPE(restype, *argtypes)(address)


class Blas:
    """sgemm_ (and oneMKL's packed routines where torch has them), as cells.c calls them."""

    def __init__(self):
        lib, c, p = _torch_cpu(), ctypes.c_char_p, ctypes.c_void_p
        self.gemm = _fn(lib, "sgemm_", c, c, I64, I64, I64, F32, p, I64, p, I64, F32, p, I64)
        self.packed = hasattr(lib, "sgemm_compute") and torch.backends.mkl.is_available()
        if self.packed:
            self.size = _fn(lib, "sgemm_pack_get_size", c, I64, I64, I64, restype=ctypes.c_size_t)
            self.pack = _fn(lib, "sgemm_pack", c, c, I64, I64, I64, F32, p, I64, p)
            self.compute = _fn(lib, "sgemm_compute", c, c, I64, I64, I64, p, I64, p, I64, F32, p, I64)

    def mm(self, rows, n, k, a, lda, b, ldb, z, ldz, beta, trans=b"N"):
        """z^T (rows x n) = beta z^T + A (rows x k) b^T, column-major, as the loop's:
        A = a, or with trans b"T" the transpose of a (k x rows) column-major array,
        i.e. a (rows, k) row-major one read in place."""
        self.gemm(trans, b"N", _v(rows), _v(n), _v(k), ONE, a, _v(lda), b, _v(ldb), beta, z, _v(ldz))


def _interleaved_ms(fns: list, repeats: int) -> list[float]:
    """Median ms of each function, the functions taking turns in every repeat (so that
    a drift of the machine's speed reaches all of them alike)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [statistics.median(ts) * 1e3 for ts in times]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=0.5, help="sharing rate r (> 0: the loop folds)")
    ap.add_argument("--hidden", type=int, default=200, help="hidden (and input) size d")
    ap.add_argument("--layers", type=int, default=3, help="recurrent layers")
    ap.add_argument("--batch", type=int, default=80, help="batch size n")
    ap.add_argument("--steps", type=int, default=35, help="time steps T")
    ap.add_argument("--chunk", type=int, default=5, help="steps per chunk of the chunked input projection")
    ap.add_argument("--repeats", type=int, default=25, help="timed repeats, all rows taking turns (median)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads(N)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    blas = Blas()
    d, n, T, L = args.hidden, args.batch, args.steps, args.layers
    s = round(args.rate * d)
    q = d - s
    m, p = s + 4 * q, 4 * q
    w = -(-m // 16) * 16
    if s == 0 or q == 0:
        print("needs 0 < r < 1 (shared and private rows)", file=sys.stderr)
        return 1
    g = torch.Generator().manual_seed(0)
    pht = torch.randn(d, w, generator=g)  # [S | P_hp]^T in rows of w values: the loop's until 2026-12-07
    ph = pht[:, :m].t().contiguous()  # P_h (m, d): what the loop reads now, transposed in place
    pxt = torch.randn(d, p, generator=g)  # P_xp^T
    x = torch.randn(T * n, d, generator=g)
    h, u = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    xz, hot = torch.empty(T, n, w), torch.empty(n, w)
    both = torch.randn(2 * d, w, generator=g)  # [P_xp | P_hp]^T for the k = 2d product
    xh = torch.randn(n, 2 * d, generator=g)
    a_s, a_p = pht.data_ptr(), pht.data_ptr() + 4 * s

    def projection(chunk: int = T):
        for t0 in range(0, T, chunk):
            r0, r1 = t0 * n, min(T, t0 + chunk) * n
            torch.mm(x[r0:r1], pxt, out=xz.view(T * n, w)[r0:r1, s:m])

    def steps(fresh: bool, in_place: bool = True):
        for t in range(T):
            z = (xz[t] if fresh else hot).data_ptr()
            if in_place:  # as the loop: P_h read transposed where it lies
                blas.mm(s, n, d, ph.data_ptr(), d, u.data_ptr(), d, z, w, ZERO, b"T")
                blas.mm(p, n, d, ph.data_ptr() + 4 * s * d, d, h.data_ptr(), d, z + 4 * s, w, ONE, b"T")
            else:
                blas.mm(s, n, d, a_s, w, u.data_ptr(), d, z, w, ZERO)
                blas.mm(p, n, d, a_p, w, h.data_ptr(), d, z + 4 * s, w, ONE)

    def copied_steps():  # the loop until 2026-12-07: P_h^T copied into rows of w values, then read
        for _ in range(L):
            pht[:, :m] = ph.t()
            steps(True, in_place=False)

    def forward(fresh=True, chunk=T):
        for _ in range(L):
            projection(chunk)
            steps(fresh)

    def packed_steps():
        bufs = []
        for rows, a in ((s, a_s), (p, a_p)):
            buf = torch.empty(blas.size(b"A", _v(rows), _v(n), _v(d)) // 4 + 16)
            dest = buf.data_ptr() + (-buf.data_ptr() % 64)
            blas.pack(b"A", b"N", _v(rows), _v(n), _v(d), ONE, a, _v(w), dest)
            bufs.append((buf, dest))
        for t in range(T):
            z = xz[t].data_ptr()
            blas.compute(b"P", b"N", _v(s), _v(n), _v(d), bufs[0][1], _v(w), u.data_ptr(), _v(d), ZERO, z, _v(w))
            blas.compute(b"P", b"N", _v(p), _v(n), _v(d), bufs[1][1], _v(w), h.data_ptr(), _v(d), ONE, z + 4 * s,
                         _v(w))  # fmt: skip

    def joint_steps():  # z_P = [x_t, h] [P_xp | P_hp]^T per step, no input projection
        for t in range(T):
            z = xz[t].data_ptr()
            blas.mm(s, n, d, a_s, w, u.data_ptr(), d, z, w, ZERO)
            blas.mm(p, n, 2 * d, both.data_ptr(), w, xh.data_ptr(), 2 * d, z + 4 * s, w, ZERO)

    flop = lambda rows_per_token: 2 * rows_per_token * d * T * n * L / 1e9  # noqa: E731
    print(f"torch {torch.__version__}, {args.threads} thread(s); r = {args.rate}, d = {d}, n = {n}, "
          f"T = {T}, {L} layers: s = {s}, 4q = {p} (ms per forward)")  # fmt: skip
    rows = [
        ("input projections (x P_xp^T, one GEMM a layer)", lambda: [projection() for _ in range(L)], p),
        ("step products, z hot", lambda: [steps(False) for _ in range(L)], s + p),
        ("step products, z streamed (as in the loop)", lambda: [steps(True) for _ in range(L)], s + p),
        ("  before 2026-12-07: P_h^T copied per layer, then read", copied_steps, s + p),
        ("all the loop's products", lambda: forward(), s + 2 * p),
        (f"  alternative: input projection in chunks of {args.chunk} steps", lambda: forward(chunk=args.chunk),
         s + 2 * p),
        ("  alternative: one product over [x_t, h] per step (k = 2d)", lambda: [joint_steps() for _ in range(L)],
         s + 2 * p),
    ]  # fmt: skip
    if blas.packed:
        rows.append(("  alternative: step products, weights packed once", lambda: [packed_steps() for _ in range(L)],
                     s + p))  # fmt: skip
    for (name, _, per_token), ms in zip(rows, _interleaved_ms([fn for _, fn, _ in rows], args.repeats)):
        print(f"{name:62s} {ms:8.2f} ms  {flop(per_token) / ms * 1e3:6.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
