"""Pre-aggregators (fedsec.pre) as mixing matrices, and ``pre=`` on every rule.

- Each pre-aggregator's matrix against the float64 references written from its paper
  (fedsec.aggregation.reference: nnm_matrix, bucketing_matrix, arc_matrix, clipping_matrix),
  on every backend, and hand cases (NNM on 4 points, ARC and clipping on 5 norms, bucketing's
  permutation from its seed).
- Every rule with ``pre=`` (one pre-aggregator, or lists applied in order) equals the rule's
  reference applied to the materialised mixed updates, on every backend, with n' = n and
  n' != n, in several input forms; info.coefficients reproduce the output from the clients.
- The mixed selection kernel against NumPy on lengths that leave every ISA's blocks with a
  tail, in every dtype; its overflow path and its non-finite flags.
- The effects the papers report, on synthetic heterogeneous clients; non-finite clients;
  bad input.

Data: conftest.quantised_cloud (values k/16), and mixing weights that are powers of two
(NNM with n - f in {8, 16}, buckets of 1, 2 or 4), so the mixed updates, their Gram matrix and
every selection made on it are exact on every backend and in the references: a rule must then
choose exactly what its reference chooses, exact ties included. Clipping's factors t / ||x||
are not exact; the rules after it choose from distances that differ from the reference's by
roundings only, and the coordinate-wise closest-to-median choice may flip on near ties
(conftest.bulyan_near_tie_alternative is accepted there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import fedsec
from support.aggregation import (TORCH_DTYPES, acc_eps, bulyan_near_tie_alternative, combine_atol,
                      continuous_cloud, distance_atol, eps, form_supported, names, number,
                      quantised_cloud, seed_of, to_float64, to_form)
from fedsec.aggregation import reference as ref
from fedsec.aggregation.backends import SelectOp, pick_backend

SHAPES = ((9, 7), (17, 1003))


def _tensor(X, dtype="float32", device="cpu"):
    return torch.from_numpy(np.array(X, dtype=np.float64)).to(TORCH_DTYPES[dtype]).to(device)


def _one(point, form, dtype, device):
    """One update (e.g. a center) in the input form ``form``."""
    return to_form(np.asarray(point)[None], form, dtype, device)[0]


def _center(X, seed):
    """A point near the cloud on the data's 1/16 grid (exact Gram entries)."""
    c = X.mean(axis=0) + np.random.default_rng(seed + 7).normal(0.0, 0.3, X.shape[1])
    return np.clip(np.round(c * 16), -63, 63) / 16


def _median_norm(X, center):
    c = np.zeros(X.shape[1]) if center is None else center
    return float(np.median(np.linalg.norm(X - c, axis=1)))


# --- the pre-aggregators under test, with their references -----------------------------------------

@dataclass(frozen=True)
class PreCase:
    """A chain of pre-aggregators: ``make(X, center)`` builds it for data X (a center in the
    input form, or None), ``reference(X, center64)`` the mixed updates in float64; ``exact``:
    the mixing is exact on quantised data."""
    id: str
    make: object
    reference: object
    uses_center: bool
    exact: bool


def _stages(specs, X, center_value):
    out = []
    for name, value in specs:
        if name == "nnm":
            out.append(fedsec.pre.NNM(value))
        elif name == "bucketing":
            out.append(fedsec.pre.Bucketing(*value))
        elif name == "arc":
            out.append(fedsec.pre.ARC(value, center=center_value))
        else:
            out.append(fedsec.pre.Clipping(value, center=center_value))
    return out[0] if len(out) == 1 else out


def _reference_chain(specs, X, center):
    for name, value in specs:
        if name == "nnm":
            X = ref.mixed(X, ref.nnm_matrix(X, value))
        elif name == "bucketing":
            X = ref.mixed(X, ref.bucketing_matrix(len(X), *value))
        elif name == "arc":
            X = ref.mixed(X, ref.arc_matrix(X, value, center), center)
        else:
            X = ref.mixed(X, ref.clipping_matrix(X, value, center), center)
    return X


def _case(id, specs, uses_center=False):
    """``specs``: (name, parameter) stages; a clipping stage's c None means the median norm of
    the data it sees (so some updates are clipped, some not)."""
    exact = all(name in ("nnm", "bucketing") for name, _ in specs)

    def resolve(X, center64):
        out, Y = [], X
        for name, value in specs:
            if name == "clipping" and value is None:
                value = _median_norm(Y, center64)
            out.append((name, value))
            Y = _reference_chain([(name, value)], Y, center64)
        return out

    return PreCase(
        id,
        lambda X, center, center64=None: _stages(resolve(X, center64), X, center),
        lambda X, center64: _reference_chain(resolve(X, center64), X, center64),
        uses_center, exact)


