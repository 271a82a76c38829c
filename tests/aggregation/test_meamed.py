"""fedsec.meamed, the mean around the median (Xie, Koyejo, Gupta 2018), on every backend.

Against the float64 reference (fedsec.aggregation.reference.meamed: per coordinate the mean of
the n - f values closest to the median, the larger value dropped on a distance tie) on the
quantised data of conftest.quantised_cloud: the values and every sum and comparison the
selection makes are exact in each dtype, so the kept values are the reference's, ties included,
and only the mean's rounding is allowed. Plus hand cases, the robustness the paper reports,
non-finite clients and bad input.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fedsec
from support.aggregation import TORCH_DTYPES, combine_atol, names, quantised_cloud, seed_of
from fedsec.aggregation import reference as ref


def _cases():
    out = []
    for n in (1, 2, 3, 5, 17, 64):
        for d in (1, 7, 1000):
            for f in sorted({0, 1, (n - 1) // 2}):
                if n > 2 * f:
                    for dtype in ("float32", "float64", "float16", "bfloat16"):
                        out.append(pytest.param(n, d, f, dtype, id=f"n{n}-d{d}-f{f}-{dtype}"))
    return out


def _tensor(X, dtype, device):
    return torch.from_numpy(np.array(X, dtype=np.float64)).to(TORCH_DTYPES[dtype]).to(device)


@pytest.mark.parametrize("n,d,f,dtype", _cases())
def test_meamed_matches_reference(n, d, f, dtype, backend):
    X = quantised_cloud(seed_of("meamed", n, d), n, d)
    out, info = fedsec.meamed(_tensor(X, dtype, backend.device), f, backend=backend.kind,
                              return_info=True)
    assert out.dtype == TORCH_DTYPES[dtype] and tuple(out.shape) == (d,)
    got = out.detach().to("cpu", torch.float64).numpy()
    np.testing.assert_allclose(got, ref.meamed(X, f), rtol=0,
                               atol=combine_atol(dtype, n - f, float(np.abs(X).max())),
                               err_msg=f"meamed n={n} d={d} f={f} dtype={dtype} backend={backend.id}")
    assert info.used == tuple(range(n)) and info.rule == "meamed"


def _run(rows, f, backend):
    x = torch.tensor(rows, dtype=torch.float64, device=backend.device)
    return fedsec.meamed(x, f, backend=backend.kind).cpu().numpy()


def test_meamed_by_hand(backend):
    # 1, 2, 3, 10, 100 with f = 2: median 3; the 3 closest are 3 (0), 2 (1), 1 (2): mean 2.
    np.testing.assert_array_equal(_run([[1.0], [2.0], [3.0], [10.0], [100.0]], 2, backend), [2.0])
    # 0, 1, 2, 3 with f = 1: median 1.5, distances 1.5, 0.5, 0.5, 1.5; 0 and 3 tie for the
    # third place and the larger, 3, is dropped: (0 + 1 + 2) / 3 = 1.
    np.testing.assert_array_equal(_run([[0.0], [1.0], [2.0], [3.0]], 1, backend), [1.0])
    # f = 0 keeps every value: the mean.
    np.testing.assert_array_equal(_run([[0.0], [1.0], [5.0]], 0, backend), [2.0])


def test_meamed_ignores_far_byzantine_values(backend):
    """Xie et al.: with f < n/2 Byzantine values the median stays among the honest ones, so the
    n - f values closest to it are the honest ones when the Byzantine ones lie farther: meamed
    is then the honest mean (to the rounding of that mean), while the plain mean moves by
    f / n * 1e3."""
    rng = np.random.default_rng(0)
    honest = rng.standard_normal((15, 40))
    X = np.vstack([honest, np.full((4, 40), 1e3)])
    T = torch.tensor(X, device=backend.device)
    got = fedsec.meamed(T, 4, backend=backend.kind).cpu().numpy()
    atol = combine_atol("float64", 15, float(np.abs(honest).max()))
    np.testing.assert_allclose(got, honest.mean(axis=0), rtol=0, atol=atol)
    assert np.abs(fedsec.mean(T, backend=backend.kind).cpu().numpy() - honest.mean(axis=0)).min() > 100


def test_meamed_excludes_nonfinite_clients(backend):
    X = quantised_cloud(3, 9, 20)
    T = torch.tensor(X, device=backend.device)
    T[2, 5] = float("inf")
    out, info = fedsec.meamed(T, 2, backend=backend.kind, return_info=True)
    want = ref.meamed(np.delete(X, 2, axis=0), 2)
    np.testing.assert_allclose(out.cpu().numpy(), want, rtol=0, atol=combine_atol("float64", 6, 4.0))
    assert list(info.excluded) == [2] and 2 not in info.used


def test_meamed_bad_input(backend):
    T = torch.zeros((4, 3), device=backend.device)
    with pytest.raises(ValueError, match=names("meamed", "n > 2f", "n=4", "f=2")):
        fedsec.meamed(T, 2, backend=backend.kind)
    with pytest.raises(ValueError, match=names("f", "-1", ">= 0")):
        fedsec.meamed(T, -1, backend=backend.kind)
    with pytest.raises(TypeError, match=names("f", "integer")):
        fedsec.meamed(T, 1.5, backend=backend.kind)
