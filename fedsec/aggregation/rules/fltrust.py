"""FLTrust (Cao, Fang, Liu, Gong 2021): trust from the server's update, on Gram matrices."""
from __future__ import annotations

import math

import numpy as np

from ..context import AggregationContext
from ._common import result
from ._points import combine_in_frame, frame, shifted, squared_norm


def fltrust(updates, server_update, *, center=None, on_nonfinite: str = "exclude",
            return_info: bool = False, backend: str = "auto"):
    """FLTrust (Cao, Fang, Liu, Gong, NDSS 2021, "FLTrust: Byzantine-robust federated learning
    via trust bootstrapping"): with g_0 the server's update (trained on its clean root set),
    each client's trust score is TS_i = ReLU(cos(g_i, g_0)), each g_i is rescaled to
    ||g_0||, and the result is sum_i TS_i (||g_0|| / ||g_i||) g_i / sum_j TS_j; when every
    score is 0 (or ||g_0|| = 0), the zero update. A zero g_i has score 0.

    g_i is the given vector x_i, or x_i - center when ``center`` (e.g. the global model, one
    update in the same form) is given: the result is then center + the aggregated update.
    ``server_update`` is g_0 itself in both cases. ``info.scores`` holds the trust scores (0
    for excluded clients), ``info.coefficients`` the c_i of center + sum_i c_i g_i.

    The cosines and norms come from two Gram passes (centered on the frame's point and on the
    server's point), then one combination pass."""
    ctx = AggregationContext("fltrust", updates, on_nonfinite, backend)
    server = ctx.updates.like(server_update, "server_update")
    server_sq = squared_norm(ctx, server, "server_update")
    point = frame(ctx, center)
    server_point = shifted(point, server) if center is not None else server

    def body():
        frame_gram = ctx.gram(point)
        server_gram = ctx.gram(server_point)
        sq = frame_gram.squares(np.diag(frame_gram.matrix))  # ||g_i||^2
        to_server = server_gram.squares(np.diag(server_gram.matrix))  # ||g_i - g_0||^2
        norms, server_norm = np.sqrt(sq), math.sqrt(server_sq)
        inner = 0.5 * (sq + server_sq - to_server)  # <g_i, g_0>
        denominator = norms * server_norm
        cosines = np.divide(inner, denominator, out=np.zeros(ctx.n), where=denominator > 0)
        trust = np.maximum(np.minimum(cosines, 1.0), 0.0)
        used = [i for i in range(ctx.n) if trust[i] > 0]
        coefficients = np.zeros(len(used))
        if used:
            coefficients = trust[used] / trust.sum() * server_norm / norms[used]
        chosen = [ctx.active[i] for i in used]
        value = combine_in_frame(ctx, coefficients, chosen, point)
        return value, ctx.info(chosen, coefficients=ctx.expand(coefficients, chosen),
                               scores=ctx.expand(trust))

    return result(ctx.run(body), return_info)
