"""One aggregation call: the updates, the backend, and which clients are still in play.

Non-finite updates are found on the way, never by an extra pass in the common case: the
combination and selection kernels flag rows with NaN/Inf on the same loads that aggregate them,
and a non-finite row shows in the Gram matrix's diagonal. When a rule's pass meets such a row,
the row is excluded (or NonFiniteUpdateError raised) and the rule is run again without it, so
parameters that depend on the number of clients (trimmed mean's k, the weights) are recomputed.

With ``pre=`` (fedsec.aggregation.pre) the rule sees the n' mixed updates E x of the clients in
play instead of the clients: ``active``, ``n`` and ``expand`` count mixed updates, ``gram()``
is their Gram matrix E G E^T, ``combine(c)`` one pass with coefficients E^T c over the clients,
``select`` mixes per coordinate inside the kernel, and ``info`` reports clients (the rows a
rule used, as the clients that feed them; coefficients as E^T c). The sources E mixes are the
clients in play and, for a clipping chain, its center (the remainder of each clipped row). E
is built from the Gram matrix of the sources once the clients in play are known, and again
after an exclusion.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from . import pre as pre_module
from . import solvers
from .backends import pick_backend
from .errors import NonFiniteUpdateError, CannotAggregateError
from .info import AggregationInfo
from .updates import UpdateSet, from_any

NONFINITE_REASON = "non-finite values (NaN or Inf)"
ON_NONFINITE_CHOICES = ("exclude", "raise")
CENTER = -1  # the source id of a clipping chain's center (a client id otherwise)


class _Rerun(Exception):
    """Raised inside a rule's body when a pass found non-finite rows; the body runs again."""


