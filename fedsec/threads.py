"""fedsec's thread policy, in one place: how many threads torch's pools and the native core use.

The budget is ``FEDSEC_NUM_THREADS`` when it is set (a positive integer), else the cores this
process may run on: its CPU affinity, capped by a cgroup CPU quota (a container's
``--cpus``). From it:

- the native core's CPU kernels use the whole budget: aggregation runs between rounds' training,
  never beside it, and its passes stream gigabytes;
- torch's inter-op pool gets one thread: fedsec runs no inter-op parallel work, and an idle pool
  is one more set of threads to wake;
- torch's intra-op pool, during local training, gets one thread when the model's step is too
  small to split (``training_threads``, under SMALL_STEP_FLOPS per sample), else the budget:
  torch's threads wait for each other at every operation, so a small step gains little from a
  second one and loses when another process holds a core (bench/threads.py measures the
  per-step cost of every shipped model against threads, quiet and beside a busy core);
- ``fedsec matrix --jobs k`` gives each worker process budget // k threads (at least one),
  through FEDSEC_NUM_THREADS, so the workers never oversubscribe the cores between them.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

ENV = "FEDSEC_NUM_THREADS"

# Local training of a model below this many forward FLOPs per sample runs on one torch thread.
# From bench/results/threads.md (batch 32, 2 cores): a second thread made the steps of lr and
# LeNet-5 (0.02 and 0.8 MFLOPs) at most 1.4x faster on a quiet machine and 1.4x slower beside a
# busy core; the FedAvg CNN (25 MFLOPs) and larger gain 1.7-1.9x quiet, and lose 1.1x (LSTM)
# to 15x (ResNet-20, many small synchronised operations) when a core is busy, which
# FEDSEC_NUM_THREADS=1 avoids on a shared machine.
SMALL_STEP_FLOPS = 10e6


def thread_budget() -> int:
    """The threads fedsec may use: FEDSEC_NUM_THREADS, else ``available_cores()``."""
    text = os.environ.get(ENV)
    if text is None:
        return available_cores()
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{ENV}={text!r} must be a positive integer (threads fedsec may use); "
                         f"unset it to use the {available_cores()} available cores")
    return value


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, math.ceil(quota)) if quota is not None else cores)


CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")


def _cgroup_quota() -> float | None:
    """CPUs a cgroup quota allows (cgroup v2 cpu.max, or v1 cfs quota / period); None: none."""
    try:
        if CGROUP_V2_MAX.exists():
            quota, period = CGROUP_V2_MAX.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota = int((CGROUP_V1_CPU / "cpu.cfs_quota_us").read_text())
        period = int((CGROUP_V1_CPU / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def worker_budget(jobs: int) -> int:
    """The threads each of ``jobs`` parallel worker processes may use."""
    return max(1, thread_budget() // jobs)


def training_threads(flops_per_sample: float) -> int:
    """torch's intra-op threads for local training of a model whose forward pass takes
    ``flops_per_sample``."""
    return 1 if flops_per_sample < SMALL_STEP_FLOPS else thread_budget()


def forward_flops(model, sample) -> float:
    """FLOPs (2 per multiply-add) of ``model``'s forward pass on ``sample`` (a batch of one),
    counted over its dense, convolutional and LSTM layers, the layers that hold the work of the
    shipped models. (torch's own FLOP counter imports TorchDynamo: over a second of start-up.)"""
    import torch
    from torch import nn

    macs = 0.0

    def count(module, inputs, output) -> None:
        nonlocal macs
        if isinstance(module, nn.Linear):
            macs += output.numel() * module.in_features
        elif isinstance(module, nn.modules.conv._ConvNd):
            kernel = math.prod(module.kernel_size)
            macs += output.numel() * module.in_channels // module.groups * kernel
        elif isinstance(module, nn.LSTM):  # 4 gates, each an input and a recurrent product
            steps = inputs[0].shape[1 if module.batch_first else 0]
            directions = 2 if module.bidirectional else 1
            for layer in range(module.num_layers):
                width = module.input_size if layer == 0 else module.hidden_size * directions
                macs += directions * steps * 4 * module.hidden_size * (width
                                                                         + module.hidden_size)

    layers = (nn.Linear, nn.modules.conv._ConvNd, nn.LSTM)
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, layers)]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for hook in hooks:
            hook.remove()
    return 2.0 * macs


def apply(flops_per_sample: float | None = None) -> dict[str, int]:
    """Set every pool for the work at hand (``flops_per_sample``: local training of a model
    with that forward cost; None: aggregation only); returns what was set."""
    import torch

    from .aggregation.backends import native

    budget = thread_budget()
    intra = budget if flops_per_sample is None else training_threads(flops_per_sample)
    torch.set_num_threads(intra)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # torch allows it only before its first inter-op work: keep it
            pass
    if native._core is not None:
        native.set_num_threads(budget)
    return {"budget": budget, "torch_intra_op": intra,
            "torch_inter_op": torch.get_num_interop_threads(),
            "native": native._core.num_threads() if native._core is not None else 0}
