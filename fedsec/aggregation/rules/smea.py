"""Smallest maximum eigenvalue averaging (Allouah et al. 2023, as ByzFL defines it) on the
Gram matrix."""
from __future__ import annotations

from .. import spectral
from ._common import subset_mean


def smea(updates, f: int, weights=None, *, on_nonfinite: str = "exclude",
         return_info: bool = False, backend: str = "auto", pre=None):
    """Smallest maximum eigenvalue averaging (Allouah, Guerraoui, Gupta, Pinot, Stephan, ICML
    2023, "On the privacy-robustness-utility trilemma in distributed learning"; ByzFL's
    ``SMEA``): the mean (weighted by ``weights`` when given) of the n - f updates whose
    empirical covariance (1/|S|) sum_{i in S} (x_i - mu_S)(x_i - mu_S)^T has the smallest
    largest eigenvalue; requires n > 2f.

    Each subset's eigenvalue is exact, from its centered (n - f) x (n - f) sub-Gram matrix
    (ByzFL estimates it by one power iteration from a random start). The subsets are searched
    exactly while C(n, f) (n - f)^2 <= 10^7, greedily beyond (f times, drop the update whose
    removal leaves the smallest eigenvalue; lowest index on ties). docs/api.md."""
    def smallest_max_eigenvalue(gram, n: int, m: int) -> list[int]:
        return spectral.best_subset(n, m,
                                    lambda s: spectral.subset_max_eigenvalues(gram, s))[0]

    return subset_mean("smea", updates, f, weights, on_nonfinite, return_info, backend, pre,
                       smallest_max_eigenvalue)
