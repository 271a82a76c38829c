"""fedsec.fl.evaluation: the test metrics against a direct computation, and the batch cut so a
language model's logits stay within LOGIT_BUDGET (equal results whatever the batch)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import fedsec.fl.evaluation as evaluation
from fedsec.security.base import IGNORE_LABEL


class Logits(torch.nn.Module):
    """A fixed map from token windows to [N, L, V] logits, recording each call's batch."""

    def __init__(self, vocab: int):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab,
                                                    generator=torch.Generator().manual_seed(0)))
        self.batches: list[int] = []

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.batches.append(len(tokens))
        return self.table[tokens]


def test_language_model_metrics_equal_a_direct_computation_under_any_budget(monkeypatch):
    vocab, n, length = 11, 37, 6
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, vocab, (n, length), generator=gen)
    labels = torch.randint(0, vocab, (n, length), generator=gen)
    labels[::3, :2] = IGNORE_LABEL
    model = Logits(vocab)
    with torch.no_grad():
        flat, y = model.table[tokens].reshape(-1, vocab), labels.reshape(-1)
        scored = y != IGNORE_LABEL
        loss = F.cross_entropy(flat[scored], y[scored]).item()
        accuracy = (flat[scored].argmax(1) == y[scored]).float().mean().item()
    whole = evaluation.evaluate(model, tokens, labels)
    assert whole["test_loss"] == pytest.approx(loss, rel=1e-6)
    assert whole["test_accuracy"] == pytest.approx(accuracy)
    assert whole["test_perplexity"] == pytest.approx(math.exp(loss), rel=1e-6)
    monkeypatch.setattr(evaluation, "LOGIT_BUDGET", 5 * length * vocab)  # five samples
    model.batches.clear()
    cut = evaluation.evaluate(model, tokens, labels)
    assert model.batches == [1, 5, 5, 5, 5, 5, 5, 5, 2]  # the probe, then within the budget
    for key, value in whole.items():
        assert cut[key] == pytest.approx(value, rel=1e-6), key