PRE_CASES = [
    _case("nnm", [("nnm", 1)]),
    _case("bucketing2", [("bucketing", (2, 5))]),
    _case("bucketing4", [("bucketing", (4, 11))]),
    _case("arc", [("arc", 2)]),
    _case("clipping_center", [("clipping", None)], uses_center=True),
    _case("bucketing_then_arc", [("bucketing", (2, 3)), ("arc", 1)], uses_center=True),
    _case("nnm_then_clipping", [("nnm", 1), ("clipping", None)]),
]
PRE_IDS = [c.id for c in PRE_CASES]


def _pre_case(case_id):
    return next(c for c in PRE_CASES if c.id == case_id)


def _prepared(case: PreCase, n, d, dtype="float32", device="cpu", form="tensor"):
    """(X, center64, pre object, mixed float64 reference) for a case."""
    seed = seed_of(case.id, n, d)
    X = quantised_cloud(seed, n, d)
    center64 = _center(X, seed) if case.uses_center else None
    center = _one(center64, form, dtype, device) if case.uses_center else None
    pre = case.make(X, center, center64)
    return X, center64, pre, case.reference(X, center64)


# --- matrices ------------------------------------------------------------------------------------

@pytest.mark.parametrize("case_id", PRE_IDS)
@pytest.mark.parametrize("n,d", SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_matrix_matches_reference(case_id, n, d, dtype, backend):
    case = _pre_case(case_id)
    X, center64, pre, _ = _prepared(case, n, d, dtype, backend.device)
    got = fedsec.pre.matrix(_tensor(X, dtype, backend.device), pre, backend=backend.kind)
    # The reference chain's matrix over the clients: the product of its stages' matrices.
    stages = pre if isinstance(pre, list) else [pre]
    want, Y = np.eye(n), X
    for stage in stages:
        if isinstance(stage, fedsec.pre.NNM):
            M = ref.nnm_matrix(Y, stage.f)
        elif isinstance(stage, fedsec.pre.Bucketing):
            M = ref.bucketing_matrix(len(Y), stage.s, stage.seed)
        elif isinstance(stage, fedsec.pre.ARC):
            M = ref.arc_matrix(Y, stage.f, center64)
        else:
            M = ref.clipping_matrix(Y, stage.c, center64)
        want, Y = M @ want, ref.mixed(Y, M, center64 if stage.clips else None)
    what = f"{case_id} n={n} d={d} dtype={dtype} backend={backend.id}"
    assert got.shape == want.shape, what
    if case.exact or not isinstance(pre, list):
        # One stage sees exact Gram entries (quantised data): the same neighbours, buckets,
        # norms and factors, to the last bit.
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        # A later stage sees E G E^T, whose float64 roundings ((2m + 2) 2^-53 relative, m <= 18
        # sources) move its clipping factors by far less than 1e-12.
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=what)


def _t64(rows, backend):
    return torch.tensor(rows, dtype=torch.float64, device=backend.device)


def test_nnm_on_four_points_by_hand(backend):
    # Points 0, 1, 3, 10 on a line, f = 2: each averages itself and its nearest other point.
    # 0 -> {0, 1}; 1 -> {1, 0} (distance 1 < 2); 3 -> {3, 1} (2 < 7); 10 -> {10, 3}.
    X = _t64([[0.0], [1.0], [3.0], [10.0]], backend)
    M = fedsec.pre.matrix(X, fedsec.pre.NNM(2), backend=backend.kind)
    np.testing.assert_array_equal(M, [[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0.5, 0.5, 0],
                                      [0, 0, 0.5, 0.5]])
    mixed = fedsec.pre.apply(X, fedsec.pre.NNM(2), backend=backend.kind)
    np.testing.assert_array_equal(mixed.cpu().numpy(), [[0.5], [0.5], [2.0], [6.5]])


def test_nnm_distance_tie_goes_to_the_lower_index(backend):
    # 0, -1, 1: point 0 is at distance 1 from both others; f = 1 keeps itself and one: -1
    # (index 1) before 1 (index 2). Points -1 and 1 each take 0 (distance 1 < 2).
    M = fedsec.pre.matrix(_t64([[0.0], [-1.0], [1.0]], backend), fedsec.pre.NNM(1),
                          backend=backend.kind)
    np.testing.assert_array_equal(M, [[0.5, 0.5, 0], [0.5, 0.5, 0], [0.5, 0, 0.5]])


def _on_axes(norms):
    """Points with the given norms, in different directions of a 3-D space."""
    directions = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)
    return directions[:len(norms)] * np.asarray(norms, float)[:, None]


