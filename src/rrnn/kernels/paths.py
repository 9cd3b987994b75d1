"""The fast paths themselves (what :mod:`rrnn.kernels.dispatch` chooses between):
the shared-row training path over a whole stack (:func:`shared_row_forward`) and
the one-step streaming path (:func:`stream_forward`) with the packed weights it
keeps between calls (:class:`StreamCache`). They read a layer only through the
protocol in :mod:`rrnn.kernels`' docstring."""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import Tensor

from . import gru as _gru
from . import lstm as _lstm
from . import native, ops

PACKED_CELLS = ("lstm", "gru")  # the cells whose gates the kernels compute on packed rows


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


def _records_grad(*tensors) -> bool:
    """Whether autograd would record a call on these (None entries skipped)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def shared_row_forward(module, data: Tensor, hx):
    """Whole stack on the shared-row kernels. ``data`` is (T, B, k) or
    (B, T, k) with ``batch_first``; ``hx`` is h0, or (h0, c0) for the LSTM,
    each (L*D, B, d). Returns ``(output, h_n)`` or ``(output, (h_n, c_n))``."""
    lstm = module.cell == "lstm"
    x = data.transpose(0, 1) if module.batch_first else data  # (T, B, k)
    h0, c0 = hx if lstm else (hx, None)
    dirs = module.num_directions
    h_n, c_n = [], []
    # Inference (no autograd) allocates little fresh memory per call: glibc returns
    # large freed blocks to the system, and faulting them in again took about a tenth
    # of a forward (docs/kernels.md). The layers share one x P_x^T buffer, and a
    # unidirectional layer after the first writes its output over its input, a
    # tensor this call made.
    xz = None
    for layer, s in enumerate(module.uniform_shares):
        outs = []
        for direction in range(dirs):
            px, ph, bx, bh = packed(module, layer, direction)
            idx = layer * dirs + direction
            inp = x if direction == 0 else x.flip(0)
            if lstm:
                args = (inp, h0[idx], c0[idx], px, ph, bx, bh)
                if _records_grad(*args):
                    out, h, c = _lstm.SharedRowLSTMFunction.apply(*args, s)
                else:
                    if xz is None:
                        xz = inp.new_empty(_lstm.infer_buffer_size(inp.shape[0], inp.shape[1], ph.shape[0]))
                    over = inp if layer > 0 and dirs == 1 and inp.is_contiguous() else None
                    out, h, c = _lstm.lstm_infer(*args, s, out=over, xz=xz)
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
                            self.weights.append(tuple(None if t is None else t.contiguous()
                                                      for t in (px, ph, bx, bh)))  # fmt: skip
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
        module.cell in PACKED_CELLS
        and module.uniform_shares is not None
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
    )
    cache = module.stream_cache
    weights = cache.get(module, packed_rows)
    dirs = module.num_directions
    h_n = x.new_empty(module.num_layers * dirs, batch, d)  # (L*D, B, d)
    c_n = torch.empty_like(h_n) if lstm else None
    if packed_rows and dirs == 1 and native.library() is not None:  # one C call for all layers
        if lstm:
            _lstm_stack_step(module, cache, x, hx, h_n, c_n)
        else:
            _gru_stack_step(module, cache, x, hx, h_n)
        last = h_n[-1]  # (B, d)
        state = (h_n, c_n) if lstm else h_n
        return (last.unsqueeze(1) if module.batch_first else last.unsqueeze(0)), state
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


def _gru_stack_step(module, cache: StreamCache, x: Tensor, h0: Tensor, h_n: Tensor) -> None:
    """One call of ``rrnn::gru_stream`` for every layer of a unidirectional packed
    GRU; writes the contiguous h_n of shape (L, B, d)."""
    batch, d = x.shape[0], module.hidden_size
    m_max = max(s + 3 * (d - s) for s in module.uniform_shares)
    key = ("gru-stack", batch, x.dtype)
    if key not in cache.scratch:  # a, g (B, m); r, z, n, g_n (B, d)
        cache.scratch[key] = (x.new_empty(batch, m_max), x.new_empty(batch, m_max),
                              *(x.new_empty(batch, d) for _ in range(4)))  # fmt: skip
    px, ph, bx, bh = (list(t) for t in zip(*cache.weights))
    ops.gru_stream(x.contiguous(), h0.contiguous(), px, ph, bx, bh,
                   list(module.uniform_shares), h_n, *cache.scratch[key])  # fmt: skip
