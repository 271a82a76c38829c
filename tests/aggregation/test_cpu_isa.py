"""The CPU kernel table can be chosen: FEDSEC_ISA for a process, fedsec.set_cpu_isa in it; an
instruction set the processor does not run is refused by name. (The reference tests run on every
table through conftest's native-cpu-<isa> backends.)"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import fedsec


def test_build_info_lists_the_tables_this_processor_runs():
    info = fedsec.build_info()
    assert info["cpu_isas"][-1] == "baseline"
    assert info["cpu_isa"] == info["cpu_isas"][0]  # the best, unless chosen otherwise
    assert set(info["cpu_isas"]) <= {"avx512", "avx2", "baseline"}


def test_set_cpu_isa_switches_and_gives_the_same_mean():
    x = np.random.default_rng(0).standard_normal((5, 1000)).astype(np.float32)
    best = fedsec.build_info()["cpu_isa"]
    values = {}
    try:
        for isa in fedsec.build_info()["cpu_isas"]:
            fedsec.set_cpu_isa(isa)
            assert fedsec.build_info()["cpu_isa"] == isa
            values[isa] = fedsec.mean(x, backend="native")
    finally:
        fedsec.set_cpu_isa(best)
    for isa, value in values.items():
        np.testing.assert_allclose(value, x.astype(np.float64).mean(0), rtol=1e-6, atol=1e-6,
                                   err_msg=isa)


@pytest.mark.parametrize("name", ["sse9", "AVX2", ""])
def test_unknown_instruction_sets_are_refused(name):
    with pytest.raises(ValueError, match=rf"name={name!r} is not an instruction set this "
                                         rf"processor runs.*available: .*baseline"):
        fedsec.set_cpu_isa(name)


def test_fedsec_isa_chooses_the_table_of_a_process():
    code = "import fedsec; print(fedsec.build_info()['cpu_isa'])"
    env = dict(os.environ, FEDSEC_ISA="baseline")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True)
    assert done.stdout.strip() == "baseline"
    env["FEDSEC_ISA"] = "neon"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode != 0
    assert "FEDSEC_ISA='neon' is not an instruction set this processor runs" in done.stderr
