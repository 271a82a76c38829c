"""One aggregation round of synthetic models, for the defense tests."""
from __future__ import annotations

import numpy as np
import torch

from fedsec.security import Federation, RoundContext

FED = Federation(client_num_in_total=20, client_num_per_round=10)
ATTACK = 10.0  # attackers move every coordinate by this much
NOISE = 0.01   # honest clients move every coordinate by N(0, NOISE^2)


# --- fixtures -------------------------------------------------------------------------------------

def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                               torch.nn.Linear(8, 2))


def make_round(n: int = 10, bad: tuple[int, ...] = (0, 1), seed: int = 0, sign: float = 1.0,
               ids_offset: int = 0):
    """Honest clients = global + N(0, NOISE^2); clients in ``bad`` = global + sign * ATTACK
    (BatchNorm running stats too); every client's num_batches_tracked = global's + 1."""
    gen = torch.Generator().manual_seed(seed)
    global_model = {k: v.clone() for k, v in tiny_model().state_dict().items()}
    models = []
    for i in range(n):
        local = {}
        for k, v in global_model.items():
            if not v.is_floating_point():
                local[k] = v + 1
            elif i in bad:
                local[k] = v + sign * ATTACK
            else:
                local[k] = v + NOISE * torch.randn(v.shape, generator=gen)
        models.append((float(10 + i), local))
    ctx = RoundContext(round_index=0, client_ids=[ids_offset + 100 + i for i in range(n)],
                       rng=np.random.default_rng(seed))
    return models, global_model, ctx
