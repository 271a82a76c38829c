"""Test metrics of a global model: accuracy and mean cross-entropy (per token for a language
model, with its perplexity)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..security.base import IGNORE_LABEL

EVAL_BATCH = 1024
# Logits held at once, in numbers: a language model's batch is cut down to fit (Pythia-1B's
# 50,304-token vocabulary at 128 tokens is 6.4 M logits a sample, 26 GB for 1024 samples).
LOGIT_BUDGET = 2 ** 26


@torch.no_grad()
def evaluate(model: torch.nn.Module, features: torch.Tensor, labels: torch.Tensor,
             prefix: str = "test") -> dict[str, float]:
    """``{prefix}_accuracy``, ``{prefix}_loss`` (and ``{prefix}_perplexity`` when labels are
    token sequences [N, L]) over the whole set, in batches; labels -100 are not scored."""
    model.eval()
    correct, loss_sum, count = 0, 0.0, 0
    if features.shape[0] == 0:
        return {}
    per_sample = model(features[:1]).numel()  # one sample's logits set the batch
    batch = max(1, min(EVAL_BATCH, LOGIT_BUDGET // per_sample))
    for start in range(0, features.shape[0], batch):
        logits = model(features[start:start + batch])
        y = labels[start:start + batch].reshape(-1)
        flat = logits.reshape(-1, logits.shape[-1])
        scored = y != IGNORE_LABEL
        loss_sum += float(F.cross_entropy(flat, y, reduction="sum",
                                          ignore_index=IGNORE_LABEL))
        correct += int(((flat.argmax(-1) == y) & scored).sum())
        count += int(scored.sum())
    if count == 0:
        return {}
    out = {f"{prefix}_accuracy": correct / count, f"{prefix}_loss": loss_sum / count}
    if labels.dim() == 2:
        out[f"{prefix}_perplexity"] = math.exp(min(out[f"{prefix}_loss"], 50.0))
    return out
