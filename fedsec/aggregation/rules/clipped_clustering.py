"""Clipped clustering (Li et al. 2023, as Blades defines it) on the Gram matrix."""
from __future__ import annotations

import numpy as np

from ...params import check
from .. import solvers
from ..context import AggregationContext
from ._common import normalised, result, weights_of
from ._points import combine_in_frame, frame


def larger_cluster(distances: np.ndarray) -> list[int]:
    """Agglomerative clustering (average linkage) of the precomputed distances into two
    clusters, the larger one; on a tie the one holding client 0; everyone when n < 2."""
    n = len(distances)
    if n < 2:
        return list(range(n))
    from sklearn.cluster import AgglomerativeClustering

    labels = AgglomerativeClustering(n_clusters=2, metric="precomputed",
                                     linkage="average").fit(distances).labels_
    counts = np.bincount(labels, minlength=2)
    label = labels[0] if counts[0] == counts[1] else int(np.argmax(counts))
    return [int(i) for i in np.flatnonzero(labels == label)]


def clipped_clustering(updates, weights=None, *, tau: float | None = None, center=None,
                       on_nonfinite: str = "exclude", return_info: bool = False,
                       backend: str = "auto", pre=None):
    """Clipped clustering (Li, Xia, Zhang, Tang, Wang, 2023, "An experimental study of
    Byzantine-robust aggregation schemes in federated learning"; Blades'
    ``Clippedclustering``): each g_i is clipped to g_i min(1, tau / ||g_i||), the clipped
    updates are split in two by agglomerative clustering (average linkage) on their cosine
    distances 1 - cos(g_i, g_j) (a zero update has cosine 0 with all), and the result is the
    mean (weighted by ``weights`` when given) of the larger cluster (larger_cluster).

    ``tau`` defaults to the median of this call's ||g_i||. Blades clips at the median of every
    norm seen since the first round: that history belongs to the caller (the
    ``clipped_clustering`` defense keeps it and passes its median as ``tau``).

    g_i is the given vector x_i, or x_i - center when ``center`` (e.g. the global model) is
    given: the result is then center + the aggregated update. One Gram pass, one combination
    pass."""
    tau = check("tau", tau, float | None, gt=0)
    ctx = AggregationContext("clipped_clustering", updates, on_nonfinite, backend, pre)
    w = weights_of(weights, ctx.updates.n, ctx.pre)
    point = frame(ctx, center)

    def body():
        gram = ctx.gram(point)
        norms = np.sqrt(np.maximum(np.diag(gram.matrix), 0.0))  # in 2^exponent units
        bound = gram.length(tau) if tau is not None else float(np.median(norms))
        clip = np.minimum(1.0, np.divide(bound, norms, out=np.ones(ctx.n), where=norms > 0))
        kept = larger_cluster(solvers.cosine_distances(gram.matrix))
        chosen = [ctx.active[i] for i in kept]
        a = normalised(ctx, w, chosen) * clip[kept]
        value = combine_in_frame(ctx, a, chosen, point)
        return value, ctx.info(chosen, coefficients=ctx.expand(a, chosen))

    return result(ctx.run(body), return_info)
