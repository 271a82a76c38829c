"""fedsec: federated-learning security benchmark with a fast native robust-aggregation core."""
from __future__ import annotations

from typing import TYPE_CHECKING


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

__version__ = "0.1.0"

# The public names, imported on first use (PEP 562): `fedsec --help` and other commands that do
# not aggregate start without importing torch (about 3 s here).
_EXPORTS = ("mean", "median", "trimmed_mean", "krum_scores", "krum", "geometric_median",
            "bulyan", "centered_clip", "AggregationInfo", "NonFiniteUpdateError",
            "CannotAggregateError", "CudaUnavailableError", "build_info", "set_num_threads", "set_cpu_isa",
            "fltrust", "dnc", "flame", "mda", "monna", "caf", "smea", "signguard",
            "clipped_clustering")
_EXPORTS += ("meamed",)
# Modules of the aggregation core reachable from the top: fedsec.pre.NNM(f), ...
_MODULES = {"pre": ".aggregation.pre"}

__all__ = [*_EXPORTS, *_MODULES, "__version__"]


def __getattr__(name: str):
    from importlib import import_module
    from importlib.util import find_spec

    if name in _EXPORTS:
        value = getattr(import_module(".aggregation", __name__), name)
    elif name in _MODULES:
        value = import_module(_MODULES[name], __name__)
    elif not name.startswith("_") and find_spec(f"{__name__}.{name}") is not None:
        value = import_module(f".{name}", __name__)  # a submodule, e.g. fedsec.security
    else:
        raise AttributeError(f"module 'fedsec' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from .aggregation import (AggregationInfo, CudaUnavailableError, NonFiniteUpdateError,
                              CannotAggregateError, build_info, bulyan, centered_clip,
                              geometric_median, krum, krum_scores, mean, median, set_cpu_isa, set_num_threads,
                              trimmed_mean)
    from .aggregation import (caf, clipped_clustering, dnc, flame, fltrust, mda, monna,
                              signguard, smea)
    from .aggregation import meamed, pre
