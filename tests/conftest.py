"""The fixtures of fedsec's tests; the helpers they share are the importable ``support``
package beside this file.

- ``backend``: every test that takes it runs on native-cpu (and its lower instruction sets),
  torch-cpu, native-cuda and torch-cuda (``support.aggregation.Backend``).
- ``device``: cpu and cuda, for tests that do not depend on the backend.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fedsec  # noqa: E402
from support.aggregation import BACKEND_IDS, Backend, require_cuda_or_skip  # noqa: E402


@pytest.fixture(params=BACKEND_IDS)
def backend(request):
    kind, device, *isa = request.param.split("-")
    if device == "cuda":
        require_cuda_or_skip()
    elif kind == "native" and not fedsec.build_info()["native"]:
        # The native CPU core is the product: a missing build is a failure, never a skip.
        pytest.fail(f"fedsec's native core is not importable: {fedsec.build_info().get('native_error')}")
    if not isa:
        yield Backend(request.param, kind, device)
        return
    info = fedsec.build_info()
    if isa[0] not in info["cpu_isas"]:
        pytest.skip(f"this processor does not run the {isa[0]} kernels ({info['cpu_isas']})")
    if isa[0] == info["cpu_isas"][0]:
        pytest.skip(f"{isa[0]} is this processor's best: native-cpu runs it")
    best = info["cpu_isa"]
    fedsec.set_cpu_isa(isa[0])
    try:
        yield Backend(request.param, kind, device)
    finally:
        fedsec.set_cpu_isa(best)


@pytest.fixture(params=("cpu", "cuda"))
def device(request) -> str:
    """A device for tests that do not depend on the backend (the default, "auto", is used)."""
    if request.param == "cuda":
        require_cuda_or_skip()
    return request.param
