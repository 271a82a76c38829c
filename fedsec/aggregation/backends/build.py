"""What this installation of fedsec was built with and can use."""
from __future__ import annotations

import numbers
from importlib.metadata import PackageNotFoundError, version

from . import native


def build_info() -> dict:
    """``native``: the C++ core imported; ``cuda_built``: compiled with the CUDA kernels;
    ``cuda_devices``: usable CUDA devices now (0 without a driver or GPU; never raises);
    ``cuda_status``: why none is usable; ``cpu_isa``: the vector instruction set the CPU kernels
    run with (the best this processor runs, unless FEDSEC_ISA or ``set_cpu_isa`` chose another);
    ``cpu_isas``: those it can run with, best first; ``num_threads``: CPU threads the kernels
    use."""
    core = native._core
    try:
        pkg_version = version("fedsec")
    except PackageNotFoundError:
        pkg_version = "unknown"
    info = {"version": pkg_version, "native": core is not None,
            "native_error": native.IMPORT_ERROR, "cuda_built": False, "cuda_devices": 0,
            "cuda_status": "native core not imported", "cpu_isa": None, "cpu_isas": [],
            "num_threads": None}
    if core is not None:
        info.update(cuda_built=bool(core.cuda_built()), cuda_devices=int(core.cuda_device_count()),
                    cuda_status=core.cuda_device_status(), cpu_isa=core.cpu_isa(),
                    cpu_isas=list(core.cpu_isas()))
        native.ensure_threads()
        info["num_threads"] = int(core.num_threads())
    return info


def set_num_threads(threads: int) -> None:
    """Threads the native CPU kernels use (default: fedsec's thread budget, FEDSEC_NUM_THREADS or
    the cores the process may use; fedsec/threads.py); a positive integer."""
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        raise TypeError(f"threads must be an integer; got {threads!r}")
    if native._core is None:
        raise RuntimeError(native.IMPORT_ERROR)
    native.set_num_threads(int(threads))  # ValueError below 1


def set_cpu_isa(name: str) -> None:
    """Run the native CPU kernels compiled for instruction set ``name`` (``baseline``, ``avx2``
    or ``avx512``; one of ``build_info()["cpu_isas"]``), e.g. to measure AVX2 on an AVX-512
    machine. FEDSEC_ISA=name does the same for a whole process."""
    native.set_cpu_isa(name, "name")
