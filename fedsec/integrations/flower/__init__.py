"""fedsec inside Flower (flwr 1.41, its Message API): docs/flower.md.

- ``FedSecStrategy``: Flower's ``FedAvg`` whose aggregation runs through any fedsec defense
  (and, for experiments, a server-side model-poisoning attack), configured by the YAML's
  ``defense_args`` / ``attack_args``; what the defense decided goes into each round's
  ``MetricRecord``.
- ``DataPoisoner``: a malicious ClientApp's training data through a data-poisoning attack.

Needs the optional extra: ``pip install "fedsec[flower]"``.
"""
from __future__ import annotations

INSTALL_HINT = 'pip install "fedsec[flower]"'

try:
    from flwr.serverapp.strategy import FedAvg  # noqa: F401  (the Message API strategies)
except ImportError as exc:
    raise ImportError(f"fedsec.integrations.flower needs Flower 1.41 (the flwr package), which "
                      f"is not importable ({exc}); install it with: {INSTALL_HINT}") from exc

from .client import DataPoisoner  # noqa: E402
from .strategy import FedSecStrategy  # noqa: E402

__all__ = ["DataPoisoner", "FedSecStrategy", "INSTALL_HINT"]
