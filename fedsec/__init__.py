"""fedsec: federated-learning security benchmark with a fast native robust-aggregation core."""
from __future__ import annotations


def _prefer_installed_build() -> None:
    """Run the installed build when this is an unbuilt source checkout.

    After `pip install .`, running `python -m ...` from the checkout's root imports this source
    tree first, and it has no compiled fedsec/_core. The installed copy (same sources, plus the
    extension) is then used instead. A checkout built in place keeps its own sources.
    """
    from importlib import metadata
    from pathlib import Path

    here = Path(__file__).resolve().parent
    if any(here.glob("_core*")):
        return
    try:
        installed = Path(metadata.distribution("fedsec").locate_file("fedsec")).resolve()
    except metadata.PackageNotFoundError:
        return
    if installed != here and any(installed.glob("_core*")):
        __path__[:] = [str(installed)]


_prefer_installed_build()

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
