"""Fast paths for restricted layers and how one is chosen.

Paths (``module.kernel`` forces one; ``"auto"`` chooses per call):

``reference``  gather full torch.nn weights once per call, run torch's fused
               recurrent kernel (oneDNN on CPU, cuDNN on CUDA). Always valid.
``shared-row`` LSTM and GRU on CPU with a uniform sharing rate per layer:
               computes only the ``s + n(d - s)`` distinct rows per input (see
               :mod:`rrnn.kernels.lstm`, :mod:`rrnn.kernels.gru`), with a
               hand-written backward and a fused C step per time step.
``stream``     one time step without autograd (inference, the deployment
               case): weights cached between calls, one small GEMM per input
               and layer; packed rows for LSTM/GRU with a uniform rate, full
               rows and torch's cell functions otherwise (any device).

``auto`` takes ``reference`` under torch.compile, torch.export, torch.jit.trace
and the TorchScript ONNX exporter (tracing cannot follow the C kernels), ``stream`` for a single step without autograd (not
for a GRU without shared rows, where it measured no faster), ``shared-row``
for LSTM/GRU sequences on CPU whose every layer shares at least the measured
``SHARED_ROW_MIN_RATE``, else ``reference``. An RNN has one gate, so sharing
removes no rows of work there; it takes ``reference`` for sequences.

What the paths read of a layer (``rrnn.modules.RestrictedRNNBase``), and nothing
else (no underscore attribute; ``tests/test_layout.py`` checks):

=============================  ====================================================
``cell``                       ``"rnn"``, ``"gru"`` or ``"lstm"``
``num_layers``, ``hidden_size``, ``input_size``, ``batch_first``, ``num_directions``,
``bias``, ``dropout``, ``training``, ``nonlinearity``: torch.nn's meanings
``restrictions``               one :class:`rrnn.restriction.Restriction` per layer
``uniform_shares``             shared rows per layer, or None (a per-gate rate table)
``compact_weights(l, d)``      the compact parameters of layer ``l``, direction ``d``
``layer_weights(l, d)``        torch.nn's four full matrices, gathered
``parameters(recurse=False)``  every compact parameter (for cache keys, autograd)
``stream_cache``               the :class:`StreamCache` the stream path keeps
``reference_forward(...)``     the reference path (what the tuner times against)
``kernel``                     the path pinned on the layer (``"auto"``: none)
=============================  ====================================================
"""

from __future__ import annotations

import os
import threading

import torch
import torch.nn.functional as F
from torch import Tensor

from . import gru as _gru
from . import lstm as _lstm
from . import native, ops, tuning

KERNELS = ("auto", "reference", "shared-row", "stream")

# Lowest sharing rate at which "auto" takes the shared-row kernel, measured with
# benchmarks/bench_layers.py on a 2-core CPU (B=80, T=35, H=200, L=3; see
# docs/benchmarks.md). LSTM with autograd: 1.02x torch.nn at r = 0.1, 1.15x at
# 0.2; without (inference over a sequence): 0.99x at 0.3, 1.14x at 0.4. The GRU
# kernel beats torch.nn at every rate (r = 0: 1.14x training, 1.03x inference).
# A training call of one time step is different again: torch's oneDNN LSTM has a
# large fixed cost per call (B=1, T=1, r=0: the shared-row LSTM is 1.47x, at B=4
# 1.27x), while at r = 0 the shared-row GRU loses to torch's GRU (0.57x; r = 0.5: 1.54x).
SHARED_ROW_MIN_RATE = {
    "lstm": {"train": 0.15, "inference": 0.35, "train-one-step": 0.0},
    "gru": {"train": 0.0, "inference": 0.0, "train-one-step": 0.05},
}


def uniform_shares(module) -> list[int] | None:
    """Shared rows per layer if every (input, gate) of every layer shares
    equally (so x and h read the same rows), else None."""
    shares = []
    for res in module.restrictions:
        values = {v for row in res.shares for v in row}
        if len(values) != 1:
            return None
        shares.append(values.pop())
    return shares