class AggregationContext:
    def __init__(self, rule: str, updates: Any, on_nonfinite: str, backend: str, pre: Any = None):
        if on_nonfinite not in ON_NONFINITE_CHOICES:
            raise ValueError(f"on_nonfinite must be one of {ON_NONFINITE_CHOICES}; got {on_nonfinite!r}")
        self.rule = rule
        self.on_nonfinite = on_nonfinite
        self.updates: UpdateSet = from_any(updates)
        self.backend = pick_backend(backend, self.updates.device)
        self.in_play: list[int] = list(range(self.updates.n))
        self.excluded: dict[int, str] = {}
        self.pre = pre_module.stages(pre)
        self._mixing: tuple[tuple[int, ...], np.ndarray] | None = None  # (in play, E)
        # A clipping chain's center, one buffer per block (zeros for center=None), whose
        # contributions are dropped from the passes that do not need them when it is zero.
        self._center_rows: list[Any] | None = None
        self._zero_center = False
        clips, center = pre_module.center_of(self.pre)
        if clips:
            self._zero_center = center is None
            self._center_rows = (self._zeros() if center is None else
                                 [b.rows[0] for b in self.center(center).blocks])
        if self.pre:
            pre_module.rows_after(self.pre, self.updates.n, self.require)

    def _zeros(self) -> list[Any]:
        rows = []
        for block in self.updates.blocks:
            out = self.updates.new_output(block)
            out[...] = 0
            rows.append(out)
        return rows

    @property
    def n(self) -> int:
        """Rows the rule aggregates: the clients in play (given minus excluded), or with pre=
        the mixed updates made from them."""
        if self.pre:
            return pre_module.rows_after(self.pre, len(self.in_play))
        return len(self.in_play)

    @property
    def active(self) -> list[int]:
        """The ids of the rows the rule aggregates: clients, or with pre= 0..n'-1."""
        return list(range(self.n)) if self.pre else list(self.in_play)

    def require(self, condition: bool, message: str) -> None:
        """A CannotAggregateError (a ValueError) naming the rule and the numbers when too few
        clients remain."""
        if not condition:
            excluded = f" ({len(self.excluded)} of {self.updates.n} excluded as non-finite)" if self.excluded else ""
            raise CannotAggregateError(f"{self.rule} needs {message}{excluded}")

    def run(self, body: Callable[[], Any]) -> Any:
        """Runs body() until it completes without meeting a new non-finite client."""
        while True:
            self.require(len(self.in_play) >= 1, "at least one finite client update; got n=0")
            try:
                return body()
            except _Rerun:
                continue

    def _exclude(self, positions: np.ndarray) -> None:
        clients = [self.in_play[int(p)] for p in np.flatnonzero(positions)]
        if not clients:
            return
        if self.on_nonfinite == "raise":
            raise NonFiniteUpdateError(clients, self.rule)
        for c in clients:
            self.excluded[c] = NONFINITE_REASON
        self.in_play = [c for c in self.in_play if c not in self.excluded]

    def _sources(self) -> list[int]:
        """The ids of what E mixes: the clients in play, then the center of a clipping chain."""
        return self.in_play + ([CENTER] if self._center_rows is not None else [])

    def _rows(self, b: int, block, ids: list[int]) -> list[Any]:
        return [self._center_rows[b] if i == CENTER else block.rows[i] for i in ids]

    # --- the primitives, over the clients in play ------------------------------------------------

    def gram(self, center: UpdateSet | None = None, medoid: bool = False) -> solvers.Gram:
        """The centered Gram matrix of the clients in play (float64, n x n), with the medoid's
        position when ``medoid`` is true (see solvers.Gram); with pre=, that of the mixed
        updates, E G E^T (see pre.mixed_gram for its error bound), and their medoid.

        Centered on ``center`` when given, else on a client in play (the first, or the medoid
        when the first is far from the others). Non-finite clients are excluded on the way.

        Every pass's error bound (``backend.gram_error``) is checked against the distances it
        produced (``solvers.gram_is_accurate``) and, when asked for, against the medoid's tie
        rule (``solvers.medoid``; with pre=, on the mixed updates' distances and their
        propagated bounds). The first pass may use float32 products (the native CPU
        core's fast path). While a pass fails, the next one is centered on the medoid (once,
        when the reference is another client: a reference far from the clients costs
        precision), then uses float64 products (after float32 ones over- or underflowed, or
        were not precise enough), then scales the updates by a power of two (when float64
        products over- or underflowed). A pass that is still not precise enough is used as
        it is.
        """
        dtype, d = self.updates.dtype, self.updates.dimension
        bounds = {fast: self.backend.gram_error(dtype, fast, d) for fast in (True, False)}
        fast = bounds[True] != bounds[False]  # the backend has a float32 pass for dtype
        reference, exponent, recentered = 0, 0, center is not None
        while True:
            G = self._finite_gram(center, reference, fast, exponent)
            error = bounds[fast]
            finite = bool(np.isfinite(G).all())
            D = solvers.squared_distances(G) if finite else None
            accurate = finite and solvers.gram_is_accurate(G, error)
            view = self._rule_view(G, error, exponent) if finite else None
            found = None
            if finite and medoid:
                found = solvers.medoid(solvers.squared_distances(view[0]), view[1])
            if accurate and (found is not None or not medoid):
                return solvers.Gram(view[0], exponent, found)
            if finite and not recentered:
                recentered = True
                nearest = solvers.medoid(D)
                if nearest != reference:
                    reference = nearest
                    # Accurate but for the medoid's ties: centered on it, with more precision.
                    fast = fast and not accurate
                    continue
            if fast:
                fast = False
                continue
            rescaled = solvers.rescaled_exponent(G, error, exponent)
            if rescaled is None:
                return solvers.Gram(view[0], exponent,
                                    solvers.medoid(solvers.squared_distances(view[0])) if medoid else None)
            exponent = rescaled

    def _rule_view(self, G: np.ndarray, error: tuple[float, float], exponent: int):
        """(the Gram matrix the rule sees, bounds of the errors of its distances): G itself,
        or with pre= that of the mixed updates, E built from G (and kept for the passes)."""
        if not self.pre:
            return G, solvers.distance_errors(G, error)
        pre_module.rows_after(self.pre, len(self.in_play), self.require)
        E = pre_module.build(self.pre, G, len(self.in_play), self._center_rows is not None,
                             lambda value: math.ldexp(value, exponent))
        self._mixing = (tuple(self.in_play), E)
        mixed, B = pre_module.mixed_gram(G, error, E)
        return mixed, pre_module.distance_errors(mixed, B)

    def _finite_gram(self, center: UpdateSet | None, reference: int, fast: bool, exponent: int):
        """One Gram pass of the sources (the clients in play, and a clipping chain's center)
        scaled by 2^exponent, centered on ``center`` or on the source at ``reference``, over
        the finite clients.

        A non-finite diagonal entry is either a client with NaN/Inf, which one flagging pass
        finds and excludes, or a finite update whose products overflowed: that is a matter of
        precision, left in G for gram() to redo with a wider range."""
        scale = math.ldexp(1.0, exponent)
        while True:
            self.require(len(self.in_play) >= 1, "at least one finite client update; got n=0")
            sources = self._sources()
            ref_source = sources[min(reference, len(sources) - 1)]
            acc = self.backend.new_gram(len(sources))
            for b, block in enumerate(self.updates.blocks):
                ref = (center.blocks[b].rows[0] if center is not None
                       else self._rows(b, block, [ref_source])[0])
                self.backend.gram(self._rows(b, block, sources), ref, acc, fast, scale)
            G = self.backend.gram_result(acc)
            if np.isfinite(np.diag(G)).all():
                return G
            in_play = list(self.in_play)
            nonfinite = self._find_nonfinite()
            if not nonfinite.any():
                return G
            if center is None and ref_source != CENTER and nonfinite[in_play.index(ref_source)]:
                continue  # the reference itself was bad: every row is, recompute
            keep = np.flatnonzero(np.append(~nonfinite, [True] * (len(sources) - len(in_play))))
            return G[np.ix_(keep, keep)]

    def _find_nonfinite(self) -> np.ndarray:
        """One flagging pass over the clients in play; excludes those with NaN/Inf and returns
        the mask of them (positions in the clients in play before the exclusion)."""
        flags = self.backend.new_flags(len(self.in_play))
        coeffs = np.zeros(len(self.in_play))
        for b, block in enumerate(self.updates.blocks):
            out = self.updates.new_output(block)
            self.backend.combine(self._rows(b, block, self.in_play), coeffs, None, 0.0, out, flags)
        bad = self.backend.flags_result(flags)
        self._exclude(bad)
        return bad

    def mixing(self) -> np.ndarray:
        """E (n' x sources) of pre= for the clients in play: kept from this round's gram(), else
        built here (one Gram pass when a stage uses distances or norms). A pass that excludes a
        client reruns the rule, whose parameters may depend on n."""
        key = tuple(self.in_play)
        if self._mixing is None or self._mixing[0] != key:
            if any(p.uses_geometry for p in self.pre):
                self.gram()
                if tuple(self.in_play) != key:
                    raise _Rerun
            else:
                pre_module.rows_after(self.pre, len(self.in_play), self.require)
                E = pre_module.build(self.pre, None, len(self.in_play), False, lambda v: v)
                self._mixing = (key, E)
        return self._mixing[1]

    def mixing_over_clients(self) -> np.ndarray:
        """E as n' x (clients given): the center's column dropped, zero columns for the
        excluded clients."""
        E = self.mixing()
        W = np.zeros((E.shape[0], self.updates.n))
        W[:, self.in_play] = E[:, :len(self.in_play)]
        return W

    def _mixed_sources(self, E: np.ndarray) -> tuple[list[int], np.ndarray]:
        """The sources a pass over the rows of E must read (nonzero columns; a zero center
        adds nothing) and E restricted to them; at least one client, so the pass has a form."""
        sources = self._sources()
        used = [j for j in range(len(sources)) if E[:, j].any()
                and not (sources[j] == CENTER and self._zero_center)]
        if not used:
            used = [0]
        return [sources[j] for j in used], E[:, used]

    def combine(self, coefficients: np.ndarray, clients: list[int] | None = None,
                center: UpdateSet | None = None, center_coefficient: float = 0.0):
        """sum_k coefficients[k] * x_{clients[k]} (+ center_coefficient * center), assembled;
        with pre=, of the mixed updates (rows ``clients``), as one pass with E^T c."""
        clients = self.active if clients is None else clients
        if self.pre:
            c = np.zeros(self.n)
            c[clients] = coefficients
            clients, weights = self._mixed_sources(c[None, :] @ self.mixing())
            coefficients = weights[0]
        flags = self.backend.new_flags(len(clients))
        outputs = []
        for b, block in enumerate(self.updates.blocks):
            out = self.updates.new_output(block)
            ref = center.blocks[b].rows[0] if center is not None else None
            self.backend.combine(self._rows(b, block, clients), coefficients, ref,
                                 center_coefficient, out, flags)
            outputs.append(out)
        self._check_flags_for(flags, clients)
        return self.updates.assemble(outputs, self._first_client(clients, coefficients))

    def select(self, op, k: int, clients: list[int] | None = None):
        """Per-coordinate sort-and-reduce over ``clients`` (default: all in play), assembled;
        with pre=, over the mixed updates ``clients``, mixed inside the selection kernel."""
        clients = self.active if clients is None else clients
        mixing = None
        if self.pre:
            clients, mixing = self._mixed_sources(self.mixing()[clients])
        flags = self.backend.new_flags(len(clients))
        outputs = []
        for b, block in enumerate(self.updates.blocks):
            out = self.updates.new_output(block)
            rows = self._rows(b, block, clients)
            if mixing is None:
                self.backend.select(rows, op, k, out, flags)
            else:
                self.backend.mixed_select(rows, mixing, op, k, out, flags)
            outputs.append(out)
        self._check_flags_for(flags, clients)
        weights = np.ones(len(clients)) if mixing is None else np.abs(mixing).sum(axis=0)
        return self.updates.assemble(outputs, self._first_client(clients, weights))

    @staticmethod
    def _first_client(sources: list[int], coefficients) -> int:
        """The client whose non-floating state_dict entries the result copies: the first with
        a nonzero coefficient (the first client when none has)."""
        clients = [(s, c) for s, c in zip(sources, np.asarray(coefficients)) if s != CENTER]
        return next((s for s, c in clients if c != 0), clients[0][0] if clients else 0)

    def _check_flags_for(self, flags, sources: list[int]) -> None:
        bad = self.backend.flags_result(flags)
        clients = [int(s) for s, flagged in zip(sources, bad) if flagged and s != CENTER]
        if clients:
            positions = np.zeros(len(self.in_play), dtype=bool)
            for c in clients:
                positions[self.in_play.index(c)] = True
            self._exclude(positions)
            raise _Rerun

    def expand(self, values: np.ndarray, clients: list[int] | None = None, fill: float = 0.0) -> np.ndarray:
        """A length-n (all clients given; with pre=, the n' mixed updates) array from values
        over ``clients`` (default: in play)."""
        full = np.full(self.n if self.pre else self.updates.n, fill, dtype=np.float64)
        full[clients if clients is not None else self.active] = values
        return full

    def info(self, used, **fields) -> AggregationInfo:
        """What the call did. With pre=, ``used`` (mixed rows) becomes the clients that feed
        them and ``coefficients`` (over the mixed rows) E^T c over the clients; scores stay
        per mixed update."""
        if self.pre:
            W = self.mixing_over_clients()
            used = np.flatnonzero(W[list(used)].any(axis=0)) if len(used) else []
            if fields.get("coefficients") is not None:
                fields["coefficients"] = W.T @ fields["coefficients"]
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
