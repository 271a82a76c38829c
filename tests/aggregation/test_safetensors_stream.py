"""Client checkpoints given as safetensors paths: every rule's result equals the rule on the same
tensors loaded as state_dicts, bit for bit; bad checkpoints are errors naming the file and the
tensor; and a pass over 7 checkpoints of 24 MiB keeps about one output model plus one tensor
per client resident (measured in a fresh process)."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap

import pytest
import torch

import fedsec

RULES = {
    "mean": lambda u: fedsec.mean(u, weights=[1, 2, 3, 4, 5, 6, 7], return_info=True),
    "median": lambda u: fedsec.median(u, return_info=True),
    "trimmed_mean": lambda u: fedsec.trimmed_mean(u, 0.2, return_info=True),
    "krum": lambda u: fedsec.krum(u, 1, m=3, return_info=True),
    "geometric_median": lambda u: fedsec.geometric_median(u, return_info=True),
    "bulyan": lambda u: fedsec.bulyan(u, 1, return_info=True),
    "centered_clip": lambda u: fedsec.centered_clip(u, 0.5, 3, return_info=True),
    "centered_clip_center": lambda u: fedsec.centered_clip(u, 0.5, 2, center=u[0],
                                                           return_info=True),
}
SHAPES = [{"w": (30, 20), "b": (20,)}, {"conv": (4, 3, 5, 5), "x": (1,), "y": (65537,)}]


@pytest.fixture
def save_file():
    """safetensors' own writer (the llm extra), so the reader meets the real format."""
    return pytest.importorskip("safetensors.torch", reason="the safetensors package (fedsec's "
                               "llm extra) writes the test files").save_file


def _checkpoints(save_file, folder, shapes, dtype, n=7, seed=0, nan_client=None):
    """n files of seeded tensors (plus an int64 entry each, which aggregation passes through)."""
    g = torch.Generator().manual_seed(seed)
    paths = []
    for i in range(n):
        state = {k: torch.randn(s, generator=g).to(dtype) for k, s in shapes.items()}
        state["steps"] = torch.tensor([i], dtype=torch.int64)
        if i == nan_client:
            next(iter(state.values())).view(-1)[0] = float("nan")
        path = folder / f"client{i}.safetensors"
        save_file(state, str(path))
        paths.append(str(path))
    return paths


