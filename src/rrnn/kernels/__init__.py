"""Fast paths for restricted layers and how one is chosen.

Paths (``module.kernel`` forces one; ``"auto"`` chooses):

``reference``  gather full torch.nn weights once per call, run torch's fused
               recurrent kernel (oneDNN on CPU, cuDNN on CUDA). Always valid.
``shared-row`` LSTM on CPU with a uniform sharing rate per layer: computes only
               the ``s + 4(d - s)`` distinct rows per input (see
               :mod:`rrnn.kernels.lstm`), with a hand-written backward.
``stream``     one time step, no gradient (inference, the deployment case):
               packed weights cached between calls, one GEMM per layer.

``auto`` takes ``stream`` for a single step without autograd, ``shared-row``
for LSTM sequences on CPU whose every layer shares at least
``SHARED_ROW_MIN_RATE`` (measured, see docs/benchmarks.md), else ``reference``.
GRU and RNN always take ``reference``: an RNN has one gate, so sharing removes
no rows of work; a GRU's shared-row path is not written yet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .lstm import SharedRowLSTMFunction, _kernels, lstm_step

KERNELS = ("auto", "reference", "shared-row", "stream")
# Lowest sharing rate at which "auto" takes the shared-row kernel, measured on a
# 2-core CPU (docs/benchmarks.md): with autograd it is 1.02x torch.nn at r = 0.1
# and 1.15x at 0.2; without (inference over a sequence) 0.99x at 0.3, 1.14x at 0.4.
SHARED_ROW_MIN_RATE = {"train": 0.15, "inference": 0.35}


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
    if module._mode != "lstm":
        return f"no shared-row kernel for {module._mode.upper()} (LSTM only)"
    if batch_sizes is not None:
        return "packed sequences use the reference path"
    if data.device.type != "cpu":
        return "on CUDA the reference path runs cuDNN"
    if data.dtype not in (torch.float32, torch.float64):
        return f"dtype {data.dtype} is not supported by the shared-row kernel"
    if module._uniform_shares is None:
        return "per-gate sharing-rate tables use the reference path"
    return None


def _needs_grad(module, data: Tensor, hx) -> bool:
    if not torch.is_grad_enabled():
        return False
    if data.requires_grad or any(p.requires_grad for p in module._parameters.values()):
        return True
    states = hx if isinstance(hx, tuple) else (hx,)
    return any(h is not None and h.requires_grad for h in states)


def choose(module, data: Tensor, batch_sizes, steps: int, hx=None) -> str:
    """The path this call takes (see the module docstring)."""
    forced = module.kernel
    if forced == "reference":
        return "reference"
    why_not = supports_shared_row(module, data, batch_sizes)
    needs_grad = _needs_grad(module, data, hx)
    if forced == "stream" or (forced == "auto" and steps == 1 and not needs_grad):
        if why_not is None and not needs_grad and steps == 1:
            return "stream"
        if forced == "stream":
            reason = why_not or (
                "it needs one time step and no autograd (torch.no_grad() or requires_grad=False)"
            )
            raise ValueError(f"kernel='stream' cannot run this call: {reason}")
    if forced == "shared-row":
        if why_not is not None:
            raise ValueError(f"kernel='shared-row' cannot run this call: {why_not}")
        return "shared-row"
    if why_not is None:
        rate = min(module._uniform_shares) / module.hidden_size
        if rate >= SHARED_ROW_MIN_RATE["train" if needs_grad else "inference"]:
            return "shared-row"
    return "reference"


# ---------------------------------------------------------------------------
def packed(module, layer: int, sfx: str) -> tuple[Tensor, Tensor, Tensor | None]:
    """Differentiable ``(P_x, P_h, bias)`` of one layer and direction: rows
    ``[shared; private of gate 0..n-1]``; a shared bias row counts twice."""
    res = module.restrictions[layer]
    key = f"_l{layer}{sfx}"
    p = module._compact(key)
    shared = p["weight_shared"]  # (s, max(k_x, d))
    px = torch.cat([shared[:, : res.input_size], p["weight_ih_private"]])  # (m, k_x)
    ph = torch.cat([shared[:, : res.hidden_size], p["weight_hh_private"]])  # (m, d)
    bias = None
    if p["bias_shared"] is not None:
        b = p["bias_shared"]
        bias = torch.cat([2 * b, p["bias_ih_private"] + p["bias_hh_private"]])  # (m,)
    return px, ph, bias


def shared_row_forward(module, data: Tensor, hx) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Whole stack on the shared-row kernel. ``data`` is (T, B, k) or
    (B, T, k) with ``batch_first``; ``hx`` = (h0, c0), each (L*D, B, d)."""
    x = data.transpose(0, 1) if module.batch_first else data  # (T, B, k)
    h0, c0 = hx
    shares = module._uniform_shares
    dirs = module.num_directions
    h_n, c_n = [], []
    for layer in range(module.num_layers):
        outs = []
        for direction, sfx in enumerate(module._directions()):
            px, ph, bias = packed(module, layer, sfx)
            idx = layer * dirs + direction
            inp = x if direction == 0 else x.flip(0)
            out, h, c = SharedRowLSTMFunction.apply(
                inp, h0[idx], c0[idx], px, ph, bias, shares[layer]
            )
            outs.append(out if direction == 0 else out.flip(0))
            h_n.append(h)
            c_n.append(c)
        x = outs[0] if dirs == 1 else torch.cat(outs, 2)  # (T, B, D*d)
        if module.dropout and module.training and layer < module.num_layers - 1:
            x = F.dropout(x, module.dropout, training=True)
    output = x.transpose(0, 1) if module.batch_first else x
    return output, (torch.stack(h_n), torch.stack(c_n))


