"""The index of a folder of matrix reports: each matrix's title, size and how many of its
published findings hold here, then every finding (``python -m fedsec.matrix.index FOLDER``,
from each report's summary.json)."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

VERDICT = {True: "agrees", False: "**disagrees**", None: "-"}


def write_index(folder: Path) -> Path:
    """README.md in ``folder`` for every ``*/summary.json`` written by ``fedsec matrix``."""
    rows, findings = [], []
    for path in sorted(folder.glob("*/summary.json"), key=_natural):
        summary = json.loads(path.read_text())
        claims = summary["claims"]
        agree = sum(c["agrees"] is True for c in claims)
        name = path.parent.name
        rows.append(f"| [{summary['title']}]({name}/report.md) | {summary['cells']} | "
                    f"{summary['seeds']} | {agree} of {len(claims)} |")
        findings += [f"| {c['claim']} ([{name}]({name}/report.md)) | {c['source']} | "
                     f"{c['expected']} | {c['here']} | {VERDICT[c['agrees']]} |" for c in claims]
    lines = ["# Benchmark results", "",
             "The matrices of configs/paper/ (FedMLSecurity's experiments at CPU scale, and the "
             "adaptive attacks). Every number here and in the reports comes from the runs, "
             "whose records are kept beside each report (`cells/<cell>/seed<k>/`: the resolved "
             "config, one JSON record per round, the summary); "
             "`bash docs/results/regenerate.sh` rebuilds the reports from them and runs what "
             "is missing (delete a matrix's folder to run it again).", "",
             "| matrix | cells | seeds | findings that agree |", "| --- | --- | --- | --- |",
             *rows, "", "## Every finding checked", "",
             "| finding | source | there | here | |", "| --- | --- | --- | --- | --- |",
             *findings, ""]
    out = folder / "README.md"
    out.write_text("\n".join(lines))
    return out


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
