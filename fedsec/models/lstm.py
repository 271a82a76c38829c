"""The character-level LSTM of LEAF's Shakespeare task (Caldas et al. 2018, "LEAF: a benchmark
for federated settings"; McMahan et al. 2017), FedML's ``rnn``, bidirectional by default."""
from __future__ import annotations

import torch
from torch import nn

from ..params import PositiveInt
from ._checks import sequence_length
from .registry import register_model


@register_model("bilstm", "lstm", "rnn")
class CharLSTM(nn.Module):
    """Next-character LSTM (LEAF Shakespeare): embedding, stacked (bi)LSTM, the last layer's
    final states, a linear layer to the vocabulary.

    Input [N, L] token ids in [0, num_classes) (num_classes is the vocabulary size), output
    logits [N, num_classes] for the character after the sequence. The embedding has
    ``embedding_dim`` (default 8, as LEAF) dimensions; ``num_layers`` (default 2) LSTM layers of
    ``hidden_size`` (default 256, as LEAF) units read it; with ``bidirectional`` (default true)
    each layer runs both ways and the next one reads both directions' outputs. The linear
    layer reads the last layer's final hidden states, the forward one (after token L-1) and,
    when bidirectional, the backward one (after token 0) concatenated after it.

    Parameters for vocabulary 80 (L = 80 does not change them): embedding 640, LSTM
    2 * 272,384 + 2 * 788,480, linear 41,040: 2,163,408 in all; 819,920 with
    ``bidirectional: false`` (LEAF's model).
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *,
                 embedding_dim: PositiveInt = 8, hidden_size: PositiveInt = 256,
                 num_layers: PositiveInt = 2,
                 bidirectional: bool = True):
        super().__init__()
        sequence_length(self.name, input_shape)
        self.directions = 2 if bidirectional else 1
        self.embedding = nn.Embedding(num_classes, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers, batch_first=True,
                            bidirectional=bidirectional)
        self.fc = nn.Linear(self.directions * hidden_size, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(self.embedding(tokens))
        # hidden: [num_layers * directions, N, hidden_size], the last layer's directions last.
        final = hidden[-self.directions:].transpose(0, 1).flatten(1)
        return self.fc(final)