# ---------------------------------------------------------------------------
class StreamCache:
    """Packed ``[P_x | P_h]`` and bias per layer and direction, rebuilt when any
    parameter changes (its version counter or storage), plus scratch buffers."""

    def __init__(self) -> None:
        self.key = None
        self.weights: list[tuple[Tensor, Tensor | None]] = []
        self.scratch: dict = {}

    def get(self, module) -> list[tuple[Tensor, Tensor | None]]:
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in module._parameters.values())
        if key != self.key:
            with torch.no_grad():
                self.weights = []
                for layer in range(module.num_layers):
                    for sfx in module._directions():
                        px, ph, bias = packed(module, layer, sfx)
                        self.weights.append((torch.cat([px, ph], 1).contiguous(), bias))
            self.key = key
            self.scratch = {}
        return self.weights

    def buffers(self, batch: int, like: Tensor, s: int, d: int) -> tuple[Tensor, ...]:
        """Scratch (sig, tanh(S), tanh(P_g), tanh(c)) for one step; reused."""
        key = (batch, like.dtype, s, d)
        if key not in self.scratch:
            q = d - s
            self.scratch[key] = (
                like.new_empty(batch, s + 4 * q),
                like.new_empty(batch, s),
                like.new_empty(batch, q),
                like.new_empty(batch, d),
            )
        return self.scratch[key]


def stream_forward(module, data: Tensor, hx) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One time step of the whole stack, no autograd: ``data`` (1, B, k) or
    (B, 1, k). Per layer: one concatenation, one GEMM, one fused C step."""
    with torch.no_grad():
        x = data[:, 0] if module.batch_first else data[0]  # (B, k)
        batch = x.shape[0]
        h0, c0 = hx[0].unbind(0), hx[1].unbind(0)  # views, (B, d) each
        cache = module._stream_cache
        weights = cache.get(module)
        fused = _kernels(x)
        dirs = module.num_directions
        d = module.hidden_size
        h_n = x.new_empty(module.num_layers * dirs, batch, d)  # (L*D, B, d)
        c_n = torch.empty_like(h_n)
        h_out, c_out = h_n.unbind(0), c_n.unbind(0)
        for layer, s in enumerate(module._uniform_shares):
            scratch = cache.buffers(batch, x, s, d)
            for direction in range(dirs):
                idx = layer * dirs + direction
                p_xh, bias = weights[idx]
                lstm_step(
                    x, h0[idx], c0[idx], p_xh, bias, s, h_out[idx], c_out[idx], scratch, fused
                )
            if dirs == 1:
                x = h_out[layer]
            else:  # (B, 2d): forward and backward halves
                x = h_n[2 * layer : 2 * layer + 2].transpose(0, 1).reshape(batch, 2 * d)
        output = x.unsqueeze(1) if module.batch_first else x.unsqueeze(0)
        return output, (h_n, c_n)
