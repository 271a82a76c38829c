"""The Gram-route rules (fltrust, dnc, flame, mda, monna, caf, smea, signguard,
clipped_clustering) on every backend against the float64 references of
fedsec.aggregation.reference, written from each paper's algorithm.

The grid is test_rules_reference.py's: n in {1, 2, 3, 5, 17, 64}, d in {1, 7, 1000, 65537}
(not n = 64 with d = 65537; SMEA's exhaustive reference only up to n = 5 at d = 65537), f up
to each rule's limit; float32 and float64 on the whole grid, float16 and bfloat16 on n in
{3, 17}, d in {7, 1000}.

The data are conftest.quantised_cloud's (every Gram matrix, distance, norm, cosine and sign
is exact on every backend), so the discrete choices (subsets, clusters, kept clients) must be
the reference's exactly. DnC's scores are squared projections from an eigensolver, whose last
bits differ from the reference's SVD: it runs on continuous data, whose score gaps are far
above that. SMEA's subset eigenvalues likewise: where its choice differs from the reference's,
the reference must score the library's subset as optimal within 1e-9 (an exact tie).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

import fedsec
from support.aggregation import (TORCH_DTYPES, combine_atol, continuous_cloud, eps,
                                 quantised_cloud, seed_of, shape_grid)
from fedsec.aggregation import reference as ref
from fedsec.aggregation import spectral

NS = (1, 2, 3, 5, 17, 64)
DS = (1, 7, 1000, 65537)
LOW_PRECISION_NS = (3, 17)
LOW_PRECISION_DS = (7, 1000)
RULES = ("fltrust", "dnc", "flame", "mda", "monna", "caf", "smea", "signguard",
         "clipped_clustering")
SELECTIONS = {"mda": ref.mda_selection, "monna": ref.monna_selection,
              "smea": ref.smea_selection, "dnc": ref.dnc_selection}


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """The references' many small SVDs on one BLAS thread: on a busy machine, BLAS threads
    waiting for a core cost a scheduler period per call."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        yield


def _fs(limit: int) -> list[int]:
    return sorted({f for f in (0, 1, limit) if 0 <= f <= limit})


def variants(rule: str, n: int, d: int) -> list[dict]:
    """The parameter sets tested for ``rule`` on n clients ("random" weights and "near"
    centers are built from the case's seed)."""
    half = (n - 1) // 2  # the largest f with n > 2f
    weighted = [{"f": 1, "weights": "random"}] if half >= 1 else []
    if rule == "caf":
        return [{"f": f} for f in _fs(half)]
    if rule == "mda":
        return [{"f": f} for f in _fs(half)] + weighted
    if rule == "smea":
        return [] if d == 65537 and n > 5 else [{"f": f} for f in _fs(half)] + weighted
    if rule == "monna":
        return [{"f": f, "trusted": t} for f in _fs(half) for t in sorted({0, n - 1})]
    if rule == "dnc":
        return [{"f": f, "subsample": 100, "iters": 3} for f in _fs(half)] + (
            [{"f": 1, "subsample": 5000, "iters": 2, "c": 1.5, "seed": 3, "weights": "random"}]
            if n > 3 else [])
    if rule == "fltrust":
        return [{}, {"center": "near"}]
    if rule == "flame":
        return [{}, {"center": "near", "noise_lambda": 0.01, "seed": 5},
                {"weights": "random", "noise_lambda": 0.0}]
    if rule == "signguard":
        return [{}, {"center": "near", "fraction": 0.5, "seed": 2}]
    if rule == "clipped_clustering":
        return [{}, {"tau": "small"}, {"center": "near", "weights": "random"}]
    raise AssertionError(rule)


def _id(rule, params, n, d, dtype) -> str:
    bits = [rule] + [f"{k}{v if not isinstance(v, str) else ''}" for k, v in params.items()]
    return "-".join(bits + [f"n{n}", f"d{d}", dtype])


def _cases():
    cases = []
    for rule in RULES:
        for n, d, dtype in shape_grid(NS, DS, LOW_PRECISION_NS, LOW_PRECISION_DS):
            if (n, d) == (64, 65537):
                continue
            for params in variants(rule, n, d):
                cases.append(pytest.param(rule, tuple(params.items()), n, d, dtype,
                                          id=_id(rule, params, n, d, dtype)))
    return cases


def _data(rule: str, n: int, d: int, dtype: str) -> np.ndarray:
    seed = seed_of("gram-route", rule, n, d)
    return continuous_cloud(seed, n, d, dtype) if rule == "dnc" else quantised_cloud(seed, n, d)


def _on_grid(values: np.ndarray) -> np.ndarray:
    """Values on quantised_cloud's 1/16 grid: every product with the data stays exact."""
    return np.clip(np.round(values * 16), -63, 63) / 16


