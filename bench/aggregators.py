"""Microbenchmark of fedsec's aggregators, as multiples of the floor measured in the same run.

    python -m bench.aggregators            # full grid, then list input and state_dict cases
    python -m bench.aggregators --quick    # small grid
    python -m bench.aggregators --n 50 --d 1e6 --rules median,krum --sections grid

The floor is one read of the inputs: the faster of numpy.sum(X, axis=0) and torch.sum(X, 0) on
the same warm, stacked [n, d] float32 array (docs: shared DESIGN.md, "Performance floor"). Every
implementation of a rule is a callable on a Case in the table built by `implementations()`:
fedsec, the torch and NumPy baselines (bench/baselines.py) and the peer libraries ByzFL and
Flower when they are installed. Each call is first run once (warm-up) and its result checked
against the torch baseline's; then the median of warm repeats is reported.
"""
from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from . import baselines as B

RULES = ("mean", "median", "trimmed_mean", "krum", "multi_krum", "geometric_median", "bulyan",
         "centered_clip", "meamed", "nnm_krum", "nnm_geometric_median", "nnm_median",
         "bucketing_median", "fltrust", "dnc", "flame", "mda", "monna", "caf", "smea",
         "signguard", "clipped_clustering")
BUCKET_SIZE = 2               # bucketing's s
BUCKETING_SEED = 0
BETA = 0.1                    # trimmed_mean's fraction cut at each end
BYZANTINE_SHIFT = 3.0         # added to the first f clients, so the robust rules have work to do
SEED = 0
TOLERANCE = {"geometric_median": 1e-3}  # max |x - reference| / max |reference|; else 1e-4
REFERENCE = "torch"           # the implementation every other one is checked against
BUSY_SHARE = 0.2              # flag timings taken while other processes used more of the CPU

TARGET_CELL = (50, 10**6)
FLOOR_TARGETS = {"mean": 1.3, "median": 2.0, "trimmed_mean": 2.0, "krum": 2.0, "multi_krum": 2.0,
                 "geometric_median": 3.0, "meamed": 2.0, "nnm_krum": 3.0,
                 "nnm_geometric_median": 3.0, "nnm_median": 4.0, "fltrust": 3.0, "dnc": 3.0,
                 "flame": 3.0, "mda": 3.0, "monna": 3.0, "caf": 3.0, "smea": 3.0}
SPEEDUP_TARGETS = {"median": 10.0, "trimmed_mean": 10.0, "geometric_median": 10.0}

FULL_GRID = {"n": (10, 50, 100), "d": (10**5, 10**6, 10**7)}
QUICK_GRID = {"n": (10, 50), "d": (10**5, 10**6)}
LIST_CELL = (50, 10**6)
STATE_DICT_CLIENTS = 20

MEMORY_METHOD = (
    "peak extra memory = growth of the resident-set high-water mark (VmHWM in /proc/self/status) "
    "over the aggregation calls, in a fresh subprocess per case; the mark is reset to the current "
    "resident size through /proc/self/clear_refs once the inputs are built, where that fails "
    "(not Linux >= 4.0) it is the growth of resource.getrusage's ru_maxrss; tracemalloc would not "
    "see torch's allocations")


