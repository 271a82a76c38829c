"""How long a backdoor outlives its attack (the durability of Zhang et al. 2022, "Neurotoxin:
durable backdoors in federated learning"): the records keep the backdoor's success rate after
the attack's last round, and the summary says how many rounds it took to fall below half of
its peak."""
from __future__ import annotations

from typing import Any

KEY = "backdoor_accuracy"


def backdoor_durability(records: list[dict[str, Any]], attack_end_round: int | None
                        ) -> dict[str, Any]:
    """``backdoor_peak_accuracy``: the highest success rate up to ``attack_end_round`` (the
    attack's last round; None: it ran to the end); ``backdoor_half_life_rounds``: r - end for
    the first evaluated round r after it whose success is below half that peak, None when it
    never falls there (or the attack ran to the end)."""
    scored = [(r["round"], r[KEY]) for r in records if isinstance(r.get(KEY), (int, float))]
    during = [value for rnd, value in scored
              if attack_end_round is None or rnd <= attack_end_round]
    peak = max(during, default=None)
    half_life = None
    if peak is not None and attack_end_round is not None:
        half_life = next((rnd - attack_end_round for rnd, value in scored
                          if rnd > attack_end_round and value < peak / 2), None)
    return {"backdoor_peak_accuracy": peak, "backdoor_half_life_rounds": half_life}