def supports_shared_row(module, data: Tensor, batch_sizes) -> str | None:
    """None if the shared-row path can run this call, else the reason it cannot."""
    if module.cell not in SHARED_ROW_MIN_RATE:
        return (
            "an RNN has one gate: sharing removes no rows of work, so it has no shared-row kernel"
        )
    if batch_sizes is not None:
        return "packed sequences use the reference path"
    if data.device.type != "cpu":
        return "on CUDA the reference path runs cuDNN"
    if data.dtype not in (torch.float32, torch.float64):
        return f"dtype {data.dtype} is not supported by the shared-row kernel"
    if module.uniform_shares is None:
        return "per-gate sharing-rate tables use the reference path"
    return None


def functorch_active() -> bool:
    """True inside torch.func.grad / vmap / jacrev ... (they cannot see through
    the C kernels, so those calls take the reference path; the fused loss too)."""
    try:
        return torch._C._functorch.peek_interpreter_stack() is not None
    except AttributeError:  # an older torch without functorch
        return False


def _runners(module, x, h) -> dict:
    """What the tuner times (on its own copy of the layer): both paths of one call."""
    return {
        "reference": lambda: module.reference_forward(x, None, h),
        "shared-row": lambda: shared_row_forward(module, x, h),
    }


def _tracing() -> bool:
    """True under torch.jit.trace (and so the TorchScript ONNX exporter) and under
    torch.export: they record operators, not what the C kernels do (torch.compile is
    checked before this, by ``torch.compiler.is_compiling``)."""
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)
    return torch.jit.is_tracing() or exporting()


def _needs_grad(module, data: Tensor, hx) -> bool:
    if not torch.is_grad_enabled():
        return False
    if data.requires_grad or any(p.requires_grad for p in module.parameters(recurse=False)):
        return True
    states = hx if isinstance(hx, tuple) else (hx,)
    return any(h is not None and h.requires_grad for h in states)


# Outside module.frozen() the stream path packs its weights afresh on every call;
# the largest batch for which ``auto`` then streams a one-step call, by cell (a cell
# not listed is not streamed there). Measured (stream against reference, one
# thread, 3 x 200, r = 0.5 and 0.9; docs/kernels.md): the LSTM's stream step wins
# to batch 16 and loses at 32 (0.80x at r = 0.5), the GRU's wins to 32, and the
# plain RNN's loses at every batch (0.84-0.93x). Inside frozen() the packed weights
# are kept and streaming won for every cell at every batch measured (1 to 32).
STREAM_MAX_BATCH = {"lstm": 16, "gru": 32}


def _stream_pays(module, data: Tensor) -> bool:
    """Whether streaming this one-step call is measured faster than the other paths."""
    if module.stream_cache.frozen:
        return True
    limit = STREAM_MAX_BATCH.get(module.cell)
    if limit is None:
        return False
    batch = data.size(0 if module.batch_first else 1) if data.dim() == 3 else 1
    return batch <= limit


def _gru_without_shared_rows(module, data: Tensor) -> bool:
    """A GRU on CPU whose every layer has 0 shared rows: packing saves no work, and
    its streaming step (one operator call per layer) measured 0.92x to 0.98x the
    reference path inside ``frozen()``; so ``auto`` keeps torch's GRU there."""
    shares = module.uniform_shares
    return (
        module.cell == "gru" and data.device.type == "cpu" and shares is not None
        and max(shares, default=0) == 0
    )  # fmt: skip


def choose(module, data: Tensor, batch_sizes, steps: int, hx=None) -> str:
    """The path this call takes (see the module docstring)."""
    return explain(module, data, batch_sizes, steps, hx)[0]


def _pinned(module) -> str:
    forced = module.kernel
    if forced == "auto":
        forced = os.environ.get("RRNN_KERNEL", "auto") or "auto"
        if forced not in KERNELS:
            raise ValueError(
                f"RRNN_KERNEL={forced!r} is not a path; use one of {', '.join(KERNELS)}"
            )
    return forced


