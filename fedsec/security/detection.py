"""How well a defense's exclusions match the round's malicious clients.

Each round with a defense, the pipeline compares the clients the defense left out against the
clients the attack controlled that round (``ctx.metrics["malicious_clients"]``, reported by
every built-in attack, the data-poisoning ones for the rounds their clients trained) and writes
``ctx.metrics["detection"]``: the confusion counts over the round's clients and

    precision = tp / (tp + fp)   (of the clients left out, the share that were malicious)
    recall    = tp / (tp + fn)   (of the malicious clients, the share left out)
    fpr       = fp / (fp + tn)   (of the honest clients, the share left out)

A ratio whose denominator is 0 (nobody left out, no attacker this round, no honest client) is
undefined: None in the record (null in JSON), never 0.

Left out means either of:

- excluded: named in ``ctx.metrics["excluded_clients"]`` (a filter such as Krum dropped it, a
  rule did not select it, or its update was not finite);
- down-weighted: in ``ctx.metrics["client_weights"]`` (FoolsGold's alpha, RFA's Weiszfeld
  weights) with a share w_i / sum_j w_j below ``DOWNWEIGHT_SHARE`` / n, n the clients weighted:
  less than half the weight it would have in a plain average. A weight of 0 always counts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .base import RoundContext
from .metrics import EXCLUDED_KEY, MALICIOUS_KEY, WEIGHTS_KEY

DETECTION_KEY = "detection"
DOWNWEIGHT_SHARE = 0.5
# A run's detection in one number per ratio: its mean over the rounds where it is defined.
RUN_METRICS = {"detection_precision": "precision", "detection_recall": "recall",
               "detection_fpr": "fpr"}


@dataclass(frozen=True)
class Detection:
    """The confusion counts of one round's exclusions (positive = malicious / left out)."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def fpr(self) -> float | None:
        return _ratio(self.fp, self.fp + self.tn)

    def as_record(self) -> dict[str, Any]:
        return {"precision": self.precision, "recall": self.recall, "fpr": self.fpr,
                "tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn}


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def detection(clients: Iterable[int], malicious: Iterable[int], left_out: Iterable[int]
              ) -> Detection:
    """The counts over ``clients``; ids of ``malicious`` or ``left_out`` outside them are
    ignored (they did not send a model this round)."""
    clients = {int(c) for c in clients}
    bad = clients & {int(c) for c in malicious}
    out = clients & {int(c) for c in left_out}
    return Detection(tp=len(out & bad), fp=len(out - bad), fn=len(bad - out),
                     tn=len(clients - out - bad))


def down_weighted(weights: Mapping[int, float]) -> set[int]:
    """The clients whose share of ``weights`` is below DOWNWEIGHT_SHARE / n (all of them when
    every weight is 0: nobody is averaged in)."""
    total = sum(max(float(w), 0.0) for w in weights.values())
    if total <= 0:
        return {int(c) for c in weights}
    floor = DOWNWEIGHT_SHARE / len(weights)
    return {int(c) for c, w in weights.items() if float(w) / total < floor}


def left_out(metrics: Mapping[str, Any]) -> set[int]:
    """The clients a round's metrics say were excluded or down-weighted."""
    out = {int(c) for c in metrics.get(EXCLUDED_KEY, [])}
    return out | down_weighted(metrics.get(WEIGHTS_KEY, {}))


def report_detection(ctx: RoundContext, clients: Iterable[int]) -> Detection:
    """``ctx.metrics["detection"]`` for the round whose models came from ``clients``."""
    result = detection(clients, ctx.metrics.get(MALICIOUS_KEY, []), left_out(ctx.metrics))
    ctx.metrics[DETECTION_KEY] = result.as_record()
    return result


def mean_over_rounds(records: Iterable[Mapping[str, Any]], ratio: str) -> float | None:
    """The mean of ``ratio`` ("precision", "recall" or "fpr") over the records whose detection
    defines it; None when none does (no defense, or e.g. no attacker for recall)."""
    values = [r[DETECTION_KEY][ratio] for r in records
              if r.get(DETECTION_KEY) and r[DETECTION_KEY].get(ratio) is not None]
    return sum(values) / len(values) if values else None
