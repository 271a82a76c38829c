"""Every aggregator on every backend this machine can run, against the float64 references.

`fedsec selftest` (or `python -m fedsec.aggregation.selftest`) prints one row per rule and backend with the
worst error over seeded random inputs, as a multiple of its tolerance, and exits non-zero when
any is above 1. GPU users should run it once: it is the check that the CUDA kernels agree with
the references on their device. The clustering rules (flame, signguard, clipped_clustering)
are left to the test suite, which checks them on clients whose clusters are well separated
(a clustering of unstructured random clients can flip on rounding).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import pre, reference, rules
from .backends.build import build_info

# (n, d) shapes: edge cases and a size that spans several SIMD blocks and threads.
SHAPES = [(1, 7), (2, 1), (3, 1000), (5, 7), (17, 1000), (64, 65537)]
QUICK_SHAPES = [(3, 7), (17, 1000), (64, 4099)]
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# Unit roundoff of the output dtype.
_EPS = {torch.float32: 2.0**-24, torch.float64: 2.0**-53, torch.float16: 2.0**-11,
        torch.bfloat16: 2.0**-8}


@dataclass(frozen=True)
class Rule:
    name: str
    run: Callable  # (updates, backend) -> value
    expected: Callable  # (float64 array) -> value
    min_n: int = 1
    # Error allowed beyond rounding, relative to the data's magnitude.
    conditioning: float = 0.0


def _rules() -> list[Rule]:
    return [
        Rule("mean", lambda u, b: rules.mean(u, backend=b), reference.mean),
        Rule("median", lambda u, b: rules.median(u, backend=b), reference.median),
        Rule("trimmed_mean(0.2)", lambda u, b: rules.trimmed_mean(u, 0.2, backend=b),
             lambda x: reference.trimmed_mean(x, 0.2)),
        Rule("krum(f=1)", lambda u, b: rules.krum(u, 1, backend=b),
             lambda x: reference.krum(x, 1), min_n=5),
        Rule("multi-krum(f=1, m=n-1)", lambda u, b: rules.krum(u, 1, m=u.shape[0] - 1, backend=b),
             lambda x: reference.krum(x, 1, m=x.shape[0] - 1), min_n=5),
        # At most 20 iterations, stopping only when the coefficients stop changing. Near
        # the minimum the objective is flat to rounding while the iterate still moves by about
        # sqrt(float64 eps) of the scale, hence the conditioning term.
        Rule("geometric_median(20 iters)",
             lambda u, b: rules.geometric_median(u, tol=0.0, max_iter=20, backend=b),
             lambda x: reference.geometric_median(x, tol=0.0, max_iter=20), conditioning=1e-7),
        Rule("bulyan(f=1)", lambda u, b: rules.bulyan(u, 1, backend=b),
             lambda x: reference.bulyan(x, 1), min_n=7),
        Rule("centered_clip(tau=1, 3 iters)",
             lambda u, b: rules.centered_clip(u, 1.0, iters=3, backend=b),
             lambda x: reference.centered_clip(x, 1.0, iters=3)),
        Rule("meamed(f=1)", lambda u, b: rules.meamed(u, 1, backend=b),
             lambda x: reference.meamed(x, 1), min_n=3),
        Rule("mda(f=1)", lambda u, b: rules.mda(u, 1, backend=b),
             lambda x: reference.mda(x, 1), min_n=3),
        Rule("smea(f=1)", lambda u, b: rules.smea(u, 1, backend=b),
             lambda x: reference.smea(x, 1), min_n=3),
        # CAF's weights follow the top eigenvector of the weighted covariance, which moves by
        # the Gram matrix's error over the gap to the next eigenvalue: random clients leave
        # that gap small, hence the conditioning term.
        Rule("caf(f=1)", lambda u, b: rules.caf(u, 1, backend=b),
             lambda x: reference.caf(x, 1), min_n=3, conditioning=1e-5),
        Rule("monna(f=1, trusted=0)", lambda u, b: rules.monna(u, 1, 0, backend=b),
             lambda x: reference.monna(x, 1, 0), min_n=3),
        Rule("dnc(f=1)", lambda u, b: rules.dnc(u, 1, backend=b),
             lambda x: reference.dnc(x, 1), min_n=3),
        # The trust scores are cosines and norm ratios from the float64 Gram matrix, whose
        # rounding (about d * 2^-53 relative) the output inherits, hence the conditioning term.
        Rule("fltrust(server = client 0)",
             lambda u, b: rules.fltrust(u, u[0], backend=b),
             lambda x: reference.fltrust(x, x[0]), conditioning=1e-13),
        Rule("krum(f=1, pre=NNM(1))", lambda u, b: rules.krum(u, 1, pre=pre.NNM(1), backend=b),
             lambda x: reference.krum(reference.mixed(x, reference.nnm_matrix(x, 1)), 1),
             min_n=5),
        Rule("median(pre=NNM(1))", lambda u, b: rules.median(u, pre=pre.NNM(1), backend=b),
             lambda x: reference.median(reference.mixed(x, reference.nnm_matrix(x, 1))),
             min_n=2),
    ]


def _devices() -> list[torch.device]:
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    return devices


def _backends(device: torch.device) -> list[str]:
    info = build_info()
    native = info["native"] and (device.type == "cpu" or info["cuda_devices"] > 0)
    return (["native"] if native else []) + ["torch"]


def _tolerance(x: np.ndarray, dtype: torch.dtype) -> float:
    """Error allowed for an output of ``dtype`` from inputs x: the rounding of the inputs and
    output to dtype, plus float32 accumulation over n terms, scaled by the data's magnitude."""
    n = x.shape[0]
    eps = max(_EPS[dtype], 2.0**-24 if dtype != torch.float64 else 2.0**-53)
    return 8.0 * eps * (1.0 + n**0.5) * max(1.0, float(np.abs(x).max()))