def explain(module, data: Tensor, batch_sizes, steps: int, hx=None) -> tuple[str, str]:
    """(path, why) for this call."""
    forced = _pinned(module)
    pin = "" if module.kernel != "auto" else " (RRNN_KERNEL)"
    if forced == "reference":
        return "reference", f"pinned{pin or ' (module.kernel)'}"
    if forced == "auto" and torch.compiler.is_compiling():
        # torch.compile / torch.export trace the reference path (the fast paths
        # call C kernels on raw data pointers, which tracing cannot follow)
        return "reference", "torch.compile / torch.export trace torch's own operators"
    if forced == "auto" and _tracing():
        # torch.jit.trace and the TorchScript ONNX exporter record torch's operators;
        # the C paths and the stream cache's stored weights would become constants
        return "reference", "torch.jit.trace / torch.onnx.export record torch's own operators"
    if forced == "auto" and functorch_active():
        return "reference", "torch.func transforms trace torch's own operators"
    if forced == "auto" and torch.is_autocast_enabled(data.device.type):
        # under autocast torch picks each operation's dtype; the reference path
        # runs torch's own kernels, which follow those rules
        return "reference", "under autocast torch's own kernels choose the dtypes"
    needs_grad = _needs_grad(module, data, hx)
    # the streaming step has no dropout: in training mode with dropout it never runs
    drops = module.training and module.dropout > 0 and module.num_layers > 1
    if forced == "auto" and steps == 1 and _gru_without_shared_rows(module, data):
        return "reference", (
            "a GRU without shared rows streams no faster than torch's own GRU "
            "(0.92x to 0.98x measured, docs/benchmarks.md)"
        )
    streams = forced == "auto" and steps == 1 and batch_sizes is None and _stream_pays(module, data)
    if forced == "stream" or streams:
        if not needs_grad and not drops and steps == 1 and batch_sizes is None:
            return "stream", (
                "pinned" if forced == "stream" else "one time step without autograd or dropout"
            )
        if forced == "stream":
            raise ValueError(
                "kernel='stream' cannot run this call: it needs one time step of a plain "
                "tensor, no autograd (torch.no_grad() or requires_grad=False) and no "
                "dropout (eval mode, or dropout=0)"
            )
    why_not = supports_shared_row(module, data, batch_sizes)
    if forced == "shared-row":
        if why_not is not None:
            raise ValueError(f"kernel='shared-row' cannot run this call: {why_not}")
        return "shared-row", f"pinned{pin or ' (module.kernel)'}"
    if why_not is not None:
        return "reference", why_not
    if tuning.enabled() and not tuning.measuring():
        return tuning.decide(module, data, hx, steps, needs_grad, _runners)
    rate = min(module.uniform_shares) / module.hidden_size
    limits = SHARED_ROW_MIN_RATE[module.cell]
    if not needs_grad:
        kind = "inference"
    else:
        kind = "train-one-step" if steps == 1 else "train"
    limit = limits[kind]
    path = "shared-row" if rate >= limit else "reference"
    return path, (
        f"RRNN_DISPATCH=static: sharing rate {rate:.3g} {'>=' if rate >= limit else '<'} "
        f"the fixed threshold {limit} for {module.cell} {kind}"
    )


# ---------------------------------------------------------------------------
def packed(module, layer: int, direction: int):
    """Differentiable ``(P_x, P_h, b_x, b_h)`` of one layer and direction: rows
    ``[shared; private of gate 0..n-1]`` (uniform sharing rate)."""
    res = module.restrictions[layer]
    p = module.compact_weights(layer, direction)
    shared = p["weight_shared"]  # (s, max(k_x, d))
    px = torch.cat([shared[:, : res.input_size], p["weight_ih_private"]])  # (m, k_x)
    ph = torch.cat([shared[:, : res.hidden_size], p["weight_hh_private"]])  # (m, d)
    if p["bias_shared"] is None:
        return px, ph, None, None
    bx = torch.cat([p["bias_shared"], p["bias_ih_private"]])  # (m,)
    bh = torch.cat([p["bias_shared"], p["bias_hh_private"]])  # (m,)
    return px, ph, bx, bh


