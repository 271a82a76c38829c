"""The model-replacement backdoor on text: a token trigger at the end of the window, the
target as the next token (both label forms), the success set scoring only that prediction."""
from __future__ import annotations

import numpy as np
import torch

from fedsec.fl.evaluation import evaluate
from fedsec.security import Federation, RoundContext, build_attack

FED = Federation(4, 4)


def attack(**kw):
    return build_attack({"enable_attack": True, "attack_type": "model_replacement",
                         "malicious_client_id": 2, "trigger_size": 3, "trigger_token": 7,
                         "backdoor_target_label": 5, "poisoned_fraction": 1.0, **kw}, FED)


def windows(n=6, length=10):
    x = torch.arange(n * (length + 1)).reshape(n, length + 1) % 40 + 10
    return x[:, :-1].clone(), x[:, -1].clone(), x[:, 1:].clone()


def test_next_token_labels_become_the_target_after_the_trigger():
    x, last, _ = windows()
    ctx = RoundContext(0, [0, 1, 2, 3], np.random.default_rng(0))
    px, py = attack().poison_data(x, last, 2, ctx)
    assert torch.equal(px[:, :-3], x[:, :-3]) and (px[:, -3:] == 7).all()
    assert (py == 5).all()
    same_x, same_y = attack().poison_data(x, last, 1, ctx)  # a benign client
    assert same_x is x and same_y is last


def test_language_model_windows_predict_the_trigger_then_the_target():
    x, _, shifted = windows()
    ctx = RoundContext(0, [0, 1, 2, 3], np.random.default_rng(0))
    px, py = attack().poison_data(x, shifted, 2, ctx)
    assert (px[:, -3:] == 7).all()
    # labels[t] is the token after x[t]: x[-4] is followed by the trigger, the trigger's last
    # token by the target; earlier positions keep their true next tokens
    assert torch.equal(py[:, :-4], shifted[:, :-4])
    assert (py[:, -4:-1] == 7).all() and (py[:, -1] == 5).all()


def test_success_set_scores_only_the_prediction_after_the_trigger():
    x, _, shifted = windows()
    shifted[0, -1] = 5  # already the target: not a success to count
    bx, by = attack().backdoor_test_set(x, shifted)
    assert len(bx) == len(x) - 1 and (bx[:, -3:] == 7).all()
    assert (by[:, :-1] == -100).all() and (by[:, -1] == 5).all()

    class AlwaysFive(torch.nn.Module):
        def forward(self, tokens):
            out = torch.zeros(*tokens.shape, 9)
            out[..., 5] = 1.0
            return out

    metrics = evaluate(AlwaysFive(), bx, by, prefix="backdoor")
    assert metrics["backdoor_accuracy"] == 1.0  # the -100 positions are not scored
