"""fedsec: federated-learning security benchmark with a fast native robust-aggregation core."""
from __future__ import annotations

from .aggregators import (bulyan, centered_clip, geometric_median, krum, krum_scores, mean,
                          median, trimmed_mean)
from .build import build_info, set_num_threads
from .errors import CudaUnavailableError, NonFiniteUpdateError
from .info import AggregationInfo

__version__ = "0.1.0"

__all__ = [
    "mean", "median", "trimmed_mean", "krum_scores", "krum", "geometric_median", "bulyan",
    "centered_clip", "AggregationInfo", "NonFiniteUpdateError", "CudaUnavailableError",
    "build_info", "set_num_threads", "__version__",
]
