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
        self.weights = [
            (csr[f"weight_ih_l{i}"], csr[f"weight_hh_l{i}"]) for i in range(rnn.num_layers)
        ]
        self.biases = [
            (
                getattr(rnn, f"bias_ih_l{i}").detach().clone(),
                getattr(rnn, f"bias_hh_l{i}").detach().clone(),
            )
            for i in range(rnn.num_layers)
        ]

    @torch.no_grad()
    def forward(self, input: Tensor, hx=None):
        T, B, _ = input.shape
        lstm = self.mode == "lstm"
        if hx is None:
            z = input.new_zeros(self.num_layers, B, self.hidden_size)  # (L, B, H)
            hx = (z, z.clone()) if lstm else z
        hs, cs = (hx[0], hx[1]) if lstm else (hx, None)
        x, last_h, last_c = input, [], []
        for i, ((w_ih, w_hh), (b_ih, b_hh)) in enumerate(zip(self.weights, self.biases)):
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