def shared_row_forward(module, data: Tensor, hx):
    """Whole stack on the shared-row kernels. ``data`` is (T, B, k) or
    (B, T, k) with ``batch_first``; ``hx`` is h0, or (h0, c0) for the LSTM,
    each (L*D, B, d). Returns ``(output, h_n)`` or ``(output, (h_n, c_n))``."""
    lstm = module.cell == "lstm"
    x = data.transpose(0, 1) if module.batch_first else data  # (T, B, k)
    h0, c0 = hx if lstm else (hx, None)
    dirs = module.num_directions
    h_n, c_n = [], []
    for layer, s in enumerate(module.uniform_shares):
        outs = []
        for direction in range(dirs):
            px, ph, bx, bh = packed(module, layer, direction)
            idx = layer * dirs + direction
            inp = x if direction == 0 else x.flip(0)
            if lstm:
                out, h, c = _lstm.SharedRowLSTMFunction.apply(
                    inp, h0[idx], c0[idx], px, ph, bx, bh, s
                )
                c_n.append(c)
            else:
                out, h = _gru.SharedRowGRUFunction.apply(inp, h0[idx], px, ph, bx, bh, s)
            outs.append(out if direction == 0 else out.flip(0))
            h_n.append(h)
        x = outs[0] if dirs == 1 else torch.cat(outs, 2)  # (T, B, D*d)
        if module.dropout and module.training and layer < module.num_layers - 1:
            x = F.dropout(x, module.dropout, training=True)
    output = x.transpose(0, 1) if module.batch_first else x
    return output, ((torch.stack(h_n), torch.stack(c_n)) if lstm else torch.stack(h_n))


# ---------------------------------------------------------------------------
class StreamCache:
    """Inference weights per layer and direction, rebuilt when any parameter
    changes (its version counter or storage), plus reusable scratch buffers.

    Packed LSTM: ``([P_x | P_h], b_x + b_h)``; packed GRU: ``(P_x, P_h, b_x, b_h)``;
    otherwise the full torch.nn weights ``(W_ih, W_hh, b_ih, b_hh)``."""

    def __init__(self) -> None:
        self.key = None
        self.weights: list[tuple] = []
        self.scratch: dict = {}
        self.lock = threading.Lock()  # one streaming step at a time: scratch is shared
        self.frozen = 0  # depth of module.frozen() blocks: keep the packed weights

    # a copy of the module (deepcopy, pickle, torch.save) starts with an empty cache
    # of its own: the weights, pointers and scratch here belong to this module
    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def __deepcopy__(self, memo) -> StreamCache:
        return StreamCache()

    def get(self, module, packed_rows: bool) -> list[tuple]:
        # Outside module.frozen() the weights are packed afresh on every call: an
        # update through p.data, a fused optimizer or a parametrization changes no
        # version counter, so no cache key could see it. Inside frozen() they are
        # kept while the identity, storage and version of every parameter stay.
        key = [packed_rows] + [
            (id(p), p.data_ptr(), p._version) for p in module.parameters(recurse=False)
        ]
        if key != self.key:  # parameters replaced, moved or updated: new scratch too
            self.scratch = {}
        if key != self.key or not self.frozen:
            with torch.no_grad():
                self.weights = []
                for layer in range(module.num_layers):
                    for direction in range(module.num_directions):
                        if not packed_rows:
                            self.weights.append(
                                tuple(
                                    None if t is None else t.detach().contiguous()
                                    for t in module.layer_weights(layer, direction)
                                )
                            )
                            continue
                        px, ph, bx, bh = packed(module, layer, direction)
                        if module.cell == "lstm":
                            bias = None if bx is None else bx + bh
                            self.weights.append((torch.cat([px, ph], 1).contiguous(), bias))
                        else:
                            self.weights.append((px.contiguous(), ph.contiguous(), bx, bh))
            self.key = key
        return self.weights

    def buffers(self, mode: str, batch: int, like: Tensor, s: int, d: int) -> tuple[Tensor, ...]:
        """Scratch for one packed step, reused across calls."""
        key = (mode, batch, like.dtype, s, d)
        if key not in self.scratch:
            q = d - s
            if mode == "lstm":  # sig, tanh(S), tanh(P_g), tanh(c)
                shapes = [(batch, s + 4 * q), (batch, s), (batch, q), (batch, d)]
            else:  # r, z, n, g_n
                shapes = [(batch, d), (batch, q), (batch, d), (batch, d)]
            self.scratch[key] = tuple(like.new_empty(shape) for shape in shapes)
        return self.scratch[key]