def _arguments(rule: str, params: tuple, n: int, d: int, X: np.ndarray) -> dict:
    """The float64 arguments of the case (arrays for "random" / "near" / "small")."""
    rng = np.random.default_rng(seed_of("gram-route-args", rule, n, d))
    args = dict(params)
    if args.get("weights") == "random":
        args["weights"] = rng.uniform(0.5, 2.0, n)
    if args.get("center") == "near":
        args["center"] = _on_grid(X.mean(axis=0) + rng.normal(0.0, 0.3, d))
    if args.get("tau") == "small":
        args["tau"] = 0.5 * float(np.median(np.linalg.norm(X, axis=1))) + 1e-3
    if rule == "fltrust":
        args["server_update"] = _on_grid(X.mean(axis=0) - (args.get("center", 0.0))
                                         + rng.normal(0.0, 0.5, d))
    return args


def _expected(rule: str, params: tuple, n: int, d: int, dtype: str):
    """(reference value, reference selection or None, arguments) of one case, shared by the
    backends (and, on the quantised data, which every dtype holds exactly, by the dtypes)."""
    return _reference(rule, params, n, d, dtype if rule == "dnc" else "any")


@functools.lru_cache(maxsize=512)
def _reference(rule: str, params: tuple, n: int, d: int, dtype: str):
    X = _data(rule, n, d, dtype if rule == "dnc" else "float64")
    args = _arguments(rule, params, n, d, X)
    if rule in SELECTIONS:
        selection_args = {k: v for k, v in args.items() if k != "weights"}
        chosen = SELECTIONS[rule](X, **selection_args)
    elif rule == "fltrust":
        trust = ref.fltrust(X, args["server_update"], args.get("center"), return_details=True)[1]
        chosen = [int(i) for i in np.flatnonzero(trust > 0)]
    else:
        chosen = None
    return getattr(ref, rule)(X, **args), chosen, args


def _as_input(value, dtype: str, device: str):
    return torch.from_numpy(np.array(value, dtype=np.float64)).to(TORCH_DTYPES[dtype]).to(device)


def _assert_close(got: np.ndarray, want: np.ndarray, atol: float, what: str) -> None:
    err = np.abs(got - want)
    bad = ~(err <= atol)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise AssertionError(f"{what}: {int(bad.sum())} of {err.size} values off; first at {i}: "
                             f"got {got[i]!r}, expected {want[i]!r} (tolerance {atol:.3g}; max "
                             f"|err| {np.nanmax(err):.3g})")


def _smea_tie(X, used, chosen, f) -> bool:
    """Whether the library's SMEA subset is, by the reference's own scores, as good as the
    reference's choice (an exact tie that the two eigensolvers break differently)."""
    score = ref.covariance_max_eigenvalue
    best = score(X[chosen])
    return len(used) == len(X) - f and score(X[list(used)]) <= best * (1 + 1e-9) + 1e-300


@pytest.mark.parametrize("rule,params,n,d,dtype", _cases())
def test_rule_matches_reference(rule, params, n, d, dtype, backend):
    X = _data(rule, n, d, dtype)
    want, chosen, args = _expected(rule, params, n, d, dtype)
    what = (f"{rule}({', '.join(f'{k}={v}' for k, v in params)}) n={n} d={d} dtype={dtype} "
            f"backend={backend.id} seed={seed_of('gram-route', rule, n, d)}")
    kwargs = {k: (_as_input(v, dtype, backend.device) if k in ("center", "server_update") else v)
              for k, v in args.items()}
    out, info = getattr(fedsec, rule)(_as_input(X, dtype, backend.device), **kwargs,
                                      backend=backend.kind, return_info=True)
    assert isinstance(out, torch.Tensor) and out.dtype == TORCH_DTYPES[dtype], what
    assert out.device.type == backend.device and tuple(out.shape) == (d,), what
    got = out.detach().to("cpu", torch.float64).numpy()
    if chosen is not None:
        what += f" used={info.used} reference={tuple(chosen)}"
        if list(info.used) != list(chosen):
            assert rule == "smea" and _smea_tie(X, info.used, chosen, args["f"]), what
            want = ref._subset_mean(X, info.used, args.get("weights"))
    scale = max(float(np.abs(X).max()), float(np.abs(args.get("center", 0.0)).max()))
    if rule == "fltrust":  # sum_i c_i |x_ik| <= ||g_0||
        scale += float(np.linalg.norm(args["server_update"]))
    atol = combine_atol(dtype, n + 1, scale) + 1e-9 * scale
    if rule == "flame":  # the noise, added in the output's dtype
        atol += 2 * eps(dtype) * float(np.abs(want).max())
    if rule == "caf":
        _, _, steps = ref.caf(X, args["f"], return_details=True)
        assert info.iterations == steps, f"{what}: {info.iterations} steps, reference {steps}"
    _assert_close(got, want, atol, what)


