"""A small causal transformer language model (GPT-style: Radford et al. 2019, "Language models
are unsupervised multitask learners"; pre-LN blocks as in Xiong et al. 2020, "On layer
normalization in the transformer architecture", ICML) for federated language-model training."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..params import PositiveInt, UnitInterval
from ._checks import sequence_length
from .registry import register_model


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t attends to positions <= t only."""

    def __init__(self, d_model: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, d_model = x.shape
        # [N, L, 3 * d] -> three [N, heads, L, d / heads]
        q, k, v = self.qkv(x).view(n, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.out(attended.transpose(1, 2).reshape(n, length, d_model))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + MLP(LN(x)) (GELU MLP)."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = CausalSelfAttention(d_model, num_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, dim_feedforward), nn.GELU(),
                                 nn.Linear(dim_feedforward, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.norm1(x)))
        return x + self.dropout(self.mlp(self.norm2(x)))


@register_model("transformer", "gpt", task="language_model")
class TransformerLM(nn.Module):
    """Causal transformer language model: token + learned position embeddings, pre-LN blocks,
    a final LayerNorm, logits over the vocabulary at every position.

    Input [N, L] token ids in [0, num_classes) (num_classes is the vocabulary size), output
    logits [N, L, num_classes]: position t predicts token t + 1 from tokens 0..t. The context
    length is ``input_shape[0]``; a longer input is a ValueError (there is no position
    embedding for it), a shorter one is fine. Options: ``num_layers`` (default 2) blocks of
    width ``d_model`` (128) with ``num_heads`` (4, must divide d_model) heads and an MLP of
    ``dim_feedforward`` (default 4 * d_model) units; ``dropout`` (default 0.0, so training is
    deterministic); ``tie_weights`` (default true): the output layer is the token embedding
    transposed (Press & Wolf 2017), so the state_dict holds it once. Weights are initialised
    N(0, 0.02) (GPT-2), biases 0, LayerNorms to the identity.

    Parameters for vocabulary 80 and L = 80: embeddings 2 * 10,240, 2 blocks of 198,272,
    final norm 256: 417,280; 427,520 with ``tie_weights: false``.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *,
                 num_layers: PositiveInt = 2, d_model: PositiveInt = 128,
                 num_heads: PositiveInt = 4, dim_feedforward: PositiveInt | None = None,
                 dropout: UnitInterval = 0.0, tie_weights: bool = True):
        super().__init__()
        self.context_length = sequence_length(self.name, input_shape)
        dim_feedforward = 4 * d_model if dim_feedforward is None else dim_feedforward
        if d_model % num_heads:
            raise ValueError(f"{self.name}: num_heads={num_heads} must divide "
                             f"d_model={d_model}")
        self.token_embedding = nn.Embedding(num_classes, d_model)
        self.position_embedding = nn.Embedding(self.context_length, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(Block(d_model, num_heads, dim_feedforward, dropout)
                                      for _ in range(num_layers)))
        self.norm = nn.LayerNorm(d_model)
        self.head = None if tie_weights else nn.Linear(d_model, num_classes, bias=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.context_length:
            raise ValueError(f"{self.name}: sequence length {length} exceeds the context "
                             f"length {self.context_length} (input_shape[0])")
        positions = torch.arange(length, device=tokens.device)
        x = self.dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        x = self.norm(self.blocks(x))
        weight = self.token_embedding.weight if self.head is None else self.head.weight
        return F.linear(x, weight)
