"""The aggregation core: robust rules on streaming native primitives.

- ``pre.py``: pre-aggregators (NNM, bucketing, ARC, clipping) as mixing matrices, for ``pre=``.
- ``rules/``: the public drop-in aggregators (``fedsec.krum``, ``fedsec.median``, ...), one file
  per rule family, each written on an ``AggregationContext``.
- ``context.py``: one call's updates, backend and clients in play (non-finite exclusion).
- ``updates.py``: the accepted input forms (stacked tensor or array, lists, state_dicts) as one
  ``UpdateSet`` of row blocks.
- ``solvers.py``: the n x n maths (distances, Krum scores, Weiszfeld, medoid, error bounds).
- ``backends/``: the three streaming primitives (Gram, combine, select) in the native C++/CUDA
  core and in torch; ``backends/build.py`` reports what was built and can run.
- ``reference.py``: float64 NumPy references written from each rule's definition.
- ``info.py``, ``errors.py``, ``selftest.py``: what a call reports, its errors, a quick check.
"""
from .backends.build import build_info, set_cpu_isa, set_num_threads
from .errors import CudaUnavailableError, NonFiniteUpdateError, CannotAggregateError
from .info import AggregationInfo
from .rules import (bulyan, centered_clip, geometric_median, krum, krum_scores, mean, median,
                    trimmed_mean)
from .rules import meamed
from .rules import caf, clipped_clustering, dnc, flame, fltrust, mda, monna, signguard, smea

__all__ = ["mean", "median", "trimmed_mean", "krum_scores", "krum", "geometric_median",
           "bulyan", "centered_clip", "AggregationInfo", "NonFiniteUpdateError",
           "CannotAggregateError", "CudaUnavailableError", "build_info", "set_num_threads", "set_cpu_isa",
           "fltrust", "dnc", "flame", "mda", "monna", "caf", "smea", "signguard",
           "clipped_clustering", "meamed"]