def _check(rule: Rule, device: torch.device, backend: str, dtype: torch.dtype, shapes) -> float:
    worst = 0.0
    for seed, (n, d) in enumerate(shapes):
        if n < rule.min_n:
            continue
        rng = np.random.default_rng(seed)
        x = torch.from_numpy(rng.standard_normal((n, d))).to(dtype)
        x64 = x.double().numpy()  # the reference sees exactly the values the backend sees
        got = rule.run(x.to(device), backend).double().cpu().numpy()
        error = float(np.abs(got - rule.expected(x64)).max())
        allowed = _tolerance(x64, dtype) + rule.conditioning * max(1.0, float(np.abs(x64).max()))
        worst = max(worst, error / allowed)
    return worst


def run_selftest(quick: bool = False, out=sys.stdout) -> bool:
    info = build_info()
    print(f"fedsec {info['version']}: native={info['native']} cpu_isa={info['cpu_isa']} "
          f"cuda_built={info['cuda_built']} cuda_devices={info['cuda_devices']}"
          + (f" ({info['cuda_status']})" if info["cuda_built"] and not info["cuda_devices"] else ""),
          file=out)
    shapes = QUICK_SHAPES if quick else SHAPES
    header = f"{'rule':<32}{'device':<7}{'backend':<8}" + "".join(f"{str(t)[6:]:>10}" for t in DTYPES)
    print(header + f"{'seconds':>9}", file=out)
    checks, failed = 0, []
    for rule in _rules():
        for device in _devices():
            for backend in _backends(device):
                start = time.perf_counter()
                ratios = [_check(rule, device, backend, dtype, shapes) for dtype in DTYPES]
                checks += len(ratios)
                failed += [f"{rule.name} on {device.type}/{backend} in {str(dtype)[6:]}"
                           for dtype, r in zip(DTYPES, ratios) if not r <= 1.0]
                cells = "".join(f"{r:>9.2g}{'!' if not r <= 1 else ' '}" for r in ratios)
                print(f"{rule.name:<32}{device.type:<7}{backend:<8}{cells}"
                      f"{time.perf_counter() - start:>9.1f}", file=out)
    print(f"Cells: worst error / tolerance over the shapes {shapes}; '!' marks a failure.",
          file=out)
    if failed:
        print(f"selftest FAILED: {len(failed)} of {checks} checks disagree with the float64 "
              f"references: {'; '.join(failed)}", file=out)
    else:
        print(f"selftest passed: all {checks} checks agree with the float64 references",
              file=out)
    return not failed


if __name__ == "__main__":
    sys.exit(0 if run_selftest(quick="--quick" in sys.argv) else 1)