def test_arc_by_hand(backend):
    # Norms 1, 2, 3, 4, 10 with f = 1: k = floor(2 * 1/5 * 4) = 1, so the largest (10) is
    # clipped to the second largest, 4: factor 0.4.
    X = _t64(_on_axes([1, 2, 3, 4, 10]), backend)
    M = fedsec.pre.matrix(X, fedsec.pre.ARC(1), backend=backend.kind)
    np.testing.assert_allclose(M, np.diag([1, 1, 1, 1, 0.4]), rtol=1e-15, atol=0)
    # f = 2: k = floor(2 * 2/5 * 3) = 2: 10 and 4 clipped to 3.
    M = fedsec.pre.matrix(X, fedsec.pre.ARC(2), backend=backend.kind)
    np.testing.assert_allclose(M, np.diag([1, 1, 1, 0.75, 0.3]), rtol=1e-15, atol=0)


def test_clipping_around_a_center_by_hand(backend):
    # Around c = (1, 1, 1), norms 1, 2, 3, 4, 10 and c = 2.5: factors 1, 1, 5/6, 5/8, 1/4; the
    # mixed points are c + s (x - c).
    offsets = _on_axes([1, 2, 3, 4, 10])
    X = _t64(offsets + 1.0, backend)
    center = _t64([1.0, 1.0, 1.0], backend)
    pre = fedsec.pre.Clipping(2.5, center=center)
    M = fedsec.pre.matrix(X, pre, backend=backend.kind)
    scale = np.array([1, 1, 5 / 6, 5 / 8, 1 / 4])
    np.testing.assert_allclose(M, np.diag(scale), rtol=1e-14, atol=0)
    mixed = fedsec.pre.apply(X, pre, backend=backend.kind).cpu().numpy()
    np.testing.assert_allclose(mixed, 1.0 + scale[:, None] * offsets, rtol=1e-14, atol=1e-15)


def test_bucketing_permutation_comes_from_the_seed(backend):
    X = _tensor(quantised_cloud(1, 9, 5), "float64", backend.device)
    first = fedsec.pre.matrix(X, fedsec.pre.Bucketing(2, seed=7), backend=backend.kind)
    again = fedsec.pre.matrix(X * 3 + 1, fedsec.pre.Bucketing(2, seed=7), backend=backend.kind)
    np.testing.assert_array_equal(first, again)  # the data does not matter, the seed does
    pi = np.random.default_rng(7).permutation(9)
    want = np.zeros((5, 9))
    for b in range(5):
        want[b, pi[2 * b:2 * b + 2]] = 1.0 / len(pi[2 * b:2 * b + 2])  # the last bucket: 1
    np.testing.assert_array_equal(first, want)
    other = fedsec.pre.matrix(X, fedsec.pre.Bucketing(2, seed=8), backend=backend.kind)
    assert not np.array_equal(first, other)


# --- every rule with pre= --------------------------------------------------------------------------

@dataclass(frozen=True)
class RuleSpec:
    id: str
    kwargs: object     # n' -> the rule's keyword arguments, or None when n' does not allow it
    reference: object  # (mixed X, kwargs) -> float64 answer
    kind: str          # "combine", "select", "closest", "scores", "iterative"


def _tau(Y):
    D = ref.pairwise_sq_distances(Y)
    nonzero = np.sqrt(D[D > 0])
    return 0.5 * float(np.median(nonzero)) if nonzero.size else 1.0


