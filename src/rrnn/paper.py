"""Figures printed in Diao, Ding & Tarokh (2019), kept verbatim for comparison."""

#: Sharing rates of the paper's tables, in its column order.
TABLE_II_RATES = (1.0, 0.95, 0.9, 0.7, 0.5, 0.3, 0.1, 0.0)

#: Table II, "model complexity" in millions: 3 layers, embedding = hidden = 200.
TABLE_II = {
    "rnn": (0.130, 0.136, 0.142, 0.167, 0.191, 0.215, 0.239, 0.251),
    "gru": (0.130, 0.161, 0.191, 0.311, 0.432, 0.553, 0.673, 0.733),
    "lstm": (0.130, 0.173, 0.215, 0.384, 0.553, 0.721, 0.890, 0.975),
}

#: The authors' counting code added V - E (the decoder bias of a 10,000-word
#: vocabulary minus the embedding size 200) to the recurrent count, so their
#: Table II is our exact recurrent count + 9,800.
PTB_COUNT_OFFSET = 10_000 - 200
