"""Robust aggregators: fedsec's public drop-in API (conventions in docs/api.md).

Each rule is a few lines on top of the three streaming primitives (fedsec.aggregation.backends)
and the n x n solvers (fedsec.aggregation.solvers): the data is read once for the
coordinate-wise rules and the mean, twice (Gram matrix, then one combination) for the
distance-based ones. One file per rule family.
"""
from .bulyan import bulyan
from .centered_clip import centered_clip
from .coordinate import median, trimmed_mean
from .geometric_median import geometric_median
from .krum import krum, krum_scores
from .mean import mean
from .meamed import meamed
from .fltrust import fltrust
from .dnc import dnc
from .flame import flame
from .mda import mda
from .monna import monna
from .caf import caf
from .smea import smea
from .signguard import signguard
from .clipped_clustering import clipped_clustering

__all__ = ["mean", "median", "trimmed_mean", "krum_scores", "krum", "geometric_median",
           "bulyan", "centered_clip", "fltrust", "dnc", "flame", "mda", "monna", "caf", "smea",
           "signguard", "clipped_clustering", "meamed"]
