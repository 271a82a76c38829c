"""Exceptions raised by fedsec's aggregators."""


class NonFiniteUpdateError(ValueError):
    """A client update holds NaN or Inf and the caller asked to raise (``on_nonfinite="raise"``).

    ``clients`` lists the offending client indices (positions in the input).
    """

    def __init__(self, clients: list[int], rule: str):
        self.clients = list(clients)
        super().__init__(
            f"{rule}: client update(s) {self.clients} hold non-finite values (NaN or Inf); "
            "pass on_nonfinite='exclude' to aggregate without them"
        )


class CannotAggregateError(ValueError):
    """What is left of the round cannot be aggregated by the rule: too few finite client
    updates for its guarantee (n >= 4f + 3 for Bulyan, ...), or the update it must trust
    (MoNNA's) is among the non-finite ones. The message names the rule and the numbers. A
    federated run keeps its global model for that round (fedsec.fl.experiment)."""


class CudaUnavailableError(RuntimeError):
    """The native CUDA path was requested but the build or the machine cannot run it."""
