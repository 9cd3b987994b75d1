"""The torch.nn classes a cell name stands for: the one map from ``"rnn"``,
``"gru"``, ``"lstm"`` to torch.nn's layer and cell classes. Imports nothing of rrnn."""

from torch import nn

TORCH_LAYERS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
TORCH_CELLS: dict[str, type[nn.RNNCellBase]] = {"rnn": nn.RNNCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}
