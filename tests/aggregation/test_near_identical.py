"""Clients spread ~1e-3 around a common model of norm ~1 (d = 100000): the realistic FL case, where
||x||^2 + ||y||^2 - 2 x.y cancels catastrophically (float32 would lose everything: eps32 * 1 is
~5% of a squared distance of ~2e-6). Krum scores and distances must match the float64
reference to 1e-3 relative, and the discrete choices (Krum, Bulyan, medoid) must be the
reference's, for float32 input on every backend.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

import fedsec
from support.aggregation import (as_numpy64, bulyan_near_tie_alternative, client_scales, combine_atol, rounded,
                      to_float64, to_form)
from fedsec.aggregation import reference as ref

D_MODEL = 100_000
SPREAD = 1e-3
RTOL = 1e-3


@functools.lru_cache(maxsize=16)
def _cloud(n: int, seed: int, dtype: str = "float32", far_client: int | None = None) -> np.ndarray:
    """Read-only (shared by the backends): copy before writing."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(D_MODEL) / np.sqrt(D_MODEL)  # ||w|| ~ 1
    scales = 1.0 + 0.5 * client_scales(rng, n)  # distinct spreads: Krum's choices are well separated
    X = w + SPREAD * scales[:, None] * rng.standard_normal((n, D_MODEL)) / np.sqrt(D_MODEL)
    if far_client is not None:
        X[far_client] = w + 10.0 * rng.standard_normal(D_MODEL) / np.sqrt(D_MODEL)  # 1e4 x the spread
    X = rounded(X, dtype)
    X.setflags(write=False)
    return X


@functools.lru_cache(maxsize=16)
def _krum_scores_ref(n, seed, far_client, f):
    return ref.krum_scores(_cloud(n, seed, far_client=far_client), f)


def _scores(X, f, backend, form="tensor-list", dtype="float32"):
    updates = to_form(X, form, dtype, backend.device)
    out, info = fedsec.krum_scores(updates, f=f, return_info=True, backend=backend.kind)
    return as_numpy64(out), info


@pytest.mark.parametrize("f", [0, 3, 8])
def test_krum_scores_relative_accuracy(f, backend):
    seed = 11 + f
    X = _cloud(20, seed)
    got, _ = _scores(X, f, backend)
    want = _krum_scores_ref(20, seed, None, f)
    rel = np.abs(got - want) / want
    assert rel.max() <= RTOL, (f"seed={seed} n=20 d={D_MODEL} f={f} float32 backend={backend.id}: "
                               f"worst relative error {rel.max():.3g} at client {int(rel.argmax())} "
                               f"(got {got[rel.argmax()]:.6g}, expected {want[rel.argmax()]:.6g})")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_nearest_neighbour_distances(seed, backend):
    # n = 3, f = 0: each score is the squared distance to the nearest other client
    X = _cloud(3, seed)
    got, _ = _scores(X, 0, backend)
    Dref = ref.pairwise_sq_distances(X)
    want = np.array([np.delete(Dref[i], i).min() for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=RTOL, err_msg=f"seed={seed} backend={backend.id}")


def test_scores_accurate_when_client_0_is_far(backend):
    """Client 0 (the natural reference point of a centered Gram matrix) is 1e4 spreads away: the
    honest clients' distances must stay accurate (a Gram matrix centered on client 0 in float32
    would have errors ~ eps32 * 100, far above the distances ~ 2e-6)."""
    X = _cloud(12, 7, far_client=0)
    f = 2
    got, _ = _scores(X, f, backend)
    want = _krum_scores_ref(12, 7, 0, f)
    rel = np.abs(got - want) / want
    assert rel.max() <= RTOL, f"backend={backend.id}: worst relative error {rel.max():.3g} at client {int(rel.argmax())}"


@pytest.mark.parametrize("form", ["tensor", "tensor-list", "state_dict"])
def test_multi_krum_choice_and_value(form, backend):
    X = _cloud(15, 21, far_client=4)
    f, m = 3, 6
    updates = to_form(X, form, "float32", backend.device)
    value, info = fedsec.krum(updates, f=f, m=m, return_info=True, backend=backend.kind)
    chosen = ref.krum_selection(X, f, m)
    assert info.used == tuple(chosen), f"backend={backend.id} form={form}: chose {info.used}, reference {chosen}"
    got = to_float64(value, form, D_MODEL)
    want = X[chosen].mean(axis=0)
    # float32 output of a mean of values ~3e-3: rounding ~ eps32 * |x|; relative to the spread
    assert np.linalg.norm(got - want) <= RTOL * SPREAD, np.linalg.norm(got - want)


def test_bulyan_choice_near_identical(backend):
    X = _cloud(11, 31, far_client=0)
    f = 2
    value, info = fedsec.bulyan(to_form(X, "tensor-list", "float32", backend.device), f=f, return_info=True,
                                backend=backend.kind)
    chosen = ref.bulyan_selection(X, f)
    assert info.used == tuple(chosen), f"backend={backend.id}: chose {info.used}, reference {chosen}"
    got = to_float64(value, "tensor-list")
    # Per coordinate, the reference's value, or (where two candidates' distances to the median
    # differ by less than float32 can resolve) the value with that near-tie resolved the other way.
    S = X[chosen]
    beta = len(S) - 2 * f
    want = ref.bulyan(X, f)
    alternative = bulyan_near_tie_alternative(S, beta, "float32")
    atol = combine_atol("float32", beta, float(np.abs(X).max()))
    err = np.minimum(np.abs(got - want), np.abs(got - alternative))
    assert err.max() <= atol, f"backend={backend.id}: coordinate {int(err.argmax())} off by {err.max():.3g}"
    flipped = int((np.abs(got - want) > atol).sum())
    assert flipped <= 1e-3 * D_MODEL, f"{flipped} coordinates resolved near-ties differently"


def test_geometric_median_near_identical(backend):
    X = _cloud(10, 41, far_client=0)
    value, info = fedsec.geometric_median(to_form(X, "tensor-list", "float32", backend.device), return_info=True,
                                          backend=backend.kind)
    want, _, iterations = ref.geometric_median(X, return_details=True)
    got = to_float64(value, "tensor-list")
    # Distances accurate to 1e-3 relative move the Weiszfeld weights by as much: the answer moves
    # by at most ~1e-3 of the spread.
    assert np.linalg.norm(got - want) <= RTOL * SPREAD, (np.linalg.norm(got - want), info.iterations, iterations)


def test_centered_clip_near_identical_medoid(backend):
    X = _cloud(10, 51, far_client=0)
    tau = 0.5 * SPREAD
    value = fedsec.centered_clip(to_form(X, "tensor-list", "float32", backend.device), tau=tau, iters=3,
                                 backend=backend.kind)
    want = ref.centered_clip(X, tau, 3)
    got = to_float64(value, "tensor-list")
    assert np.linalg.norm(got - want) <= RTOL * SPREAD, np.linalg.norm(got - want)
