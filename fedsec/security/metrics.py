"""What the components report into a round's ``ctx.metrics``: the keys other packages read
(the detection metrics, the run records, the Flower and FedML integrations) and the helpers
that write them, defined once.

- ``excluded_clients``: sorted ids a defense left out (``report_excluded``,
  ``report_aggregation``), with ``exclusion_reasons`` ({id: reason});
- ``client_weights``: {id: weight} of a defense that down-weights (``report_weights``);
- ``malicious_clients``: sorted ids the attack controlled this round (``report_malicious``).
"""
from __future__ import annotations

from typing import Any, Iterable

from .base import RoundContext, client_id

EXCLUDED_KEY = "excluded_clients"
REASONS_KEY = "exclusion_reasons"
WEIGHTS_KEY = "client_weights"
MALICIOUS_KEY = "malicious_clients"


def report_excluded(ctx: RoundContext, positions: Iterable[int],
                    reason: str | None = None) -> None:
    """Merge the clients at ``positions`` into ``ctx.metrics["excluded_clients"]`` (sorted ids),
    and the reason into ``ctx.metrics["exclusion_reasons"]`` ({id: reason})."""
    ids = [client_id(ctx, p) for p in positions]
    known = set(ctx.metrics.get(EXCLUDED_KEY, []))
    known.update(ids)
    ctx.metrics[EXCLUDED_KEY] = sorted(known)
    if reason is not None:
        reasons = ctx.metrics.setdefault(REASONS_KEY, {})
        for i in ids:
            reasons.setdefault(i, reason)


def report_aggregation(ctx: RoundContext, info: Any, n: int, rule: str) -> None:
    """Report the clients an aggregation of ``n`` models did not use (``info.used``), with the
    core's reason where it gave one (e.g. non-finite values)."""
    used = set(info.used)
    for position in range(n):
        if position not in used:
            reason = info.excluded.get(position, f"not selected by {rule}")
            report_excluded(ctx, [position], reason)


def report_weights(ctx: RoundContext, weights: Iterable[float]) -> None:
    """``ctx.metrics["client_weights"]``: the weight of the model at each position, by id."""
    ctx.metrics[WEIGHTS_KEY] = {client_id(ctx, i): float(w) for i, w in enumerate(weights)}


def report_malicious(ctx: RoundContext, client_ids: Iterable[int]) -> None:
    """``ctx.metrics["malicious_clients"]``: the sorted ids of this round's malicious clients
    (merged with what is already there, so per-client hooks can report one at a time)."""
    known = set(ctx.metrics.get(MALICIOUS_KEY, []))
    known.update(int(c) for c in client_ids)
    ctx.metrics[MALICIOUS_KEY] = sorted(known)
