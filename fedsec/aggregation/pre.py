"""Pre-aggregators as linear maps: each replaces the n updates by n' combinations of them.

A pre-aggregator computes an n' x n matrix M from the updates' Gram matrix (distances, norms)
and a seed only, and the mixed updates are Y' = M Y. So the Gram matrix of the mixed updates is
M G M^T, a distance-based rule after a pre-aggregator runs on n x n numbers and ends in one
combination pass with coefficients M^T c, and a coordinate-wise rule applies M per coordinate
inside its selection kernel: nothing n' x d is materialised (fedsec.aggregation.context).

    fedsec.krum(updates, f, pre=fedsec.pre.NNM(f))
    fedsec.median(updates, pre=[fedsec.pre.Bucketing(s=2, seed=0), fedsec.pre.ARC(f)])
    fedsec.pre.apply(updates, pre)     # the mixed updates themselves
    fedsec.pre.matrix(updates, pre)    # M itself, over the clients given

A list is applied in order (M = M_k ... M_1), each on the updates the previous one produced.

Clipping (ARC, Clipping) needs norms, so a reference point: ``center``, one update in the
updates' form (the last global model when the updates are models), default zero (the updates
are differences already). Clipping to norm t around c is x' = c + s (x - c) = s x + (1 - s) c,
s = min(1, t / ||x - c||): the center takes the remainder of each row. A list may hold one
center (the same object in every clipping stage) besides the ones without.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from ..params import check
from . import solvers


class PreAggregator:
    """One stage: ``rows(n)`` mixed updates from n, their matrix from the current geometry."""

    uses_geometry = True  # whether the matrix depends on distances or norms
    clips = False         # whether it needs norms around ``center``
    center: Any = None

    def rows(self, n: int) -> int:
        return n

    def check(self, n: int, require: Callable[[bool, str], None]) -> None:
        """Refuses (through ``require``, which names the rule) an n it cannot mix."""

    def matrix(self, geometry: "Geometry") -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class Geometry:
    """What a stage sees of the current rows: squared distances ``D`` (n x n), the norms
    around the center (None without one) and ``length`` (a length in the updates' units into
    the units of D and norms: the Gram matrix may be of updates scaled by a power of two)."""

    D: np.ndarray
    norms: np.ndarray | None
    length: Callable[[float], float]


@dataclass(frozen=True, eq=False)
class NNM(PreAggregator):
    """Nearest-neighbour mixing (Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan,
    AISTATS 2023, "Fixing by mixing"): each update is replaced by the mean of its n - f nearest
    neighbours, itself included. Neighbours are ordered by distance, ties to the lower index,
    the update itself first. Needs n - f >= 1."""

    f: int

    def __post_init__(self):
        object.__setattr__(self, "f", check("NNM.f", self.f, int, ge=0))

    def check(self, n, require):
        require(n - self.f >= 1, f"n - f >= 1 for pre=NNM(f={self.f}); got n={n}")

    def matrix(self, geometry):
        D = geometry.D
        n = len(D)
        k = n - self.f
        M = np.zeros((n, n))
        for i in range(n):
            others = np.delete(np.arange(n), i)
            nearest = others[np.argsort(D[i, others], kind="stable")[:k - 1]]
            M[i, i] = M[i, nearest] = 1.0 / k
        return M


@dataclass(frozen=True, eq=False)
class Bucketing(PreAggregator):
    """Bucketing (Karimireddy, He, Jaggi, ICLR 2022, "Byzantine-robust learning on
    heterogeneous datasets via bucketing"): a random permutation pi of the n updates
    (``numpy.random.default_rng(seed).permutation(n)``), cut into ceil(n / s) buckets of s
    consecutive entries (the last may be smaller); each bucket is replaced by its mean."""

    s: int
    seed: int = 0
    uses_geometry = False

    def __post_init__(self):
        object.__setattr__(self, "s", check("Bucketing.s", self.s, int, ge=1))
        object.__setattr__(self, "seed", check("Bucketing.seed", self.seed, int, ge=0))

    def rows(self, n):
        return -(-n // self.s)

    def permutation(self, n: int) -> np.ndarray:
        return np.random.default_rng(self.seed).permutation(n)

    def matrix_for(self, n: int) -> np.ndarray:
        order = self.permutation(n)
        M = np.zeros((self.rows(n), n))
        for b in range(self.rows(n)):
            bucket = order[b * self.s:(b + 1) * self.s]
            M[b, bucket] = 1.0 / len(bucket)
        return M

    def matrix(self, geometry):
        return self.matrix_for(len(geometry.D))


def _clip_matrix(norms: np.ndarray, threshold: float) -> np.ndarray:
    """diag(min(1, threshold / norm_i)); a norm at or below the threshold is kept as it is."""
    with np.errstate(divide="ignore"):
        scale = np.where(norms <= threshold, 1.0, threshold / norms)
    return np.diag(scale)


@dataclass(frozen=True, eq=False)
class ARC(PreAggregator):
    """Adaptive robust clipping (Allouah, Guerraoui, Gupta, Jellouli, Rizk, Stephan 2024,
    "Boosting robustness by clipping gradients in distributed learning"): with
    k = floor(2 (f / n) (n - f)), the k updates of largest norm (around ``center``) are clipped
    to the norm of the (k + 1)-th largest: x <- x min(1, t / ||x||), t that norm. Needs
    0 <= f <= n."""

    f: int
    center: Any = None
    clips = True

    def __post_init__(self):
        object.__setattr__(self, "f", check("ARC.f", self.f, int, ge=0))

    def check(self, n, require):
        require(self.f <= n, f"f <= n for pre=ARC(f={self.f}); got n={n}")

    def clipped(self, n: int) -> int:
        return 2 * self.f * (n - self.f) // n

    def matrix(self, geometry):
        norms = geometry.norms
        k = self.clipped(len(norms))
        threshold = np.sort(norms)[::-1][k]
        return _clip_matrix(norms, threshold)


@dataclass(frozen=True, eq=False)
class Clipping(PreAggregator):
    """Static norm clipping: every update (around ``center``) is scaled to norm at most c:
    x <- x min(1, c / ||x||)."""

    c: float
    center: Any = None
    clips = True

    def __post_init__(self):
        object.__setattr__(self, "c", check("Clipping.c", self.c, float, gt=0))

    def matrix(self, geometry):
        return _clip_matrix(geometry.norms, geometry.length(self.c))


def stages(pre: Any) -> tuple[PreAggregator, ...]:
    """``pre`` (None, one pre-aggregator or a sequence of them) as a tuple, checked."""
    if pre is None:
        return ()
    listed = isinstance(pre, Sequence) and not isinstance(pre, str)
    items = list(pre) if listed else [pre]
    for i, p in enumerate(items):
        if not isinstance(p, PreAggregator):
            where = f"pre[{i}]" if listed else "pre"
            raise TypeError(f"{where} must be a fedsec.pre pre-aggregator (NNM, Bucketing, ARC, "
                            f"Clipping); got {type(p).__name__}")
    centers = {id(p.center): p.center for p in items if p.clips}
    if len(centers) > 1:
        raise ValueError("pre: the clipping stages must share one center (the same object, or "
                         "all None for zero); got different ones")
    return tuple(items)


def center_of(chain: tuple[PreAggregator, ...]) -> tuple[bool, Any]:
    """(whether the chain clips, so needs its center among the mixed points, the center: one
    update in the updates' form, or None for zero)."""
    clipping = [p for p in chain if p.clips]
    return bool(clipping), (clipping[0].center if clipping else None)


def rows_after(chain: tuple[PreAggregator, ...], n: int,
               require: Callable[[bool, str], None] | None = None) -> int:
    """The number of mixed updates the chain makes from n; each stage's check on the way."""
    for p in chain:
        if require is not None:
            p.check(n, require)
        n = p.rows(n)
    return n


def build(chain: tuple[PreAggregator, ...], G: np.ndarray | None, n: int, has_center: bool,
          length: Callable[[float], float]) -> np.ndarray:
    """The mixing matrix E (n' x n_src) of the chain over the sources: the n clients, then the
    center when ``has_center`` (its column holds each mixed row's remainder, so every row of
    E sums to 1 and the mixed points minus any reference are E times the sources minus it).

    G is the Gram matrix of the sources (about any reference; None when no stage uses
    geometry); each stage sees the geometry of the rows the previous one produced, from
    E G E^T."""
    sources = n + has_center
    E = np.eye(sources)[:n]
    center_row = np.eye(sources)[n:]  # the center stays itself
    for p in chain:
        geometry = None
        if p.uses_geometry:
            points = np.vstack([E, center_row])
            D = solvers.squared_distances(points @ G @ points.T)
            norms = np.sqrt(D[:-1, -1]) if has_center else None
            geometry = Geometry(D[:len(E), :len(E)], norms, length)
        M = p.matrix(geometry) if geometry is not None else p.matrix_for(len(E))
        E = M @ E
        if has_center and p.clips:
            E[:, -1] += 1.0 - M.sum(axis=1)  # the remainder of s x + (1 - s) c
    return E


def mixed_gram(G: np.ndarray, error: tuple[float, float], E: np.ndarray):
    """The Gram matrix E G E^T of the mixed points and a bound B of its error (n' x n').

    With every entry of G within e ||y_i|| ||y_j|| + a of the exact Gram matrix of the sources
    y_i (error = (e, a)), entry pq of E G E^T is within

        B_pq = e (|E_p| . nu)(|E_q| . nu) + a ||E_p||_1 ||E_q||_1 + (2 m + 2) u (|E| |G| |E|^T)_pq

    of the exact Gram matrix of the mixed points E y, where nu_i = sqrt((G_ii + a) / (1 - e))
    bounds ||y_i||, m is the number of sources and u = 2^-53: the first two terms carry G's
    error through E, the last is the float64 rounding of the two products (E taken as given:
    the rule is applied to E Y for the E computed here)."""
    relative, absolute = error
    nu = np.sqrt(np.maximum(np.diag(G) + absolute, 0.0) / (1.0 - relative))
    A = np.abs(E)
    spread, weight = A @ nu, A.sum(axis=1)
    rounding = (2 * E.shape[1] + 2) * 2.0**-53 * (A @ np.abs(G) @ A.T)
    B = relative * np.outer(spread, spread) + absolute * np.outer(weight, weight) + rounding
    mixed = E @ G @ E.T
    return 0.5 * (mixed + mixed.T), B


def distance_errors(G: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Bounds of |error of D_pq| for D = solvers.squared_distances(G), G's entries within B:
    B_pp + B_qq + 2 B_pq, plus the rounding of D's own float64 sum."""
    b = np.diag(B)
    g = np.abs(np.diag(G))
    return b[:, None] + b[None, :] + 2.0 * B + 2.0 * 2.0**-53 * (g[:, None] + g[None, :] + 2.0 * np.abs(G))


# --- the mixed updates themselves ------------------------------------------------------------------

def matrix(updates, pre, *, on_nonfinite: str = "exclude", backend: str = "auto") -> np.ndarray:
    """M (n' x n float64, over the clients given; zero columns for clients excluded as
    non-finite): the mixed updates are M x plus, for a clipping chain, (1 - row sums) times the
    center. One Gram pass, or none when no stage uses distances or norms."""
    from .context import AggregationContext

    ctx = AggregationContext("pre.matrix", updates, on_nonfinite, backend, pre=pre)
    return ctx.run(ctx.mixing_over_clients)


class Mixed(NamedTuple):
    """What ``apply(..., details=True)`` returns: the mixed updates, M over the clients given
    (``matrix``), and the clients excluded as non-finite ({client: reason})."""

    updates: Any
    matrix: np.ndarray
    excluded: dict


def apply(updates, pre, *, on_nonfinite: str = "exclude", backend: str = "auto",
          details: bool = False):
    """The mixed updates M x (+ the remainder on the center) in the input's form: a stacked
    tensor or array [n', ...] for a stacked input, else a list of n' updates (tensors, arrays or
    state_dicts; a state_dict's non-floating entries from the mixed update's first client);
    with ``details``, a ``Mixed`` of them, M and the excluded clients. The only place where
    the n' x d mixed updates are materialised; one Gram pass (when a stage needs it) and one
    combination per mixed update."""
    from .context import AggregationContext

    ctx = AggregationContext("pre.apply", updates, on_nonfinite, backend, pre=pre)

    def body():
        rows = [ctx.combine(np.ones(1), clients=[p]) for p in range(ctx.n)]
        return rows, ctx.mixing_over_clients()

    rows, M = ctx.run(body)
    if ctx.updates.form == "stacked":
        if ctx.updates.library == "torch":
            import torch

            rows = torch.stack(rows)
        else:
            rows = np.stack(rows)
    return Mixed(rows, M, dict(ctx.excluded)) if details else rows


__all__ = ["NNM", "Bucketing", "ARC", "Clipping", "PreAggregator", "Mixed", "apply", "matrix"]
