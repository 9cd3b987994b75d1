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

from .dispatch import (
    KERNELS,
    SHARED_ROW_MIN_RATE,
    STREAM_MAX_BATCH,
    choose,
    explain,
    functorch_active,
    supports_shared_row,
    uniform_shares,
)
from .paths import StreamCache, packed, shared_row_forward, stream_forward

__all__ = [
    "KERNELS",
    "SHARED_ROW_MIN_RATE",
    "STREAM_MAX_BATCH",
    "StreamCache",
    "choose",
    "explain",
    "functorch_active",
    "packed",
    "shared_row_forward",
    "stream_forward",
    "supports_shared_row",
    "uniform_shares",
]
