"""The index of a folder of matrix reports: each matrix's title, size and how its published
findings fare here, then every finding with its verdict and interval (``python -m
fedsec.matrix.index FOLDER``, from each report's summary.json).

A summary written before verdicts came from intervals (no ``method`` key: its verdicts
compared means, 'holds' or 'fails') is listed as such, with no interval; regenerating the
report replaces it."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .claims import OUTCOMES

VERDICT = {True: "agrees", False: "**disagrees**", None: "-"}
LEGACY = ("holds", "fails", "no data")  # verdicts of summaries from before intervals


def write_index(folder: Path) -> Path:
    """README.md in ``folder`` for every ``*/summary.json`` written by ``fedsec matrix``."""
    rows, findings = [], []
    for path in sorted(folder.glob("*/summary.json"), key=_natural):
        summary = json.loads(path.read_text())
        claims = summary["claims"]
        agree = sum(c["agrees"] is True for c in claims)
        name = path.parent.name
        counts = ", ".join(f"{sum(c['here'] == o for c in claims)} {o}"
                           for o in (OUTCOMES if "method" in summary else LEGACY))
        method = (f"{summary['method']}; config {_commit(summary['config_commit'])}"
                  if "method" in summary else "means only (older report: regenerate)")
        rows.append(f"| [{summary['title']}]({name}/report.md) | {summary['cells']} | "
                    f"{summary['seeds']} | {method} | {counts} | {agree} of {len(claims)} |")
        findings += [f"| {c['claim']} ([{name}]({name}/report.md)) | {c['source']} | "
                     f"{c['expected']} | {c['here']} | {_interval(c)} | "
                     f"{VERDICT[c['agrees']]} |" for c in claims]
    lines = ["# Benchmark results", "",
             "The matrices of configs/paper/ (FedMLSecurity's experiments at CPU scale, and the "
             "adaptive attacks). Every number here and in the reports comes from the runs, "
             "whose records are kept beside each report (`cells/<cell>/seed<k>/`: the resolved "
             "config, one JSON record per round, the summary); "
             "`bash docs/results/regenerate.sh` rebuilds the reports from them and runs what "
             "is missing (delete a matrix's folder to run it again). A verdict is holds or "
             "contradicted when the interval of the claimed difference lies wholly on one "
             "side of its margin, inconclusive otherwise (each report says how).", "",
             "| matrix | cells | seeds | verdicts from | verdicts | findings that agree |",
             "| --- | --- | --- | --- | --- | --- |",
             *rows, "", "## Every finding checked", "",
             "| finding | source | there | here | difference, interval | |",
             "| --- | --- | --- | --- | --- | --- |",
             *findings, ""]
    out = folder / "README.md"
    out.write_text("\n".join(lines))
    return out


def _commit(commit: str) -> str:
    """'at 1a2b3c4', or the report's word for a config outside the history."""
    return commit if commit in ("uncommitted", "not in a git checkout") else f"at {commit}"


def _interval(claim: dict) -> str:
    """The claim's difference and interval, as its report shows them ('-' where none)."""
    if claim.get("interval") is None:
        return "-"
    lo, hi = claim["interval"]
    return f"{claim['difference']:+.4g}, {claim['level'] * 100:g}% [{lo:+.4g}, {hi:+.4g}]"


def _natural(path: Path) -> list:
    """exp2 before exp10: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part
            for part in re.split(r"(\d+)", path.parent.name)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path, help="a folder of `fedsec matrix` outputs")
    args = parser.parse_args(argv)
    print(f"wrote {write_index(args.folder)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
