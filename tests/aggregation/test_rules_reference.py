"""Every rule on every backend against the float64 references of fedsec/aggregation/reference.py.

Seeded random inputs over n in {1, 2, 3, 5, 17, 64}, d in {1, 7, 1000, 65537} (d = 65537 with
n = 64 only for mean, median, krum_scores and krum, to keep the suite fast), f up to its limit;
float32 and float64 on the whole grid, float16 and bfloat16 on n in {3, 17, 64}, d in {7, 1000}.

The reference gets the inputs after rounding to the dtype under test, so every tolerance below is
the library's own error: its accumulation (float32 at least, float64 for float64 inputs), its
Gram matrix (conftest.gram_rel) and the rounding of the output to the input's dtype.

Distance-based selections (Krum, Bulyan, the medoid) and the Weiszfeld iterations use the
quantised data of conftest.quantised_cloud, on which every backend's Gram matrix is exact: the
discrete choices (exact ties included) and the iteration counts must then equal the reference's.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fedsec
from support.aggregation import (TORCH_DTYPES, acc_eps, cached_distances, combine_atol,
                                 continuous_cloud, distance_atol, eps, quantised_cloud, seed_of,
                                 shape_grid)
from fedsec.aggregation import reference as ref

NS = (1, 2, 3, 5, 17, 64)
DS = (1, 7, 1000, 65537)
LOW_PRECISION_NS = (3, 17, 64)
LOW_PRECISION_DS = (7, 1000)
# The largest shape (n=64, d=65537) only for these rules.
BIG_RULES = {"mean", "median", "krum_scores", "krum"}


def _fs(limit: int) -> list[int]:
    """f in {0, 1, limit}, the valid ones."""
    return sorted({f for f in (0, 1, limit) if 0 <= f <= limit})


def variants(rule: str, n: int) -> list[dict]:
    """The parameter sets tested for ``rule`` with n clients; invalid combinations are never
    generated (f up to n > 2f + 2 for Krum, n >= 4f + 3 for Bulyan; m in [1, n - f])."""
    if rule == "mean":
        return [{}, {"weights": "random"}]
    if rule == "median":
        return [{}]
    if rule == "trimmed_mean":
        return [{"beta": 0.1}, {"beta": 0.45}]
    if rule == "krum_scores":
        return [{"f": f} for f in _fs((n - 3) // 2)] if n >= 3 else []
    if rule == "krum":
        if n < 3:
            return []
        fmax = (n - 3) // 2
        return [{"f": fmax, "m": 1}, {"f": min(1, fmax), "m": n - min(1, fmax)},
                {"f": 0, "m": max(1, n // 2), "weights": "random"}]
    if rule == "geometric_median":
        return [{}, {"weights": "random", "nu": 1e-2, "max_iter": 4}]
    if rule == "bulyan":
        return [{"f": f} for f in _fs((n - 3) // 4)] if n >= 3 else []
    if rule == "centered_clip":
        return [{"iters": 1}, {"iters": 3}, {"iters": 2, "center": "near"}]
    raise AssertionError(rule)


RULES = ("mean", "median", "trimmed_mean", "krum_scores", "krum", "geometric_median", "bulyan",
         "centered_clip")


def _id(rule, params, n, d, dtype) -> str:
    bits = [rule] + [f"{k}{v if v != 'random' else ''}" for k, v in params.items()] + [f"n{n}", f"d{d}", dtype]
    return "-".join(bits)


def _cases():
    cases = []
    for rule in RULES:
        for n, d, dtype in shape_grid(NS, DS, LOW_PRECISION_NS, LOW_PRECISION_DS):
            if (n, d) == (64, 65537) and rule not in BIG_RULES:
                continue
            for params in variants(rule, n):
                cases.append(pytest.param(rule, params, n, d, dtype,
                                          id=_id(rule, params, n, d, dtype)))
    return cases


def _weights(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed + 1).uniform(0.5, 2.0, n)


def _near_center(X: np.ndarray, seed: int) -> np.ndarray:
    """A start point near the cloud on the same 1/16 grid as quantised_cloud (exact Gram)."""
    c = X.mean(axis=0) + np.random.default_rng(seed + 2).normal(0.0, 0.3, X.shape[1])
    return np.clip(np.round(c * 16), -63, 63) / 16


def _tau(D: np.ndarray) -> float:
    """Half the median nonzero pairwise distance: some clients are clipped, some not."""
    nonzero = np.sqrt(D[D > 0])
    return 0.5 * float(np.median(nonzero)) if nonzero.size else 1.0


def _assert_close(got: np.ndarray, want: np.ndarray, atol, what: str) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    err = np.abs(got - want)
    bad = ~(err <= atol)  # also catches NaN
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        tol = np.broadcast_to(atol, err.shape).reshape(-1)[i]
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {err.size} values off; first at index {i}: got "
            f"{got.reshape(-1)[i]!r}, expected {want.reshape(-1)[i]!r} (|err| = {err.reshape(-1)[i]:.3g}, "
            f"tolerance {tol:.3g}); max |err| = {np.nanmax(err):.3g}")


def _tensor(X: np.ndarray, dtype: str, device: str) -> torch.Tensor:
    return torch.from_numpy(np.array(X, dtype=np.float64)).to(TORCH_DTYPES[dtype]).to(device)


@pytest.mark.parametrize("rule,params,n,d,dtype", _cases())
def test_rule_matches_reference(rule, params, n, d, dtype, backend):
    seed = seed_of(rule, n, d)
    quantised = rule in ("krum", "bulyan", "geometric_median", "centered_clip")
    X = quantised_cloud(seed, n, d) if quantised else continuous_cloud(seed, n, d, dtype)
    what = (f"{rule}({', '.join(f'{k}={v}' for k, v in params.items())}) seed={seed} n={n} d={d} "
            f"dtype={dtype} backend={backend.id} data={'quantised' if quantised else 'continuous'}")
    kwargs = dict(params)
    if kwargs.get("weights") == "random":
        kwargs["weights"] = _weights(seed, n)
    D = None
    if rule in ("krum_scores", "krum", "bulyan", "centered_clip"):
        D = cached_distances((seed, n, d, dtype if not quantised else "q"), X)
    scale = float(np.abs(X).max())
    if rule == "centered_clip":
        kwargs["tau"] = _tau(D)
        if kwargs.get("center") == "near":
            center = _near_center(X, seed)
            kwargs["center"] = _tensor(center, dtype, backend.device)
            scale = max(scale, float(np.abs(center).max()))

    out, info = getattr(fedsec, rule)(_tensor(X, dtype, backend.device), **kwargs,
                                      backend=backend.kind, return_info=True)
    what += f" used={info.used}"

    if rule == "krum_scores":
        scores = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
        f = params["f"]
        want = ref.krum_scores(X, f, D)
        # Each score sums n - f - 2 distances, each within distance_atol; the reference itself
        # rounds d squares per distance in float64 (d eps64 relative).
        diam2 = float(D.max())
        atol = (n - f - 2) * (distance_atol(dtype, d, diam2) + d * eps("float64") * diam2)
        _assert_close(scores, want, atol, what)
        return

    assert isinstance(out, torch.Tensor), f"{what}: a tensor input must give a tensor, got {type(out)}"
    assert out.dtype == TORCH_DTYPES[dtype], f"{what}: output dtype {out.dtype}, expected {dtype}"
    assert out.device.type == backend.device, f"{what}: output on {out.device}, input on {backend.device}"
    assert tuple(out.shape) == (d,), f"{what}: output shape {tuple(out.shape)}, expected ({d},)"
    got = out.detach().to("cpu", torch.float64).numpy()

    if rule == "mean":
        _assert_close(got, ref.mean(X, kwargs.get("weights")), combine_atol(dtype, n, scale), what)
    elif rule == "median":
        want = ref.median(X)
        if n % 2:  # the middle value itself: no arithmetic, exact
            _assert_close(got, want, 0.0, what + " (odd n: the median is an input value, exact)")
        else:  # (a + b) / 2 in the accumulation precision, rounded to dtype
            _assert_close(got, want, 2.0 * (eps(dtype) + acc_eps(dtype)) * scale, what)
    elif rule == "trimmed_mean":
        k = int(np.floor(params["beta"] * n))
        _assert_close(got, ref.trimmed_mean(X, params["beta"]), combine_atol(dtype, n - 2 * k, scale), what)
    elif rule == "krum":
        f, m = params["f"], params["m"]
        chosen = ref.krum_selection(X, f, m, D)
        what += f" reference selection={tuple(chosen)}"
        want = ref.krum(X, f, m, kwargs.get("weights"), D)
        _assert_close(got, want, combine_atol(dtype, m, scale), what)
    elif rule == "bulyan":
        f = params["f"]
        chosen = ref.bulyan_selection(X, f, D)
        what += f" reference selection={tuple(chosen)}"
        beta = n - 4 * f
        _assert_close(got, ref.bulyan(X, f, D), combine_atol(dtype, beta, scale), what)
    elif rule == "geometric_median":
        gm_kwargs = {k: v for k, v in kwargs.items()}
        want, b, iterations = ref.geometric_median(X, **gm_kwargs, return_details=True)
        what += f" iterations={info.iterations} reference iterations={iterations}"
        # The Gram matrix is exact on quantised data; the n x n solver's float64 arithmetic
        # (distances from ||z||^2 - 2 z.x_i + ||x_i||^2, relative error ~ eps64 * diam^2 / dist^2)
        # moves the coefficients by far less than 1e-9; on top, the combination's own rounding.
        diam = float(np.sqrt(ref.pairwise_sq_distances(X).max())) if d < 65537 else 2 * scale * np.sqrt(d)
        atol = combine_atol(dtype, n, scale) + 1e-9 * diam
        assert info.iterations == iterations, what
        _assert_close(got, want, atol, what)
    elif rule == "centered_clip":
        center = kwargs.get("center")
        c64 = None if center is None else center.detach().to("cpu", torch.float64).numpy()
        want = ref.centered_clip(X, kwargs["tau"], params["iters"], c64, D)
        what += f" tau={kwargs['tau']:.6g}"
        diam = float(np.sqrt(D.max()))
        atol = combine_atol(dtype, n + 1, scale) + 1e-9 * diam
        _assert_close(got, want, atol, what)
    else:
        raise AssertionError(rule)


@pytest.mark.parametrize("rule,params,n", [
    pytest.param(rule, params, n, id=_id(rule, params, n, 517, "float32"))
    for rule, params, n in [("median", {}, 65), ("median", {}, 300), ("trimmed_mean", {"beta": 0.3}, 129),
                            ("trimmed_mean", {"beta": 0.1}, 300), ("bulyan", {"f": 31}, 129),
                            ("bulyan", {"f": 5}, 100)]])
def test_coordinate_rules_beyond_the_grid(rule, params, n, backend):
    """More clients than the grid's 64 (the per-coordinate sorting must not be limited to it)."""
    d = 517
    seed = seed_of(rule, n, d, "large")
    X = quantised_cloud(seed, n, d)
    out = getattr(fedsec, rule)(_tensor(X, "float32", backend.device), **params, backend=backend.kind)
    got = out.detach().to("cpu", torch.float64).numpy()
    want = getattr(ref, rule)(X, **params)
    keep = {"median": 2, "trimmed_mean": n - 2 * int(np.floor(params.get("beta", 0) * n)),
            "bulyan": n - 4 * params.get("f", 0)}[rule]
    _assert_close(got, want, combine_atol("float32", keep, float(np.abs(X).max())),
                  f"{rule}({params}) seed={seed} n={n} d={d} float32 backend={backend.id}")