def peak_rss_bytes() -> int:
    """The high-water mark of this process's resident set."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> Callable[[], int]:
    """Resets the high-water mark to the current resident size; returns a reader of the mark."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return peak_rss_bytes
    except OSError:
        return lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_sample() -> tuple[float, float, float]:
    """(CPU seconds the machine was busy, CPU seconds of this process and its finished children,
    wall seconds)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    own = sum(getattr(resource.getrusage(who), field)
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for field in ("ru_utime", "ru_stime"))
    return busy, own, time.perf_counter()


def others_share(start: tuple[float, float, float]) -> float:
    """The share of the machine's CPU that other processes used since `start` (0 on a quiet
    machine; timings taken beside busy processes are not to be trusted)."""
    busy, own, wall = cpu_sample()
    other = (busy - start[0]) - (own - start[1])
    return max(0.0, other / ((wall - start[2]) * (os.cpu_count() or 1)))


# --- cases: the inputs in the form under test ------------------------------------------------------


def byzantine_count(n: int) -> int:
    """f for Krum and multi-Krum, and the number of shifted (Byzantine) clients in the inputs."""
    return max(1, n // 10)


def flatten(state_dict: dict) -> torch.Tensor:
    """The floating entries of a state_dict as one vector (non-floating ones are metadata)."""
    return torch.cat([v.reshape(-1) for v in state_dict.values() if v.is_floating_point()])


class Case:
    """n client updates of d float32 values, as one [n, d] tensor, and the rules' parameters."""

    def __init__(self, updates: Any, n: int, d: int, center: Any):
        self.updates, self.n, self.d, self.center = updates, n, d, center

    @property
    def f(self) -> int:
        return byzantine_count(self.n)

    @property
    def f_bulyan(self) -> int:
        """The largest f with n >= 4f + 3, capped at n // 10."""
        return min(self.n // 10, (self.n - 3) // 4)

    @property
    def tau(self) -> float:
        """About an honest client's distance to the center (zero): clips roughly half of them."""
        return math.sqrt(self.d)

    def stacked(self) -> torch.Tensor:
        """The [n, d] tensor a baseline works on (for the list forms, a copy made in the call)."""
        return self.updates

    def center_flat(self) -> torch.Tensor:
        return self.center

    def unflatten(self, value: torch.Tensor) -> Any:
        """A baseline's [d] result in the form fedsec returns for these inputs."""
        return value

    @functools.cached_property
    def client_arrays(self) -> list[np.ndarray]:
        """One NumPy view per client (Flower's input form)."""
        return [u.numpy() for u in self.updates]


class ListCase(Case):
    def stacked(self) -> torch.Tensor:
        return torch.stack(self.updates)


class StateDictCase(Case):
    def stacked(self) -> torch.Tensor:
        return torch.stack([flatten(sd) for sd in self.updates])

    def center_flat(self) -> torch.Tensor:
        return flatten(self.center)

    def unflatten(self, value: torch.Tensor) -> dict:
        out, offset = {}, 0
        for key, template in self.updates[0].items():
            if template.is_floating_point():
                out[key] = value[offset:offset + template.numel()].view_as(template)
                offset += template.numel()
            else:
                out[key] = template.clone()
        return out


def touched_randn(n: int, d: int) -> torch.Tensor:
    """[n, d] standard normal, the first f rows shifted (written, so every page is resident)."""
    torch.manual_seed(SEED)
    X = torch.randn(n, d)
    X[:byzantine_count(n)] += BYZANTINE_SHIFT
    return X


def stacked_case(n: int, d: int) -> Case:
    return Case(touched_randn(n, d), n, d, torch.zeros(d))


def list_case(n: int, d: int) -> ListCase:
    """n separate client buffers, as they arrive in FL code."""
    return ListCase([row.clone() for row in touched_randn(n, d)], n, d, torch.zeros(d))


def resnet_layers(stem_kernel: int, widths: tuple[int, ...], blocks: int, classes: int) -> nn.Module:
    """The layers of a ResNet (He et al. 2016) with 1x1-conv shortcuts where the width changes.
    Only their parameter shapes matter here, so they are listed in order, not wired up."""
    layers: list[nn.Module] = [nn.Conv2d(3, widths[0], stem_kernel, bias=False),
                               nn.BatchNorm2d(widths[0])]
    width_in = widths[0]
    for width in widths:
        for _ in range(blocks):
            layers += [nn.Conv2d(width_in, width, 3, bias=False), nn.BatchNorm2d(width),
                       nn.Conv2d(width, width, 3, bias=False), nn.BatchNorm2d(width)]
            if width_in != width:
                layers += [nn.Conv2d(width_in, width, 1, bias=False), nn.BatchNorm2d(width)]
            width_in = width
    return nn.Sequential(*layers, nn.Linear(width_in, classes))


MODELS: dict[str, Callable[[], nn.Module]] = {
    "resnet20": lambda: resnet_layers(3, (16, 32, 64), 3, 10),               # CIFAR, ~0.27M
    "resnet18": lambda: resnet_layers(7, (64, 128, 256, 512), 2, 1000),      # ImageNet, ~11.7M
}


def state_dict_case(model: str, n: int = STATE_DICT_CLIENTS) -> StateDictCase:
    """n clients' state_dicts of the model's shapes, random float32 values, built one by one."""
    torch.manual_seed(SEED)
    template = MODELS[model]().state_dict()
    clients = [{k: torch.randn_like(v) if v.is_floating_point() else v.clone()
                for k, v in template.items()} for _ in range(n)]
    for sd in clients[:byzantine_count(n)]:
        for v in sd.values():
            if v.is_floating_point():
                v += BYZANTINE_SHIFT
    center = {k: torch.zeros_like(v) if v.is_floating_point() else v.clone()
              for k, v in template.items()}
    return StateDictCase(clients, n, flatten(template).numel(), center)


# --- implementations: {name: {rule: callable(case)}} --------------------------------------------

Impl = Callable[[Case], Any]
Table = dict[str, dict[str, Impl]]  # implementation name -> rule -> callable


def fedsec_impls() -> dict[str, Impl]:
    import fedsec
    return {
        "mean": lambda c: fedsec.mean(c.updates),
        "median": lambda c: fedsec.median(c.updates),
        "trimmed_mean": lambda c: fedsec.trimmed_mean(c.updates, BETA),
        "krum": lambda c: fedsec.krum(c.updates, c.f),
        "multi_krum": lambda c: fedsec.krum(c.updates, c.f, m=c.n - c.f),
        "geometric_median": lambda c: fedsec.geometric_median(c.updates),
        "bulyan": lambda c: fedsec.bulyan(c.updates, c.f_bulyan),
        "centered_clip": lambda c: fedsec.centered_clip(c.updates, c.tau, center=c.center),
        "meamed": lambda c: fedsec.meamed(c.updates, c.f),
        "nnm_krum": lambda c: fedsec.krum(c.updates, c.f, pre=fedsec.pre.NNM(c.f)),
        "nnm_geometric_median": lambda c: fedsec.geometric_median(c.updates,
                                                                  pre=fedsec.pre.NNM(c.f)),
        "nnm_median": lambda c: fedsec.median(c.updates, pre=fedsec.pre.NNM(c.f)),
        "bucketing_median": lambda c: fedsec.median(
            c.updates, pre=fedsec.pre.Bucketing(BUCKET_SIZE, seed=BUCKETING_SEED)),
        # The Gram-route rules. FLTrust's server update: the last (honest) client's.
        "fltrust": lambda c: fedsec.fltrust(c.updates, c.updates[-1]),
        "dnc": lambda c: fedsec.dnc(c.updates, c.f),
        "flame": lambda c: fedsec.flame(c.updates),
        "mda": lambda c: fedsec.mda(c.updates, c.f),
        "monna": lambda c: fedsec.monna(c.updates, c.f, c.n - 1),
        "caf": lambda c: fedsec.caf(c.updates, c.f),
        "smea": lambda c: fedsec.smea(c.updates, c.f),
        "signguard": lambda c: fedsec.signguard(c.updates),
        "clipped_clustering": lambda c: fedsec.clipped_clustering(c.updates),
    }


def torch_nnm(X: torch.Tensor, f: int) -> torch.Tensor:
    """Nearest-neighbour mixing materialised: each row the mean of its n - f nearest rows."""
    nearest = torch.cdist(X, X).topk(X.shape[0] - f, dim=1, largest=False).indices
    return X[nearest].mean(dim=1)


def torch_bucketing(X: torch.Tensor, s: int, seed: int) -> torch.Tensor:
    """Bucket means over fedsec's permutation (numpy.random.default_rng(seed).permutation)."""
    order = torch.from_numpy(np.random.default_rng(seed).permutation(X.shape[0]))
    return torch.stack([X[order[i:i + s]].mean(dim=0) for i in range(0, X.shape[0], s)])


def torch_impls() -> dict[str, Impl]:
    return {
        "mean": lambda c: c.unflatten(B.mean(c.stacked())),
        "median": lambda c: c.unflatten(B.median(c.stacked())),
        "trimmed_mean": lambda c: c.unflatten(B.trimmed_mean(c.stacked(), BETA)),
        "krum": lambda c: c.unflatten(B.krum(c.stacked(), c.f)),
        "multi_krum": lambda c: c.unflatten(B.krum(c.stacked(), c.f, m=c.n - c.f)),
        "geometric_median": lambda c: c.unflatten(B.geometric_median(c.stacked())),
        "bulyan": lambda c: c.unflatten(B.bulyan(c.stacked(), c.f_bulyan)),
        "centered_clip": lambda c: c.unflatten(B.centered_clip(c.stacked(), c.tau,
                                                               c.center_flat())),
        "meamed": lambda c: c.unflatten(B._closest_to_median_mean(c.stacked().sort(0).values,
                                                                   c.n - c.f)),
        "nnm_krum": lambda c: c.unflatten(B.krum(torch_nnm(c.stacked(), c.f), c.f)),
        "nnm_geometric_median": lambda c: c.unflatten(
            B.geometric_median(torch_nnm(c.stacked(), c.f))),
        "nnm_median": lambda c: c.unflatten(B.median(torch_nnm(c.stacked(), c.f))),
        "bucketing_median": lambda c: c.unflatten(
            B.median(torch_bucketing(c.stacked(), BUCKET_SIZE, BUCKETING_SEED))),
    }


def numpy_impls() -> dict[str, Impl]:
    return {
        "mean": lambda c: B.np_mean(c.stacked().numpy()),
        "median": lambda c: B.np_median(c.stacked().numpy()),
        "trimmed_mean": lambda c: B.np_trimmed_mean(c.stacked().numpy(), BETA),
    }


def _import_byzfl_aggregators():
    """byzfl.aggregators, without running byzfl/__init__.py: that also imports ByzFL's training
    framework, which needs torchvision (matplotlib, seaborn), and PyPI's CUDA-built torchvision
    does not load beside a CPU torch. The aggregators need only torch, numpy and scipy."""
    import importlib
    import importlib.util
    import types
    spec = importlib.util.find_spec("byzfl")
    if spec is None:
        raise ImportError("No module named 'byzfl'")
    package = types.ModuleType("byzfl")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["byzfl"] = package
    return importlib.import_module("byzfl.aggregators")


def _byzfl_centered_clip(agg_cls, c: Case):
    agg = agg_cls(L=1, tau=c.tau)
    agg.m = c.center  # its constructor's type check rejects every m, so it is set afterwards
    return agg(c.updates)


def byzfl_impls() -> dict[str, Impl]:
    """ByzFL's aggregator objects; its Krum scores use the n - f - 1 nearest (self included), its
    geometric median runs a fixed T iterations (3, its default: as many as the tol-based
    implementations need on these inputs)."""
    A = _import_byzfl_aggregators()
    return {
        "mean": lambda c: A.Average()(c.updates),
        "median": lambda c: A.Median()(c.updates),
        "trimmed_mean": lambda c: A.TrMean(f=int(BETA * c.n))(c.updates),
        "krum": lambda c: A.Krum(f=c.f)(c.updates),
        "multi_krum": lambda c: A.MultiKrum(f=c.f)(c.updates),
        "geometric_median": lambda c: A.GeometricMedian(nu=1e-6, T=3)(c.updates),
        "centered_clip": lambda c: _byzfl_centered_clip(A.CenteredClipping, c),
        "meamed": lambda c: A.Meamed(f=c.f)(c.updates),
        "nnm_krum": lambda c: A.Krum(f=c.f)(A.NNM(f=c.f)(c.updates)),
        "nnm_median": lambda c: A.Median()(A.NNM(f=c.f)(c.updates)),
        # MDA and SMEA enumerate every subset (slow beyond small n: --max-call-s skips them);
        # CAF and SMEA estimate eigenvalues by one power iteration from a random start, so
        # they differ from fedsec's exact ones.
        "mda": lambda c: A.MDA(f=c.f)(c.updates),
        "monna": lambda c: A.MoNNA(f=c.f, idx=c.n - 1)(c.updates),
        "caf": lambda c: A.CAF(f=c.f)(c.updates),
        "smea": lambda c: A.SMEA(f=c.f)(c.updates),
    }


def blades_impls() -> dict[str, Impl]:
    """Blades' aggregators (its fllib package) on the list of client tensors. Its DnC draws
    coordinates with torch's global generator; its Signguard counts signs over whole updates
    and clusters them with k-means; a fresh Clippedclustering per call clips at this call's
    median norm (its history is one call long): none is seeded like fedsec's, so they are
    timed, not expected to agree."""
    from fllib.aggregators import Clippedclustering, DnC, Signguard

    return {
        "dnc": lambda c: DnC(c.f)(list(c.stacked())),
        "signguard": lambda c: Signguard()(list(c.stacked())),
        "clipped_clustering": lambda c: Clippedclustering()(list(c.stacked())),
    }


def flwr_impls() -> dict[str, Impl]:
    """Flower's strategy aggregate functions on (list of layers, num_examples) per client."""
    from flwr.server.strategy import aggregate as fa

    def results(c: Case) -> list:
        return [([a], 1) for a in c.client_arrays]

    return {
        "mean": lambda c: fa.aggregate(results(c))[0],
        "median": lambda c: fa.aggregate_median(results(c))[0],
        "trimmed_mean": lambda c: fa.aggregate_trimmed_avg(results(c), BETA)[0],
        "krum": lambda c: fa.aggregate_krum(results(c), c.f, to_keep=0)[0],
        "multi_krum": lambda c: fa.aggregate_krum(results(c), c.f, to_keep=c.n - c.f)[0],
        "bulyan": lambda c: fa.aggregate_bulyan(results(c), c.f_bulyan, fa.aggregate_krum,
                                                to_keep=0)[0],
    }


SOURCES: dict[str, Callable[[], dict[str, Impl]]] = {  # the reference first: it checks the rest
    "torch": torch_impls, "fedsec": fedsec_impls, "numpy": numpy_impls, "byzfl": byzfl_impls,
    "flwr": flwr_impls, "blades": blades_impls,
}


def implementations(names: list[str], notes: list[str]) -> Table:
    """The implementation table, the reference first; a library that does not import is noted
    and left out."""
    table = {}
    for name in (name for name in SOURCES if name in names):
        try:
            table[name] = SOURCES[name]()
        except ImportError as e:
            note(notes, f"{name}: not importable ({e}); skipped")
    return table


# --- measuring --------------------------------------------------------------------------------------


def note(notes: list[str], text: str) -> None:
    print(f"note: {text}", flush=True)
    notes.append(text)


def warm_up(fn: Callable[[], Any]) -> tuple[Any, float]:
    """One call, whose duration only sizes the repeats: its result and its duration."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median of `repeats` warm calls, the garbage collector off."""
    gc.collect()
    gc.disable()
    try:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    finally:
        gc.enable()
    return statistics.median(times)


def repeats_for(seconds: float, opts: argparse.Namespace) -> int:
    """As many repeats as fit in --budget-s, between 1 and --repeats."""
    return max(1, min(opts.repeats, int(opts.budget_s / max(seconds, 1e-9))))


def measure(fn: Callable[[], Any], opts: argparse.Namespace) -> float:
    """Median warm seconds, after a warm-up call."""
    _, first = warm_up(fn)
    return timed(fn, repeats_for(first, opts))


def floor_seconds(X: torch.Tensor, opts: argparse.Namespace) -> float:
    """One read of the warm [n, d] array: the faster of numpy.sum and torch.sum."""
    X_np = X.numpy()
    return min(measure(lambda: np.sum(X_np, axis=0), opts), measure(lambda: torch.sum(X, 0), opts))


def as_flat(result: Any) -> torch.Tensor:
    if isinstance(result, dict):
        return flatten(result)
    return torch.as_tensor(result).reshape(-1)


def relative_error(result: Any, reference: Any) -> float:
    x, ref = as_flat(result).double(), as_flat(reference).double()
    if x.shape != ref.shape:
        return math.inf
    return float((x - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


@dataclass
class Measurement:
    section: str              # "grid", "list", "state_dict"
    n: int
    d: int
    rule: str
    impl: str
    seconds: float | None = None
    repeats: int | None = None
    floor_seconds: float | None = None
    ratio: float | None = None          # seconds / floor_seconds
    rel_err: float | None = None        # against the torch baseline
    agrees: bool | None = None
    note: str | None = None             # why skipped, or the error
    model: str | None = None            # state_dict section
    peak_extra_bytes: int | None = None  # state_dict section
    others_cpu: float | None = None     # share of the CPU other processes used while timing

    def set_floor(self, floor: float) -> None:
        self.floor_seconds, self.ratio = floor, self.seconds / floor

    def check(self, result: Any, reference: Any) -> None:
        self.rel_err = relative_error(result, reference)
        self.agrees = self.rel_err <= TOLERANCE.get(self.rule, 1e-4)


def checked_warm_up(fn: Callable[[], Any], m: Measurement, reference: Any) -> tuple[Any, float]:
    """The warm-up call, its result checked against the reference (unless None) into m."""
    result, seconds = warm_up(fn)
    if reference is not None:
        m.check(result, reference)
    return result, seconds


def time_into(fn: Callable[[], Any], m: Measurement, warm_up_s: float,
              opts: argparse.Namespace) -> None:
    m.repeats = repeats_for(warm_up_s, opts)
    start = cpu_sample()
    m.seconds = timed(fn, m.repeats)
    m.others_cpu = others_share(start)


class SlowLog:
    """Skips an implementation where a smaller case predicts a call over --max-call-s (time
    scaled by n*d: a lower bound for the quadratic ones). The reference always runs."""

    def __init__(self, max_call_s: float):
        self.max_call_s = max_call_s
        self.seen: dict[tuple[str, str], list[tuple[int, int, float]]] = {}

    def add(self, m: Measurement) -> None:
        self.seen.setdefault((m.impl, m.rule), []).append((m.n, m.d, m.seconds))

    def reason_to_skip(self, impl: str, rule: str, n: int, d: int) -> str | None:
        smaller = [(n0 * d0, n0, d0, t) for n0, d0, t in self.seen.get((impl, rule), [])
                   if n0 <= n and d0 <= d]
        if impl == REFERENCE or not smaller:
            return None
        size, n0, d0, t = max(smaller)
        predicted = t * n * d / size
        if predicted <= self.max_call_s:
            return None
        return (f"skipped: {t:.1f} s at n={n0}, d={d0:.0e} predicts >= {predicted:.0f} s a call "
                f"(--max-call-s {self.max_call_s:g})")


def measure_rule(case: Case, rule: str, impls: Table, floor: float,
                 section: str, opts: argparse.Namespace, slow: SlowLog) -> list[Measurement]:
    """Every implementation of one rule on one case, the reference first."""
    rows, reference = [], None
    for impl, table in impls.items():
        if rule not in table:
            continue
        m = Measurement(section, case.n, case.d, rule, impl)
        rows.append(m)
        m.note = slow.reason_to_skip(impl, rule, case.n, case.d)
        if m.note:
            continue
        fn = functools.partial(table[rule], case)
        try:
            result, warm_up_s = checked_warm_up(fn, m, reference)
            time_into(fn, m, warm_up_s, opts)
        except Exception as e:  # a peer's limit (e.g. torch.quantile's size cap) is a result too
            m.note = f"error: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
            continue
        m.set_floor(floor)
        slow.add(m)
        if impl == REFERENCE:
            reference = result
    return rows


# --- report -----------------------------------------------------------------------------------------


def target_checks(rows: list[Measurement]) -> list[dict]:
    """The issue's targets, met or missed by the grid's n=50, d=1e6 measurements among rows."""
    cell = {(m.rule, m.impl): m for m in rows
            if m.section == "grid" and (m.n, m.d) == TARGET_CELL and m.seconds}
    checks = []
    for rule, goal in FLOOR_TARGETS.items():
        if (rule, "fedsec") in cell:
            value = cell[rule, "fedsec"].ratio
            checks.append({"rule": rule, "metric": "time / floor", "target": f"<= {goal:g}",
                           "value": value, "met": value <= goal})
    for rule, goal in SPEEDUP_TARGETS.items():
        if (rule, "fedsec") in cell and (rule, REFERENCE) in cell:
            value = cell[rule, REFERENCE].seconds / cell[rule, "fedsec"].seconds
            checks.append({"rule": rule, "metric": "speedup vs torch", "target": f">= {goal:g}",
                           "value": value, "met": value >= goal})
    return checks


def target_text(check: dict) -> str:
    return (f"{check['metric']} {check['value']:.2f} (target {check['target']}) "
            f"{'ok' if check['met'] else 'MISS'}")


def busy_text(rows: list[Measurement]) -> list[str]:
    busy = max((m.others_cpu or 0.0) for m in rows)
    return [f"BUSY: other processes used {busy:.0%} of the CPU"] if busy > BUSY_SHARE else []


def print_header(impl_names: list[str]) -> None:
    cols = "".join(f"{name + '/fl':>11}" for name in impl_names)
    print(f"\n{'n':>4} {'d':>6} {'rule':<17}{'floor ms':>9}{'fedsec ms':>10}{cols}"
          f"{'vs torch':>9}  check / target", flush=True)


def print_rows(rows: list[Measurement], impl_names: list[str]) -> None:
    by_impl = {m.impl: m for m in rows}
    cells = "".join(f"{by_impl[name].ratio:>11.2f}" if name in by_impl and by_impl[name].ratio
                    else f"{'-':>11}" for name in impl_names)
    fs, ref = by_impl.get("fedsec"), by_impl.get(REFERENCE)
    fs_ms = f"{fs.seconds * 1e3:>10.1f}" if fs and fs.seconds else f"{'-':>10}"
    speedup = (f"{ref.seconds / fs.seconds:>8.1f}x" if fs and fs.seconds and ref and ref.seconds
               else f"{'-':>9}")
    floor = next((m.floor_seconds for m in rows if m.floor_seconds), None)
    floor_ms = f"{floor * 1e3:>9.3g}" if floor else f"{'-':>9}"
    check = f"err {fs.rel_err:.0e}" if fs and fs.rel_err is not None else "unchecked"
    m0 = rows[0]
    print(f"{m0.n:>4} {m0.d:>6.0e} {m0.rule:<17}{floor_ms}{fs_ms}{cells}{speedup}  "
          + "; ".join([check] + [target_text(t) for t in target_checks(rows)] + busy_text(rows)),
          flush=True)
    for m in rows:
        if m.agrees is False:
            print(f"  WARNING {m.impl} {m.rule}: differs from the torch baseline, max rel err "
                  f"{m.rel_err:.2e}", flush=True)
        if m.note:
            print(f"  {m.impl} {m.rule}: {m.note}", flush=True)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def machine_info() -> dict:
    try:
        import fedsec
        build = fedsec.build_info()
    except ImportError as e:
        build = {"error": str(e)}
    return {"cpu": cpu_model(), "logical_cores": os.cpu_count(),
            "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "python": platform.python_version(), "platform": platform.platform(),
            "numpy": np.__version__, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "fedsec": build}


class Report:
    """Everything measured so far, rewritten to --out after each case (atomically)."""

    def __init__(self, opts: argparse.Namespace):
        self.out = Path(opts.out)
        self.started = cpu_sample()
        self.notes: list[str] = []
        self.measurements: list[Measurement] = []
        self.data = {
            "machine": machine_info(),
            "method": {
                "floor": "faster of numpy.sum(X, axis=0) and torch.sum(X, 0) on the warm stacked "
                         "[n, d] float32 array, measured in the same run",
                "timing": "one warm-up call (its result checked against the torch baseline), then "
                          "the median of warm calls (time.perf_counter, gc disabled); repeats "
                          f"fit in --budget-s {opts.budget_s:g} s, at most --repeats "
                          f"{opts.repeats}",
                "inputs": f"torch.randn float32, first max(1, n//10) clients shifted by "
                          f"+{BYZANTINE_SHIFT:g}; built once, every page written, then reused",
                "parameters": f"f = max(1, n//10) (krum, multi_krum with m = n - f); bulyan f = "
                              f"largest with n >= 4f + 3, capped at n//10; trimmed_mean beta = "
                              f"{BETA}; geometric_median nu=1e-6, tol=1e-6, max_iter=100; "
                              "centered_clip tau = sqrt(d), center = zeros, iters = 1; "
                              "dnc, mda, monna (trusted: the last client), caf, smea with the "
                              "same f; fltrust's server update the last client's; flame, "
                              "signguard, clipped_clustering with their defaults",
                "memory": MEMORY_METHOD,
            },
            "options": vars(opts),
        }

    def add(self, rows: list[Measurement]) -> None:
        self.measurements += rows
        self.write()

    def write(self) -> None:
        self.data.update(notes=self.notes, targets=target_checks(self.measurements),
                         measurements=[asdict(m) for m in self.measurements],
                         elapsed_s=time.perf_counter() - self.started[2],
                         others_cpu_share=others_share(self.started))
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.out)


# --- sections ---------------------------------------------------------------------------------------


def run_case(case: Case, floor: float, section: str, impls: Table,
             opts: argparse.Namespace, slow: SlowLog, report: Report) -> None:
    names = [name for name in impls if name != "fedsec"]
    print_header(names)
    for rule in opts.rules:
        rows = measure_rule(case, rule, impls, floor, section, opts, slow)
        if rows:
            print_rows(rows, names)
            report.add(rows)


def grid_section(opts: argparse.Namespace, impls: Table, slow: SlowLog, report: Report) -> None:
    print("\n== grid: stacked [n, d] float32 torch tensor; ratios are time / floor ==")
    for n in opts.n:
        for d in opts.d:
            if 4 * n * d > opts.max_bytes:
                note(report.notes, f"grid n={n}, d={d:.0e}: [n, d] float32 is {4 * n * d / 1e9:.1f}"
                                   f" GB > --max-bytes {opts.max_bytes / 1e9:g} GB; skipped")
                continue
            case = stacked_case(n, d)
            run_case(case, floor_seconds(case.updates, opts), "grid", impls, opts, slow, report)
            del case
            gc.collect()


def list_section(opts: argparse.Namespace, impls: Table, report: Report) -> None:
    n, d = LIST_CELL
    print(f"\n== list input: {n} separate [d] tensors, d={d:.0e} (fedsec never stacks them; the "
          "baselines stack inside the timed call); floor on a stacked copy ==")
    case = list_case(n, d)
    floor = floor_seconds(torch.stack(case.updates), opts)
    run_case(case, floor, "list", impls, opts, SlowLog(opts.max_call_s), report)


def run_worker(model: str, rule: str, impl: str, folder: Path, opts: argparse.Namespace) -> dict:
    """One state_dict case in this fresh process: the check against the reference's saved
    result, the time, the peak extra memory; its own result saved for the next ones."""
    case = state_dict_case(model)
    fn = functools.partial(SOURCES[impl]()[rule], case)
    reference_path = folder / f"{REFERENCE}.pt"
    reference = torch.load(reference_path) if impl != REFERENCE else None
    m = Measurement("state_dict", case.n, case.d, rule, impl, model=model)
    result, warm_up_s = checked_warm_up(fn, m, reference)
    del reference
    peak = reset_peak_rss()  # after the warm-up: one-time costs (code pages, caches) left out
    before = peak()
    time_into(fn, m, warm_up_s, opts)
    m.peak_extra_bytes = peak() - before
    if impl == REFERENCE:
        torch.save(as_flat(result), reference_path)
    return asdict(m)


def state_dict_rule(model: str, rule: str, names: list[str], d: int,
                    opts: argparse.Namespace) -> list[Measurement]:
    """Each implementation in a fresh subprocess, the reference first."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for impl in names:
            cmd = [sys.executable, "-m", "bench.aggregators", "--worker", model, rule, impl, folder,
                   "--repeats", str(opts.repeats), "--budget-s", str(opts.budget_s)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0:
                rows.append(Measurement(**json.loads(proc.stdout.splitlines()[-1])))
            else:
                error = (proc.stderr.strip().splitlines() or ["no output"])[-1][:160]
                rows.append(Measurement("state_dict", STATE_DICT_CLIENTS, d, rule, impl,
                                        model=model, note=f"error: {error}"))
    return rows


def state_dict_line(m: Measurement) -> str:
    if m.seconds is None:
        return f"{m.impl}: {m.note}"
    check = "" if m.rel_err is None else f", rel err {m.rel_err:.1e}"
    warning = "  WARNING: differs from the torch baseline" if m.agrees is False else ""
    return (f"{m.impl} {m.seconds * 1e3:.1f} ms = {m.ratio:.2f}x floor, "
            f"+{m.peak_extra_bytes / 1e6:.0f} MB{check}{warning}")


def state_dict_section(opts: argparse.Namespace, impls: Table, report: Report) -> None:
    print(f"\n== state_dict: {STATE_DICT_CLIENTS} clients' state_dicts; fedsec reads them "
          "parameter by parameter, the torch baseline flattens, stacks and unflattens ==\n"
          + MEMORY_METHOD)
    names = [name for name in (REFERENCE, "fedsec") if name in impls]
    for model in opts.models:
        d = state_dict_case(model, n=1).d
        floor = floor_seconds(touched_randn(STATE_DICT_CLIENTS, d), opts)
        print(f"\n{model}: {d / 1e6:.2f}M floating parameters; floor on a stacked "
              f"[{STATE_DICT_CLIENTS}, {d}] array {floor * 1e3:.2f} ms", flush=True)
        for rule in opts.rules:
            rows = state_dict_rule(model, rule, names, d, opts)
            for m in rows:
                if m.seconds is not None:
                    m.set_floor(floor)
            print(f"  {rule:<17}" + "; ".join([state_dict_line(m) for m in rows] + busy_text(rows)),
                  flush=True)
            report.add(rows)


def print_summary(data: dict, out: Path) -> None:
    print("\ntargets at n=50, d=1e6 (grid):")
    for check in data["targets"]:
        print(f"  {check['rule']:<17} {target_text(check)}")
    busy = data["others_cpu_share"]
    print(f"\nother processes used {busy:.0%} of the CPU during the run"
          + (": timings are noisy, rerun on a quiet machine" if busy > BUSY_SHARE else ""))
    print(f"{len(data['notes'])} notes; wrote {out} in {data['elapsed_s']:.0f} s")


# --- command line -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.aggregators", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small grid (n in 10, 50; d in 1e5, 1e6), resnet20 only")
    p.add_argument("--n", type=lambda s: [int(x) for x in s.split(",")], help="e.g. 10,50,100")
    p.add_argument("--d", type=lambda s: [int(float(x)) for x in s.split(",")],
                   help="e.g. 1e5,1e6,1e7")
    p.add_argument("--rules", type=lambda s: s.split(","), default=list(RULES),
                   help=f"comma-separated subset of {','.join(RULES)}")
    p.add_argument("--impls", type=lambda s: s.split(","), default=list(SOURCES),
                   help=f"comma-separated subset of {','.join(SOURCES)} (torch is the reference)")
    p.add_argument("--sections", type=lambda s: s.split(","), default=["grid", "list", "state_dict"],
                   help="comma-separated subset of grid,list,state_dict")
    p.add_argument("--models", type=lambda s: s.split(","), help=f"state_dict models: {','.join(MODELS)}")
    p.add_argument("--repeats", type=int, default=10, help="most warm calls timed per measurement")
    p.add_argument("--budget-s", type=float, default=3.0,
                   help="seconds of timed calls per measurement (fewer repeats for slow calls)")
    p.add_argument("--max-call-s", type=float, default=60.0,
                   help="skip a non-reference implementation where a smaller case predicts longer")
    p.add_argument("--max-bytes", type=float, default=4e9, help="skip larger [n, d] float32 cells")
    p.add_argument("--out", default="bench/results/aggregators.json")
    p.add_argument("--worker", nargs=4, metavar=("MODEL", "RULE", "IMPL", "FOLDER"),
                   help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    grid = QUICK_GRID if opts.quick else FULL_GRID
    opts.n, opts.d = opts.n or list(grid["n"]), opts.d or list(grid["d"])
    opts.models = opts.models or (["resnet20"] if opts.quick else list(MODELS))
    for name, chosen, valid in (("rule", opts.rules, RULES), ("impl", opts.impls, SOURCES),
                                ("section", opts.sections, ("grid", "list", "state_dict")),
                                ("model", opts.models, MODELS)):
        unknown = set(chosen) - set(valid)
        if unknown:
            p.error(f"unknown {name} {sorted(unknown)}; valid: {', '.join(valid)}")
    if REFERENCE not in opts.impls:
        p.error(f"--impls must include {REFERENCE}: it is the reference for the checks")
    return opts


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    if opts.worker:
        model, rule, impl, folder = opts.worker
        print(json.dumps(run_worker(model, rule, impl, Path(folder), opts)))
        return
    report = Report(opts)
    print(json.dumps(report.data["machine"], indent=1))
    impls = implementations(opts.impls, report.notes)
    if "grid" in opts.sections:
        grid_section(opts, impls, SlowLog(opts.max_call_s), report)
    if "list" in opts.sections:
        list_section(opts, impls, report)
    if "state_dict" in opts.sections:
        state_dict_section(opts, impls, report)
    report.write()
    print_summary(report.data, report.out)


if __name__ == "__main__":
    main()
