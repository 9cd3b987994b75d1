"""Inference of a pruned recurrent stack with sparse (CSR) matrix products.

:class:`SparseRNN` holds every weight matrix of a torch.nn RNN/GRU/LSTM in
``torch.sparse_csr`` form and runs the sequence with ``torch.sparse.mm``: the
input products of all steps at once, then one recurrent product per step. It
gives the dense module's outputs (within float rounding) and no gradients.
Whether it is faster than the dense module depends on the sparsity, the sizes
and the machine: ``rrnn report --latency`` times both and uses the faster.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .prune import sparse_weights


def cell_step(mode: str, gi: Tensor, gh: Tensor, h: Tensor, c: Tensor | None):
    """One step of torch.nn's cell from the gate pre-activations ``gi = W_ih x + b_ih``
    and ``gh = W_hh h + b_hh`` (both ``(B, G*H)``, torch.nn's gate order)."""
    if mode == "lstm":
        i, f, g, o = (gi + gh).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    if mode == "gru":
        ir, iz, in_ = gi.chunk(3, -1)
        hr, hz, hn = gh.chunk(3, -1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        return (1 - z) * torch.tanh(in_ + r * hn) + z * h, None
    if mode == "rnn_relu":
        return torch.relu(gi + gh), None
    return torch.tanh(gi + gh), None


class SparseRNN(nn.Module):
    """The CSR form of a (pruned) torch.nn RNN/GRU/LSTM, for inference.

    Input ``(T, B, K)``; state as torch.nn's (``h (L, B, H)``, and ``(h, c)`` for the
    LSTM). Unidirectional, with biases, no projection, ``batch_first=False``.

    Its weights are buffers with torch.nn's names: ``weight_ih_l{k}`` ``(G*H, K)`` and
    ``weight_hh_l{k}`` ``(G*H, H)`` in ``torch.sparse_csr`` layout, ``bias_ih_l{k}`` and
    ``bias_hh_l{k}`` ``(G*H,)`` dense (G = 4, 3, 1 for LSTM, GRU, RNN). So a state_dict
    saves and loads them; loading takes each stored matrix as it is, whatever its
    number of stored entries (a module built from any stack of the same shapes, e.g.
    the unpruned one, loads a pruned model's state_dict).
    """

    def __init__(self, rnn: nn.RNNBase) -> None:
        super().__init__()
        if (
            not isinstance(rnn, nn.RNNBase)
            or rnn.bidirectional
            or not rnn.bias
            or rnn.batch_first
            or getattr(rnn, "proj_size", 0)
        ):
            raise ValueError(
                "SparseRNN takes a unidirectional torch.nn RNN/GRU/LSTM with biases, "
                "no projection and batch_first=False"
            )
        self.mode = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn", "RNN_RELU": "rnn_relu"}[
            rnn.mode
        ]
        self.num_layers, self.hidden_size = rnn.num_layers, rnn.hidden_size
        csr = sparse_weights(rnn)
        for i in range(rnn.num_layers):
            for kind in ("ih", "hh"):
                self.register_buffer(f"weight_{kind}_l{i}", csr[f"weight_{kind}_l{i}"])
                bias = getattr(rnn, f"bias_{kind}_l{i}").detach().clone()
                self.register_buffer(f"bias_{kind}_l{i}", bias)

    def _load_from_state_dict(self, state_dict, prefix, *args):
        # copy_ cannot change a CSR matrix's number of stored entries: each stored
        # matrix (layout and shape checked) becomes the module's buffer, which the
        # standard loading then copies onto itself
        state_dict = dict(state_dict)
        error_msgs = args[-1]
        for i in range(self.num_layers):
            for kind in ("ih", "hh"):
                name = f"weight_{kind}_l{i}"
                theirs, mine = state_dict.get(prefix + name), getattr(self, name)
                if theirs is None:
                    continue  # reported as missing by the standard loading
                if theirs.layout != torch.sparse_csr or theirs.shape != mine.shape:
                    error_msgs.append(
                        f"{prefix + name}: expected a torch.sparse_csr tensor of shape "
                        f"{tuple(mine.shape)}, got {theirs.layout} {tuple(theirs.shape)}"
                    )
                    state_dict.pop(prefix + name)
                    continue
                self._buffers[name] = theirs.to(mine.device, mine.dtype)
                state_dict[prefix + name] = self._buffers[name]
        super()._load_from_state_dict(state_dict, prefix, *args)

    def layer(self, i: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(W_ih, W_hh, b_ih, b_hh)`` of layer ``i``."""
        return tuple(getattr(self, f"{w}_{k}_l{i}") for w, k in
                     (("weight", "ih"), ("weight", "hh"), ("bias", "ih"), ("bias", "hh")))  # fmt: skip

    @torch.no_grad()
    def forward(self, input: Tensor, hx=None):
        T, B, _ = input.shape
        lstm = self.mode == "lstm"
        if hx is None:
            z = input.new_zeros(self.num_layers, B, self.hidden_size)  # (L, B, H)
            hx = (z, z.clone()) if lstm else z
        hs, cs = (hx[0], hx[1]) if lstm else (hx, None)
        x, last_h, last_c = input, [], []
        for i in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self.layer(i)
            flat = x.reshape(T * B, -1)  # (T*B, K)
            gi = torch.sparse.mm(w_ih, flat.T).T.reshape(T, B, -1) + b_ih  # (T, B, G*H)
            h, c = hs[i], (cs[i] if lstm else None)
            outs = []
            for t in range(T):
                gh = torch.sparse.mm(w_hh, h.T).T + b_hh  # (B, G*H)
                h, c = cell_step(self.mode, gi[t], gh, h, c)
                outs.append(h)
            x = torch.stack(outs)  # (T, B, H)
            last_h.append(h)
            last_c.append(c)
        h_n = torch.stack(last_h)
        return x, ((h_n, torch.stack(last_c)) if lstm else h_n)
