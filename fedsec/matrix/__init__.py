"""The benchmark: attack x defense matrices over seeds, with tables, figures and a report that
checks published findings (FedMLSecurity's Exp1-Exp10 at CPU scale: configs/paper/)."""
from .config import Cell, Claim, MatrixConfig, load_matrix
from .results import CellResult, SeedResult
from .runner import run_matrix

__all__ = ["Cell", "Claim", "MatrixConfig", "load_matrix", "CellResult", "SeedResult",
           "run_matrix"]