def _loaded(paths):
    from safetensors.torch import load_file
    return [load_file(p) for p in paths]


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16],
                         ids=["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("shapes", SHAPES, ids=["linear", "mixed"])
def test_streamed_equals_loaded(tmp_path, save_file, rule, dtype, shapes):
    paths = _checkpoints(save_file, tmp_path, shapes, dtype, seed=len(shapes))
    streamed, info = RULES[rule](paths)
    loaded, loaded_info = RULES[rule](_loaded(paths))
    assert list(streamed) == list(loaded)
    for key in loaded:
        assert streamed[key].dtype == loaded[key].dtype
        assert torch.equal(streamed[key], loaded[key]), (rule, key)
    assert info.used == loaded_info.used and info.excluded == loaded_info.excluded


def test_krum_scores_and_nonfinite_client_as_loaded(tmp_path, save_file):
    paths = _checkpoints(save_file, tmp_path, SHAPES[0], torch.float32, nan_client=2)
    streamed, info = fedsec.krum(paths, 1, m=2, return_info=True)
    loaded, loaded_info = fedsec.krum(_loaded(paths), 1, m=2, return_info=True)
    assert 2 in info.excluded and info.excluded == loaded_info.excluded
    assert all(torch.equal(streamed[k], loaded[k]) for k in loaded)
    assert fedsec.krum_scores(paths, 1).tolist() == fedsec.krum_scores(_loaded(paths), 1).tolist()


def test_hand_computed_median_of_three_files(tmp_path, save_file):
    values = [[1.0, -4.0], [2.0, 0.5], [10.0, 3.0]]
    paths = []
    for i, v in enumerate(values):
        paths.append(str(tmp_path / f"c{i}.safetensors"))
        save_file({"p": torch.tensor(v, dtype=torch.float64)}, paths[-1])
    assert fedsec.median(paths)["p"].tolist() == [2.0, 0.5]
    assert fedsec.mean(paths)["p"].tolist() == pytest.approx([13.0 / 3.0, -0.5 / 3.0],
                                                             rel=1e-15)


def test_missing_file_is_named(tmp_path, save_file):
    paths = _checkpoints(save_file, tmp_path, SHAPES[0], torch.float32, n=3)
    gone = str(tmp_path / "gone.safetensors")
    with pytest.raises(FileNotFoundError, match=r"updates\[1\]: no file .*gone\.safetensors"):
        fedsec.median([paths[0], gone, paths[2]])


def test_different_tensors_name_the_file_and_key(tmp_path, save_file):
    paths = _checkpoints(save_file, tmp_path, SHAPES[0], torch.float32, n=3)
    other = str(tmp_path / "other.safetensors")
    save_file({"w": torch.zeros(30, 20), "bias": torch.zeros(20),
               "steps": torch.tensor([0])}, other)
    with pytest.raises(ValueError, match=r"updates\[2\] \(.*other\.safetensors\) has different "
                                         r"tensors .*missing \['b'\], extra \['bias'\]"):
        fedsec.mean([paths[0], paths[1], other])
    reshaped = str(tmp_path / "reshaped.safetensors")
    save_file({"w": torch.zeros(20, 30), "b": torch.zeros(20), "steps": torch.tensor([0])},
              reshaped)
    with pytest.raises(ValueError, match=r"updates\[1\] \(.*reshaped\.safetensors\)\['w'\] is "
                                         r"torch.float32 \[20, 30\] but .* has torch.float32 "
                                         r"\[30, 20\]"):
        fedsec.krum([paths[0], reshaped, paths[1], paths[2]], 0)


def test_not_a_checkpoint_and_mixed_forms(tmp_path, save_file):
    paths = _checkpoints(save_file, tmp_path, SHAPES[0], torch.float32, n=2)
    junk = tmp_path / "junk.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 64]}}).encode()
    junk.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    with pytest.raises(ValueError, match=r"updates\[1\] \(.*junk\.safetensors\): tensor 'w' "
                                         r"\(F32 \[4\]\) does not fit its data_offsets"):
        fedsec.median([paths[0], str(junk)])
    text = tmp_path / "text.safetensors"
    text.write_bytes(struct.pack("<Q", 5) + b"hello")
    with pytest.raises(ValueError, match="not a safetensors file"):
        fedsec.median([paths[0], str(text)])
    with pytest.raises(TypeError, match="mixes safetensors file paths"):
        fedsec.median([paths[0], _loaded(paths[1:])[0]])


# A fresh process measures its own peak resident memory (VmHWM, reset after the imports and a
# warm-up, and again before each rule) over one aggregation of the checkpoints by each rule.
_PEAK = textwrap.dedent("""
    import json, sys, torch, fedsec
    fedsec.krum([{"a": torch.ones(3)}] * 4, 0)          # imports, thread pools
    def peak():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024
    paths, report = sys.argv[1:], {}
    for rule in ("krum", "median"):
        open("/proc/self/clear_refs", "w").write("5")    # the peak back to the current RSS
        start = peak()
        out = fedsec.krum(paths, 1, m=3) if rule == "krum" else fedsec.median(paths)
        report[rule] = {"growth": peak() - start,
                        "output": sum(v.numel() * v.element_size() for v in out.values())}
        del out
    print(json.dumps(report))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                    reason="peak RSS is measured through Linux's /proc/self/clear_refs")
def test_peak_memory_near_one_model_plus_one_tensor_per_client(tmp_path, save_file):
    n, tensors, per_tensor = 7, 12, 524_288            # 7 checkpoints of 12 x 2 MiB float32
    ramp = torch.linspace(-1.0, 1.0, per_tensor)
    paths = [str(tmp_path / f"c{i}.safetensors") for i in range(n)]
    for i, path in enumerate(paths):
        save_file({f"t{j:02d}": ramp * (i + 1) + j for j in range(tensors)}, path)
    env = {**os.environ, "FEDSEC_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", _PEAK, *paths], env=env, check=True,
                            capture_output=True, text=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    tensor_bytes = 4 * per_tensor
    # The bound, fixed before measuring: the output model, one tensor per client, 32 MiB for the
    # allocator and the runtime. Loading the checkpoints would take n * 24 MiB = 168 MiB more.
    for rule, measured in report.items():
        bound = measured["output"] + n * tensor_bytes + (32 << 20)
        assert measured["output"] == tensors * tensor_bytes
        assert measured["growth"] <= bound, (rule, measured, bound)
