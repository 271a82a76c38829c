"""Minimum-diameter averaging (El Mhamdi, Guerraoui, Rouault 2018) on the Gram matrix."""
from __future__ import annotations

from .. import solvers, spectral
from ._common import subset_mean


def mda(updates, f: int, weights=None, *, on_nonfinite: str = "exclude",
        return_info: bool = False, backend: str = "auto", pre=None):
    """Minimum-diameter averaging (El Mhamdi, Guerraoui, Rouault, ICML 2018, "The hidden
    vulnerability of distributed learning in Byzantium"): the mean (weighted by ``weights``
    when given) of the n - f updates whose set has the smallest diameter
    max_{i, j in S} ||x_i - x_j||; requires n > 2f.

    The subsets are searched on the n x n distances: exactly while C(n, f) (n - f)^2 <= 10^7
    (the first smallest in itertools.combinations order), greedily beyond (f times, drop the
    endpoint of the farthest pair that is farther from the rest: spectral.farthest_pair_drop).
    docs/api.md."""
    def minimum_diameter(gram, n: int, m: int) -> list[int]:
        D = solvers.squared_distances(gram)
        return spectral.best_subset(n, m, lambda s: spectral.subset_diameters(D, s),
                                    spectral.farthest_pair_drop(D))[0]

    return subset_mean("mda", updates, f, weights, on_nonfinite, return_info, backend, pre,
                       minimum_diameter)
