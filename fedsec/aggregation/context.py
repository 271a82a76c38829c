"""One aggregation call: the updates, the backend, and which clients are still in play.

Non-finite updates are found on the way, never by an extra pass in the common case: the
combination and selection kernels flag rows with NaN/Inf on the same loads that aggregate them,
and a non-finite row shows in the Gram matrix's diagonal. When a rule's pass meets such a row,
the row is excluded (or NonFiniteUpdateError raised) and the rule is run again without it, so
parameters that depend on the number of clients (trimmed mean's k, the weights) are recomputed.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from . import solvers
from .backends import pick_backend
from .errors import NonFiniteUpdateError
from .info import AggregationInfo
from .updates import UpdateSet, from_any

NONFINITE_REASON = "non-finite values (NaN or Inf)"
ON_NONFINITE_CHOICES = ("exclude", "raise")


class _Rerun(Exception):
    """Raised inside a rule's body when a pass found non-finite rows; the body runs again."""


class AggregationContext:
    def __init__(self, rule: str, updates: Any, on_nonfinite: str, backend: str):
        if on_nonfinite not in ON_NONFINITE_CHOICES:
            raise ValueError(f"on_nonfinite must be one of {ON_NONFINITE_CHOICES}; got {on_nonfinite!r}")
        self.rule = rule
        self.on_nonfinite = on_nonfinite
        self.updates: UpdateSet = from_any(updates)
        self.backend = pick_backend(backend, self.updates.device)
        self.active: list[int] = list(range(self.updates.n))
        self.excluded: dict[int, str] = {}

    @property
    def n(self) -> int:
        """Clients in play (given minus excluded)."""
        return len(self.active)

    def require(self, condition: bool, message: str) -> None:
        """A ValueError naming the rule and the numbers when too few clients remain."""
        if not condition:
            excluded = f" ({len(self.excluded)} of {self.updates.n} excluded as non-finite)" if self.excluded else ""
            raise ValueError(f"{self.rule} needs {message}{excluded}")

    def run(self, body: Callable[[], Any]) -> Any:
        """Runs body() until it completes without meeting a new non-finite client."""
        while True:
            self.require(self.n >= 1, "at least one finite client update; got n=0")
            try:
                return body()
            except _Rerun:
                continue

    def _exclude(self, positions: np.ndarray) -> None:
        clients = [self.active[int(p)] for p in np.flatnonzero(positions)]
        if not clients:
            return
        if self.on_nonfinite == "raise":
            raise NonFiniteUpdateError(clients, self.rule)
        for c in clients:
            self.excluded[c] = NONFINITE_REASON
        self.active = [c for c in self.active if c not in self.excluded]

    def _rows(self, block, clients):
        return [block.rows[c] for c in clients]

    # --- the primitives, over the clients in play ------------------------------------------------

    def gram(self, center: UpdateSet | None = None, medoid: bool = False) -> solvers.Gram:
        """The centred Gram matrix of the clients in play (float64, n x n), with the medoid's
        position when ``medoid`` is true (see solvers.Gram).

        Centred on ``center`` when given, else on a client in play (the first, or the medoid
        when the first is far from the others). Non-finite clients are excluded on the way.

        Every pass's error bound (``backend.gram_error``) is checked against the distances it
        produced (``solvers.gram_is_accurate``) and, when asked for, against the medoid's tie
        rule (``solvers.medoid``). The first pass may use float32 products (the native CPU
        core's fast path). While a pass fails, the next one is centred on the medoid (once,
        when the reference is another client: a reference far from the clients costs
        precision), then uses float64 products (after float32 ones over- or underflowed, or
        were not precise enough), then scales the updates by a power of two (when float64
        products over- or underflowed). A pass that is still not precise enough is used as
        it is.
        """
        dtype, d = self.updates.dtype, self.updates.dimension
        bounds = {fast: self.backend.gram_error(dtype, fast, d) for fast in (True, False)}
        fast = bounds[True] != bounds[False]  # the backend has a float32 pass for dtype
        reference, exponent, recentred = 0, 0, center is not None
        while True:
            G = self._finite_gram(center, reference, fast, exponent)
            error = bounds[fast]
            finite = bool(np.isfinite(G).all())
            D = solvers.squared_distances(G) if finite else None
            accurate = finite and solvers.gram_is_accurate(G, error)
            found = None
            if finite and medoid:
                found = solvers.medoid(D, solvers.distance_errors(G, error))
            if accurate and (found is not None or not medoid):
                return solvers.Gram(G, exponent, found)
            if finite and not recentred:
                recentred = True
                nearest = solvers.medoid(D)
                if nearest != reference:
                    reference = nearest
                    # Accurate but for the medoid's ties: centred on it, with more precision.
                    fast = fast and not accurate
                    continue
            if fast:
                fast = False
                continue
            rescaled = solvers.rescaled_exponent(G, error, exponent)
            if rescaled is None:
                return solvers.Gram(G, exponent, solvers.medoid(D) if medoid else None)
            exponent = rescaled

    def _finite_gram(self, center: UpdateSet | None, reference: int, fast: bool, exponent: int):
        """One Gram pass of the updates scaled by 2^exponent, centred on ``center`` or on the
        client in play at ``reference``, over the finite clients.

        A non-finite diagonal entry is either a client with NaN/Inf, which one flagging pass
        finds and excludes, or a finite update whose products overflowed: that is a matter of
        precision, left in G for gram() to redo with a wider range."""
        scale = math.ldexp(1.0, exponent)
        while True:
            self.require(self.n >= 1, "at least one finite client update; got n=0")
            ref_client = self.active[min(reference, self.n - 1)]
            acc = self.backend.new_gram(self.n)
            for b, block in enumerate(self.updates.blocks):
                ref = center.blocks[b].rows[0] if center is not None else block.rows[ref_client]
                self.backend.gram(self._rows(block, self.active), ref, acc, fast, scale)
            G = self.backend.gram_result(acc)
            if np.isfinite(np.diag(G)).all():
                return G
            in_play = list(self.active)
            nonfinite = self._find_nonfinite()
            if not nonfinite.any():
                return G
            if center is None and nonfinite[in_play.index(ref_client)]:
                continue  # the reference itself was bad: every row is, recompute
            keep = np.flatnonzero(~nonfinite)
            return G[np.ix_(keep, keep)]

    def _find_nonfinite(self) -> np.ndarray:
        """One flagging pass over the clients in play; excludes those with NaN/Inf and returns
        the mask of them (positions in the clients in play before the exclusion)."""
        flags = self.backend.new_flags(self.n)
        coeffs = np.zeros(self.n)
        for block in self.updates.blocks:
            out = self.updates.new_output(block)
            self.backend.combine(self._rows(block, self.active), coeffs, None, 0.0, out, flags)
        bad = self.backend.flags_result(flags)
        self._exclude(bad)
        return bad

    def combine(self, coefficients: np.ndarray, clients: list[int] | None = None,
                center: UpdateSet | None = None, center_coefficient: float = 0.0):
        """sum_k coefficients[k] * x_{clients[k]} (+ center_coefficient * center), assembled."""
        clients = self.active if clients is None else clients
        flags = self.backend.new_flags(len(clients))
        outputs = []
        for b, block in enumerate(self.updates.blocks):
            out = self.updates.new_output(block)
            ref = center.blocks[b].rows[0] if center is not None else None
            self.backend.combine(self._rows(block, clients), coefficients, ref, center_coefficient, out, flags)
            outputs.append(out)
        self._check_flags_for(flags, clients)
        return self.updates.assemble(outputs, clients[int(np.argmax(np.asarray(coefficients) != 0))])

    def select(self, op, k: int, clients: list[int] | None = None):
        """Per-coordinate sort-and-reduce over ``clients`` (default: all in play), assembled."""
        clients = self.active if clients is None else clients
        flags = self.backend.new_flags(len(clients))
        outputs = []
        for block in self.updates.blocks:
            out = self.updates.new_output(block)
            self.backend.select(self._rows(block, clients), op, k, out, flags)
            outputs.append(out)
        self._check_flags_for(flags, clients)
        return self.updates.assemble(outputs, clients[0])

    def _check_flags_for(self, flags, clients: list[int]) -> None:
        bad = self.backend.flags_result(flags)
        if bad.any():
            positions = np.zeros(self.n, dtype=bool)
            for c in np.asarray(clients)[bad]:
                positions[self.active.index(int(c))] = True
            self._exclude(positions)
            raise _Rerun

    def expand(self, values: np.ndarray, clients: list[int] | None = None, fill: float = 0.0) -> np.ndarray:
        """A length-n (all clients given) array from values over ``clients`` (default: in play)."""
        full = np.full(self.updates.n, fill, dtype=np.float64)
        full[clients if clients is not None else self.active] = values
        return full

    def info(self, used, **fields) -> AggregationInfo:
        return AggregationInfo(rule=self.rule, n=self.updates.n, used=tuple(sorted(int(u) for u in used)),
                               excluded=dict(sorted(self.excluded.items())), backend=self.backend.name, **fields)

    def center(self, value: Any) -> UpdateSet:
        """``value`` (one update in the updates' form) as a one-client set, checked finite by
        the backend's own flagging pass (no torch op: it would wake torch's thread pool)."""
        center = self.updates.like(value, "center")
        flags = self.backend.new_flags(1)
        for block in center.blocks:
            self.backend.combine(block.rows, np.zeros(1), None, 0.0,
                                 self.updates.new_output(block), flags)
        if self.backend.flags_result(flags)[0]:
            raise ValueError(f"{self.rule}: center holds non-finite values (NaN or Inf)")
        return center