# --- exact and greedy subset searches -------------------------------------------------------------

@pytest.mark.parametrize("rule", ["mda", "smea"])
@pytest.mark.parametrize("regime", ["exact", "greedy"])
def test_subset_search_regimes(rule, regime, backend, monkeypatch):
    """Both regimes on the same clients: the exhaustive search (the default at n = 12, f = 3:
    C(12, 3) 9^2 = 17820 <= 10^7) and the greedy one (forced by a limit below that), each
    equal to the reference's same regime; and both drop three planted outliers."""
    n, d, f = 12, 40, 3
    X = _on_grid(np.random.default_rng(seed_of("regimes", rule)).normal(0.0, 0.25, (n, d)))
    X[[2, 7, 11]] += np.array([2.0, -2.0, 1.5])[:, None]  # still on the grid: exact Gram
    if regime == "greedy":
        monkeypatch.setattr(spectral, "EXACT_ENTRIES", 100)
        monkeypatch.setattr(ref, "EXACT_ENTRIES", 100)
    out, info = getattr(fedsec, rule)(torch.tensor(X), f, return_info=True, backend=backend.kind)
    chosen = getattr(ref, f"{rule}_selection")(X, f)
    assert list(info.used) == chosen, f"{rule} {regime}: used {info.used}, reference {chosen}"
    assert not {2, 7, 11} & set(info.used), f"{rule} {regime} kept an outlier: {info.used}"
    np.testing.assert_allclose(out.numpy(), X[chosen].mean(axis=0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("rule", ["mda", "smea"])
def test_greedy_beyond_the_limit_drops_a_cluster_of_outliers(rule, backend):
    """At n = 64, f = 5 (C(64, 5) 59^2 > 10^7) the search is greedy; five outliers close to
    each other (they share their farthest honest client, which MDA's greedy step must not
    drop) are still the five left out, and the result is the reference's greedy choice."""
    n, f = 64, 5
    assert math.comb(n, n - f) * (n - f) ** 2 > spectral.EXACT_ENTRIES
    X = np.random.default_rng(0).standard_normal((n, 30))
    X[:f] += 20.0
    out, info = getattr(fedsec, rule)(torch.tensor(X, device=backend.device), f,
                                      backend=backend.kind, return_info=True)
    assert list(info.used) == list(range(f, n)) == getattr(ref, f"{rule}_selection")(X, f)
    np.testing.assert_allclose(out.cpu().numpy(), X[f:].mean(axis=0), rtol=0, atol=1e-12)


# --- seeded randomness ----------------------------------------------------------------------------

def test_dnc_subsets_reproducible_from_seed(backend):
    """Same seed: the same kept clients and value on every call; the reference draws the
    same coordinates (the grid checks the value); another seed draws others."""
    X = continuous_cloud(seed_of("dnc-seed"), 20, 5000, "float64")
    kwargs = {"subsample": 50, "iters": 4, "seed": 11, "backend": backend.kind}
    a = fedsec.dnc(torch.tensor(X), 3, **kwargs, return_info=True)
    b = fedsec.dnc(torch.tensor(X), 3, **kwargs, return_info=True)
    assert torch.equal(a[0], b[0]) and a[1].used == b[1].used
    assert list(a[1].used) == ref.dnc_selection(X, 3, subsample=50, iters=4, seed=11)
    others = {tuple(ref.dnc_selection(X, 3, subsample=50, iters=4, seed=s)) for s in range(12, 20)}
    assert len(others | {tuple(a[1].used)}) > 1, "every seed kept the same clients"


def test_flame_noise_from_seed(backend):
    """The noise is noise_lambda * S * z, z numpy's float32 normals of Generator(seed) in the
    flattened order (for a state_dict: parameter after parameter), the same on every
    backend."""
    X = quantised_cloud(seed_of("flame-noise"), 7, 300)
    T = torch.tensor(X)
    clean = fedsec.flame(T, noise_lambda=0.0, backend=backend.kind)
    noisy = fedsec.flame(T, noise_lambda=0.05, seed=9, backend=backend.kind)
    S = float(np.median(np.linalg.norm(X, axis=1)))
    z = np.random.default_rng(9).standard_normal(300, dtype=np.float32).astype(np.float64)
    np.testing.assert_allclose((noisy - clean).numpy(), 0.05 * S * z, rtol=1e-12, atol=1e-15)
    again = fedsec.flame(T, noise_lambda=0.05, seed=9, backend=backend.kind)
    assert torch.equal(noisy, again)
    other = fedsec.flame(T, noise_lambda=0.05, seed=10, backend=backend.kind)
    assert not torch.equal(noisy, other)