_CELLS = {
    "RNN_TANH": torch._VF.rnn_tanh_cell,
    "RNN_RELU": torch._VF.rnn_relu_cell,
    "GRU": torch._VF.gru_cell,
}


def stream_forward(module, data: Tensor, hx):
    """One time step of the whole stack, no autograd: ``data`` (1, B, k) or (B, 1, k)."""
    with torch.no_grad(), module.stream_cache.lock:
        output, hidden = _stream_step(module, data, hx)
    # outputs never alias the returned state (torch.nn returns separate tensors)
    return output.clone(), hidden


def _stream_step(module, data: Tensor, hx):
    """The step itself (under the cache's lock): ``data`` (1, B, k) or (B, 1, k)."""
    x = data[:, 0] if module.batch_first else data[0]  # (B, k)
    batch, d = x.shape[0], module.hidden_size
    lstm = module.cell == "lstm"
    packed_rows = (
        module.cell in SHARED_ROW_MIN_RATE
        and module.uniform_shares is not None
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
    )
    cache = module.stream_cache
    weights = cache.get(module, packed_rows)
    dirs = module.num_directions
    h_n = x.new_empty(module.num_layers * dirs, batch, d)  # (L*D, B, d)
    c_n = torch.empty_like(h_n) if lstm else None
    if packed_rows and lstm and dirs == 1 and native.library() is not None:
        _lstm_stack_step(module, cache, x, hx, h_n, c_n)  # one C call for all layers
        last = h_n[-1]  # (B, d)
        return (last.unsqueeze(1) if module.batch_first else last.unsqueeze(0)), (h_n, c_n)
    h0 = (hx[0] if lstm else hx).unbind(0)  # views, (B, d) each
    c0 = hx[1].unbind(0) if lstm else None
    h_out = h_n.unbind(0)
    c_out = c_n.unbind(0) if lstm else None
    for layer in range(module.num_layers):
        s = module.uniform_shares[layer] if packed_rows else 0
        scratch = cache.buffers(module.cell, batch, x, s, d) if packed_rows else None
        for direction in range(dirs):
            idx = layer * dirs + direction
            w = weights[idx]
            if packed_rows and lstm:
                _lstm.lstm_step(x, h0[idx], c0[idx], w[0], w[1], s, h_out[idx], c_out[idx], scratch)
            elif packed_rows:
                _gru.gru_step(x, h0[idx], *w, s, h_out[idx], scratch)
            elif lstm:
                h, c = torch._VF.lstm_cell(x, (h0[idx], c0[idx]), *w)
                h_out[idx].copy_(h)
                c_out[idx].copy_(c)
            else:
                h_out[idx].copy_(_CELLS[module.mode](x, h0[idx], *w))
        if dirs == 1:
            x = h_out[layer]
        else:  # (B, 2d): forward and backward halves
            x = h_n[2 * layer : 2 * layer + 2].transpose(0, 1).reshape(batch, 2 * d)
    output = x.unsqueeze(1) if module.batch_first else x.unsqueeze(0)
    return output, ((h_n, c_n) if lstm else h_n)


def _lstm_stack_step(module, cache: StreamCache, x: Tensor, hx, h_n: Tensor, c_n: Tensor) -> None:
    """One call of ``rrnn::lstm_stream`` for every layer of a unidirectional packed
    LSTM; writes the contiguous h_n, c_n of shape (L, B, d)."""
    batch, d = x.shape[0], module.hidden_size
    m_max = max(s + 4 * (d - s) for s in module.uniform_shares)
    key = ("lstm-stack", batch, x.dtype)
    if key not in cache.scratch:
        cache.scratch[key] = (
            x.new_empty(batch, m_max),
            x.new_empty(batch, m_max),
            x.new_empty(batch, d),
            x.new_empty(batch, d),
            x.new_empty(batch, d),
        )
    z, sig, ts, tg, tc = cache.scratch[key]
    ops.lstm_stream(
        x.contiguous(), hx[0].contiguous(), hx[1].contiguous(),
        [w for w, _ in cache.weights], [b for _, b in cache.weights],
        list(module.uniform_shares), h_n, c_n, z, sig, ts, tg, tc,
    )  # fmt: skip