RULE_SPECS = [
    RuleSpec("mean", lambda m: {}, lambda Y, k: ref.mean(Y), "combine"),
    RuleSpec("median", lambda m: {}, lambda Y, k: ref.median(Y), "select"),
    RuleSpec("trimmed_mean", lambda m: {"beta": 0.2}, lambda Y, k: ref.trimmed_mean(Y, 0.2), "select"),
    RuleSpec("meamed", lambda m: {"f": (m - 1) // 2}, lambda Y, k: ref.meamed(Y, k["f"]), "closest"),
    RuleSpec("krum", lambda m: {"f": 1} if m > 4 else None, lambda Y, k: ref.krum(Y, 1), "combine"),
    RuleSpec("multi_krum", lambda m: {"f": 1, "m": 2} if m > 4 else None,
             lambda Y, k: ref.krum(Y, 1, 2), "combine"),
    RuleSpec("krum_scores", lambda m: {"f": 1} if m > 4 else None,
             lambda Y, k: ref.krum_scores(Y, 1), "scores"),
    RuleSpec("geometric_median", lambda m: {}, lambda Y, k: ref.geometric_median(Y), "iterative"),
    RuleSpec("centered_clip", lambda m: {"iters": 2},
             lambda Y, k: ref.centered_clip(Y, k["tau"], 2), "iterative"),
    RuleSpec("bulyan", lambda m: {"f": 1} if m >= 7 else ({"f": 0} if m >= 3 else None),
             lambda Y, k: ref.bulyan(Y, k["f"]), "closest"),
]


def _rule_function(spec):
    return getattr(fedsec, "krum" if spec.id == "multi_krum" else spec.id)


def _composition_cases():
    out = []
    for case in PRE_CASES:
        for spec in RULE_SPECS:
            for n, d in SHAPES:
                for dtype in ("float32", "float64") if d < 100 else ("float32",):
                    out.append(pytest.param(case.id, spec.id, n, d, dtype,
                                            id=f"{case.id}-{spec.id}-n{n}-d{d}-{dtype}"))
    return out


def _sources_diam2(X, center64):
    """The largest squared distance among the clients and the chain's center (zero for a
    clipping chain without one): the Gram entries' error scale."""
    points = X if center64 is None else np.vstack([X, center64])
    points = np.vstack([points, np.zeros(X.shape[1])])
    return float(ref.pairwise_sq_distances(points).max())


def _check_composition(case, spec, X, center64, Y, out, info, dtype, what):
    n, d = X.shape
    m = len(Y)
    kwargs = spec.kwargs(m)
    if spec.id == "centered_clip":
        kwargs = dict(kwargs, tau=_tau(Y))
    scale = max(float(np.abs(X).max()), float(np.abs(Y).max()))
    # Mixing reads up to n sources, the rule combines up to n' mixed values.
    atol = combine_atol(dtype, n + m, scale)
    if spec.kind == "scores":
        got = np.asarray(out, dtype=np.float64)
        diam2 = max(_sources_diam2(X, center64), float(ref.pairwise_sq_distances(Y).max()))
        tol = (m - kwargs["f"] - 2) * (distance_atol(dtype, d, diam2) + d * eps("float64") * diam2)
        np.testing.assert_allclose(got, spec.reference(Y, kwargs), rtol=0, atol=tol, err_msg=what)
        return
    got = to_float64(out, "tensor")
    want = spec.reference(Y, kwargs)
    if spec.kind == "iterative":
        # The solvers' float64 arithmetic on E G E^T, as in test_rules_reference (1e-9 of the
        # diameter), beside the combination's rounding.
        atol = atol + 1e-9 * math.sqrt(float(ref.pairwise_sq_distances(Y).max()))
    if spec.kind == "closest":
        S = Y[ref.bulyan_selection(Y, kwargs["f"])] if spec.id == "bulyan" else Y
        keep = len(S) - 2 * kwargs["f"] if spec.id == "bulyan" else len(S) - kwargs["f"]
        alternative = bulyan_near_tie_alternative(S, keep, dtype)
        ok = (np.abs(got - want) <= atol) | (np.abs(got - alternative) <= atol)
        assert ok.all(), (f"{what}: {int((~ok).sum())} coordinates off; first at "
                          f"{int(np.flatnonzero(~ok)[0])}: got {got[~ok][0]!r}, expected "
                          f"{want[~ok][0]!r}")
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=what)
    if spec.kind in ("combine", "iterative"):
        # info.coefficients are over the clients given: the output is sum_i c_i x_i plus the
        # remainder on the chain's center (zero without one).
        c = info.coefficients
        assert c.shape == (n,), what
        rebuilt = c @ X + ((1.0 - c.sum()) * center64 if center64 is not None else 0.0)
        np.testing.assert_allclose(got, rebuilt, rtol=0, atol=atol + combine_atol(dtype, n, scale),
                                   err_msg=what + " (from info.coefficients)")
        assert set(np.flatnonzero(c)) <= set(info.used), what


@pytest.mark.parametrize("case_id,rule,n,d,dtype", _composition_cases())
def test_rule_with_pre_matches_reference_on_mixed_updates(case_id, rule, n, d, dtype, backend):
    case = _pre_case(case_id)
    spec = next(s for s in RULE_SPECS if s.id == rule)
    X, center64, pre, Y = _prepared(case, n, d, dtype, backend.device)
    kwargs = spec.kwargs(len(Y))
    if kwargs is None:
        pytest.skip(f"{rule} has no valid parameters for n'={len(Y)} mixed updates")
    if rule == "centered_clip":
        kwargs = dict(kwargs, tau=_tau(Y))
    what = f"{rule}({kwargs}) pre={case_id} n={n} n'={len(Y)} d={d} dtype={dtype} backend={backend.id}"
    out, info = _rule_function(spec)(_tensor(X, dtype, backend.device), **kwargs, pre=pre,
                                     backend=backend.kind, return_info=True)
    if spec.kind != "scores":
        assert isinstance(out, torch.Tensor) and out.dtype == TORCH_DTYPES[dtype], what
    _check_composition(case, spec, X, center64, Y, out, info, dtype, what)


@pytest.mark.parametrize("form", ["tensor-list", "state_dict", "ndarray", "ndarray-state_dict"])
@pytest.mark.parametrize("rule", ["median", "krum", "meamed", "centered_clip"])
@pytest.mark.parametrize("case_id", ["bucketing_then_arc", "nnm"])
def test_input_forms(form, rule, case_id, backend):
    """Every input form gives the same answer (the center, too, in the updates' form)."""
    if not form_supported(form, "float32", backend.device):
        pytest.skip(f"{form} is not available on {backend.device}")
    case = _pre_case(case_id)
    spec = next(s for s in RULE_SPECS if s.id == rule)
    n, d = SHAPES[1]
    X, center64, pre, Y = _prepared(case, n, d, "float32", backend.device, form)
    kwargs = spec.kwargs(len(Y))
    if rule == "centered_clip":
        kwargs = dict(kwargs, tau=_tau(Y))
    what = f"{rule} pre={case_id} form={form} backend={backend.id}"
    out, info = _rule_function(spec)(to_form(X, form, "float32", backend.device), **kwargs,
                                     pre=pre, backend=backend.kind, return_info=True)
    _check_composition(case, spec, X, center64, Y, to_float64(out, form, d), info, "float32", what)


@pytest.mark.parametrize("form", ["tensor", "tensor-list", "state_dict", "ndarray-list"])
def test_apply_returns_the_mixed_updates_in_the_input_form(form, backend):
    if not form_supported(form, "float32", backend.device):
        pytest.skip(f"{form} is not available on {backend.device}")
    case = _pre_case("bucketing_then_arc")
    n, d = SHAPES[1]
    X, center64, pre, Y = _prepared(case, n, d, "float32", backend.device, form)
    mixed = fedsec.pre.apply(to_form(X, form, "float32", backend.device), pre, backend=backend.kind)
    assert len(mixed) == len(Y) == 9
    got = np.stack([to_float64(row, form, d) for row in mixed])
    np.testing.assert_allclose(got, Y, rtol=0, atol=combine_atol("float32", n, float(np.abs(X).max())))


def test_a_list_is_applied_in_order(backend):
    """[NNM, Bucketing] and [Bucketing, NNM] are different maps, each the reference's."""
    X = quantised_cloud(3, 17, 40)
    T = _tensor(X, "float64", backend.device)
    nnm, buckets = fedsec.pre.NNM(1), fedsec.pre.Bucketing(4, seed=2)
    first = fedsec.median(T, pre=[nnm, buckets], backend=backend.kind).cpu().numpy()
    second = fedsec.median(T, pre=[buckets, nnm], backend=backend.kind).cpu().numpy()
    Y1 = ref.mixed(ref.mixed(X, ref.nnm_matrix(X, 1)), ref.bucketing_matrix(17, 4, 2))
    B = ref.mixed(X, ref.bucketing_matrix(17, 4, 2))
    Y2 = ref.mixed(B, ref.nnm_matrix(B, 1))
    np.testing.assert_allclose(first, ref.median(Y1), rtol=0, atol=1e-15)
    np.testing.assert_allclose(second, ref.median(Y2), rtol=0, atol=1e-15)
    assert not np.allclose(first, second)


# --- the mixed selection kernel ---------------------------------------------------------------------

def _dyadic_mixing(rng, n_out, n):
    """Rows averaging 1, 2, 4 or 8 distinct inputs (at most n): exact in every accumulation."""
    M = np.zeros((n_out, n))
    for p in range(n_out):
        size = int(rng.choice([s for s in (1, 2, 4, 8) if s <= n]))
        M[p, rng.choice(n, size, replace=False)] = 1.0 / size
    return M


# Block widths in elements: kColumns (4) vectors of 16 float32 / 8 float64 lanes (AVX-512),
# half that with AVX2, a quarter on the baseline; these lengths leave a tail in each.
TAIL_DS = (1, 15, 17, 63, 65, 259)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("d", TAIL_DS)
@pytest.mark.parametrize("n,n_out", [(1, 1), (3, 7), (9, 5), (17, 17)])
def test_mixed_select_kernel(dtype, d, n, n_out, backend):
    rng = np.random.default_rng(seed_of("mixed_select", n, n_out, d))
    be = pick_backend(backend.kind, torch.device(backend.device))
    what = f"mixed_select n={n} n_out={n_out} d={d} dtype={dtype} backend={backend.id}"
    ops = [(SelectOp.MEDIAN, 0, lambda Y: np.median(Y, axis=0)),
           (SelectOp.TRIMMED_MEAN, n_out // 5, lambda Y: ref.trimmed_mean(Y, 0.2 if n_out >= 5 else 0.0)),
           (SelectOp.CLOSEST_MEDIAN, n_out - (n_out - 1) // 2,
            lambda Y: ref.closest_to_median_mean(Y, n_out - (n_out - 1) // 2))]
    # Exact: quantised values mixed by powers of two; only the output's rounding is allowed.
    X = quantised_cloud(seed_of("mixed_select", n, d), n, d)
    M = _dyadic_mixing(rng, n_out, n)
    rows = [_tensor(x, dtype, backend.device) for x in X]
    scale = float(np.abs(X).max())
    for op, k, reference in ops:
        out = torch.empty(d, dtype=TORCH_DTYPES[dtype], device=backend.device)
        flags = be.new_flags(n)
        be.mixed_select(rows, M, op, k, out, flags)
        assert not be.flags_result(flags).any(), what
        np.testing.assert_allclose(to_float64(out, "tensor"), reference(M @ X), rtol=0,
                                   atol=combine_atol(dtype, n_out, scale), err_msg=f"{what} {op}")
    # Real weights on continuous data, for the order statistics (1-Lipschitz in each mixed
    # value, whose accumulation errs by at most (n + 1) acc_eps scale).
    X = continuous_cloud(seed_of("mixed_select", n, d), n, d, dtype)
    M = rng.uniform(0, 1, (n_out, n)) * (rng.uniform(size=(n_out, n)) < 0.7)
    M[np.arange(n_out), rng.integers(0, n, n_out)] += 0.1  # no empty row
    M /= M.sum(axis=1, keepdims=True)
    rows = [_tensor(x, dtype, backend.device) for x in X]
    scale = float(np.abs(X).max())
    for op, k, reference in ops[:2]:
        out = torch.empty(d, dtype=TORCH_DTYPES[dtype], device=backend.device)
        be.mixed_select(rows, M, op, k, out, be.new_flags(n))
        np.testing.assert_allclose(to_float64(out, "tensor"), reference(M @ X), rtol=0,
                                   atol=combine_atol(dtype, n + n_out, scale), err_msg=f"{what} {op}")


@pytest.mark.parametrize("dtype,top", [("float32", 3e38), ("float64", 1.5e308)])
def test_mixed_select_overflow_is_redone_rescaled(dtype, top, backend):
    """x + x - x overflows in the accumulation type although the mixed value is x: the kernel
    redoes the coordinates from the inputs scaled by a power of two (exact), so the result is
    the finite x, and no input is flagged."""
    be = pick_backend(backend.kind, torch.device(backend.device))
    d = 37
    x = torch.full((d,), top, dtype=TORCH_DTYPES[dtype], device=backend.device)
    x[::2] = -top
    rows = [x.clone(), x.clone(), x.clone()]
    M = np.array([[1.0, 1.0, -1.0], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    for op, k in ((SelectOp.MEDIAN, 0), (SelectOp.TRIMMED_MEAN, 1), (SelectOp.CLOSEST_MEDIAN, 2)):
        out = torch.empty_like(x)
        flags = be.new_flags(3)
        be.mixed_select(rows, M, op, k, out, flags)
        assert not be.flags_result(flags).any()
        torch.testing.assert_close(out, x, rtol=0, atol=0, msg=f"{op} {backend.id}")


def test_mixed_select_flags_the_non_finite_rows(backend):
    be = pick_backend(backend.kind, torch.device(backend.device))
    X = torch.ones((4, 50), dtype=torch.float32, device=backend.device)
    X[2, 33] = float("nan")
    X[3, 7] = float("inf")
    flags = be.new_flags(4)
    M = np.full((2, 4), 0.25)
    be.mixed_select(list(X), M, SelectOp.MEDIAN, 0, torch.empty(50, device=backend.device), flags)
    assert be.flags_result(flags).tolist() == [False, False, True, True]


def test_mixed_select_binding_names_bad_arguments():
    from fedsec import _core

    rows = [np.zeros(4, dtype=np.float32) for _ in range(3)]
    out = np.zeros(4, dtype=np.float32)
    address = [r.__array_interface__["data"][0] for r in rows]
    out_address = out.__array_interface__["data"][0]
    f32, median = _core.DType.float32, _core.SelectOp.MEDIAN
    with pytest.raises(ValueError, match=names("mixing", "2 x 3", "got 5")):
        _core.mixed_select(address, [0.5] * 5, 2, 4, f32, median, 0, out_address)
    with pytest.raises(ValueError, match=names(r"mixing\[1, 2\]", "not finite")):
        _core.mixed_select(address, [0.0] * 5 + [float("nan")], 2, 4, f32, median, 0, out_address)
    with pytest.raises(ValueError, match=names("n_out", ">= 1", "got 0")):
        _core.mixed_select(address, [], 0, 4, f32, median, 0, out_address)
    with pytest.raises(ValueError, match=names("trimmed_mean", "2k < n", "k=1", "n=2")):
        _core.mixed_select(address, [1 / 3] * 6, 2, 4, f32, _core.SelectOp.TRIMMED_MEAN, 1,
                           out_address)


# --- non-finite clients -------------------------------------------------------------------------------

@pytest.mark.parametrize("rule,kwargs", [("median", {}), ("krum", {"f": 1}), ("mean", {}),
                                         ("meamed", {"f": 1})])
@pytest.mark.parametrize("case_id", ["nnm", "bucketing2", "arc"])
def test_nonfinite_clients_are_excluded_before_mixing(rule, kwargs, case_id, backend):
    """A client with NaN/Inf is excluded, and M is built over the others: the result is the
    rule with pre= on the finite clients alone (bucketing then has ceil(10 / 2) = 5 rows, not
    6)."""
    case = _pre_case(case_id)
    X = quantised_cloud(seed_of("nonfinite", case_id), 11, 30)
    pre = case.make(X, None)
    bad = _tensor(X, "float32", backend.device)
    bad[4, 3] = float("nan")
    finite = torch.cat([bad[:4], bad[5:]])
    fn = getattr(fedsec, rule)
    out, info = fn(bad, **kwargs, pre=pre, backend=backend.kind, return_info=True)
    want, want_info = fn(finite, **kwargs, pre=pre, backend=backend.kind, return_info=True)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    assert list(info.excluded) == [4]
    assert 4 not in info.used
    expected_used = tuple(u + (u >= 4) for u in want_info.used)
    assert info.used == expected_used


# --- what the papers report ------------------------------------------------------------------------

def _heterogeneous(seed, honest=20, byzantine=2, d=50, shift=2.0, noise=0.1):
    """Two groups of honest clients whose means are -shift and +shift along one direction
    (non-IID: their average, 0, is no group's), with ``byzantine`` copies of a client of the
    second group appended (the mimic attack of Karimireddy et al. 2022: no outlier, only
    weight on one side). Returns (updates, honest mean)."""
    rng = np.random.default_rng(seed)
    direction = np.zeros(d)
    direction[0] = shift
    groups = np.repeat([-1.0, 1.0], honest // 2)[:, None] * direction
    H = groups + noise * rng.standard_normal((honest, d))
    X = np.vstack([H, np.repeat(H[-1:], byzantine, axis=0)])
    return X, H.mean(axis=0)


def test_nnm_and_bucketing_fix_krum_on_heterogeneous_clients():
    """Krum picks one client, so on non-IID clients it lands in a group, about `shift` from the
    honest mean (Karimireddy et al. 2022, Allouah et al. 2023). Mixing first makes the points
    Krum chooses from averages across groups: NNM(f) averages n - f = 20 of the 22 points, and
    bucketing by s = 2 pairs clients of both groups. Over 5 seeds each must bring Krum's mean
    error to at most half of Krum's alone."""
    f = 2
    errors = {"krum": [], "nnm": [], "bucketing": []}
    for seed in range(5):
        X, honest_mean = _heterogeneous(seed)
        T = torch.tensor(X)
        for name, pre in (("krum", None), ("nnm", fedsec.pre.NNM(f)),
                          ("bucketing", fedsec.pre.Bucketing(2, seed=seed))):
            out = fedsec.krum(T, f, pre=pre).numpy()
            errors[name].append(np.linalg.norm(out - honest_mean))
    means = {k: float(np.mean(v)) for k, v in errors.items()}
    assert means["nnm"] <= 0.5 * means["krum"], means
    assert means["bucketing"] <= 0.5 * means["krum"], means


def test_arc_bounds_what_large_updates_move_the_mean():
    """ARC clips the k = floor(2 (f/n)(n - f)) >= f largest updates (f < n/2) to the (k+1)-th
    largest norm, an honest one (Allouah et al. 2024): f attackers of norm 1e4 then move the
    mean of the n updates away from the honest updates' sum / n by at most (k / n) times the
    largest honest norm (each attacker adds at most that norm, each clipped honest update loses
    at most it), where the plain mean moves by about (f / n) 1e4."""
    n, f, d = 20, 4, 30
    rng = np.random.default_rng(0)
    H = 1.0 + rng.standard_normal((n - f, d))
    X = np.vstack([H, np.full((f, d), 1e4 / math.sqrt(d))])
    T = torch.tensor(X)
    with_arc = fedsec.mean(T, pre=fedsec.pre.ARC(f)).numpy()
    honest_mean = H.mean(axis=0)
    k = 2 * f * (n - f) // n
    bound = k / n * np.linalg.norm(H, axis=1).max()
    assert np.linalg.norm(with_arc - (n - f) / n * honest_mean) <= bound
    assert np.linalg.norm(fedsec.mean(T).numpy() - honest_mean) > 100 * bound


def test_clipping_bounds_each_update():
    """Static clipping: every mixed update has norm at most c around its center."""
    X = quantised_cloud(5, 12, 40) * 4
    center = torch.tensor(X[0])
    mixed = fedsec.pre.apply(torch.tensor(X), fedsec.pre.Clipping(1.5, center=center)).numpy()
    norms = np.linalg.norm(mixed - X[0], axis=1)
    assert (norms <= 1.5 * (1 + 1e-12)).all() and (norms > 1.4).sum() >= 6, norms


# --- bad input ---------------------------------------------------------------------------------------

def test_parameters_are_checked_when_built():
    with pytest.raises(ValueError, match=names("NNM.f", number(-1), ">= 0")):
        fedsec.pre.NNM(-1)
    with pytest.raises(TypeError, match=names("NNM.f", "integer")):
        fedsec.pre.NNM(1.5)
    with pytest.raises(ValueError, match=names("Bucketing.s", number(0), ">= 1")):
        fedsec.pre.Bucketing(0)
    with pytest.raises(ValueError, match=names("Bucketing.seed", number(-2))):
        fedsec.pre.Bucketing(2, seed=-2)
    with pytest.raises(ValueError, match=names("ARC.f", number(-3))):
        fedsec.pre.ARC(-3)
    with pytest.raises(ValueError, match=names("Clipping.c", number(0), "positive")):
        fedsec.pre.Clipping(0)
    with pytest.raises(ValueError, match=names("Clipping.c", "finite")):
        fedsec.pre.Clipping(float("inf"))


def test_impossible_counts_name_the_numbers(backend):
    X = _tensor(quantised_cloud(0, 5, 4), "float32", backend.device)
    with pytest.raises(ValueError, match=names("median", "n - f >= 1", r"NNM\(f=5\)", "n=5")):
        fedsec.median(X, pre=fedsec.pre.NNM(5), backend=backend.kind)
    with pytest.raises(ValueError, match=names("krum", "f <= n", r"ARC\(f=6\)", "n=5")):
        fedsec.krum(X, 1, pre=fedsec.pre.ARC(6), backend=backend.kind)
    # The rule's own count is of the mixed updates: 5 clients in buckets of 2 are 3 rows.
    with pytest.raises(ValueError, match=names("krum", "n > 2f", "n=3", "f=1")):
        fedsec.krum(X, 1, pre=fedsec.pre.Bucketing(2), backend=backend.kind)
    # After exclusions, on the clients left: 4 finite clients, NNM(f=4) has none to average.
    X[0, 0] = float("nan")
    with pytest.raises(ValueError, match=names("median", "n - f >= 1", "n=4", "excluded")):
        fedsec.median(X, pre=fedsec.pre.NNM(4), backend=backend.kind)


def test_bad_pre_values():
    X = torch.zeros(4, 3)
    with pytest.raises(TypeError, match=names("pre", "NNM, Bucketing, ARC", "str")):
        fedsec.median(X, pre="nnm")
    with pytest.raises(TypeError, match=names(r"pre\[1\]", "int")):
        fedsec.median(X, pre=[fedsec.pre.NNM(1), 3])
    a, b = torch.zeros(3), torch.ones(3)
    with pytest.raises(ValueError, match=names("pre", "one center")):
        fedsec.median(X, pre=[fedsec.pre.ARC(1, center=a), fedsec.pre.Clipping(1.0, center=b)])
    with pytest.raises(ValueError, match=names("center", "shape")):
        fedsec.median(X, pre=fedsec.pre.ARC(1, center=torch.zeros(5)))
    with pytest.raises(ValueError, match=names("weights", "pre=")):
        fedsec.mean(X, weights=[1, 2, 3, 4], pre=fedsec.pre.NNM(1))
