"""The index of a folder of matrix reports (``python -m fedsec.matrix.index FOLDER``, from each
report's summary.json): each matrix's title, size, stand-in and how its published findings fare
here; per matrix, each finding's quoted sentence, verdict and interval; every finding in one
table; where a matrix rerun on another stand-in (``extends``) reaches another verdict than the
matrix it reruns; and the findings no matrix can test here, with why.

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
from .report import one_line

VERDICT = {True: "agrees", False: "**disagrees**", None: "-"}
LEGACY = ("holds", "fails", "no data")  # verdicts of summaries from before intervals


def write_index(folder: Path, configs: list[Path] = ()) -> Path:
    """README.md in ``folder`` for every ``*/summary.json`` written by ``fedsec matrix``; the
    matrix ``configs`` (files) without results there are listed as not run."""
    rows, findings, sections, untestable = [], [], [], []
    summaries = {p.parent.name: json.loads(p.read_text())
                 for p in sorted(folder.glob("*/summary.json"), key=_natural)}
    for name, summary in summaries.items():
        claims = summary["claims"]
        agree = sum(c["agrees"] is True for c in claims)
        counts = ", ".join(f"{sum(c['here'] == o for c in claims)} {o}"
                           for o in (OUTCOMES if "method" in summary else LEGACY))
        method = (f"{summary['method']}; config {_commit(summary['config_commit'])}"
                  if "method" in summary else "means only (older report: regenerate)")
        rows.append(f"| [{summary['title']}]({name}/report.md) | {summary['cells']} | "
                    f"{summary['seeds']} | {method} | {counts} | {agree} of {len(claims)} |")
        findings += [f"| {c['claim']} ([{name}]({name}/report.md)) | {c['source']} | "
                     f"{c['expected']} | {c['here']} | {_interval(c)} | "
                     f"{VERDICT[c['agrees']]} |" for c in claims]
        sections += _section(name, summary)
        untestable += [f"| {one_line(u['quote'])} | {one_line(u['source'])} | "
                       f"[{name}]({name}/report.md): {one_line(u['why'])} |"
                       for u in summary.get("untestable", [])]
    lines = ["# Benchmark results", "",
             "The matrices of configs/paper/ (FedMLSecurity's experiments at CPU scale on two "
             "stand-ins, and the adaptive attacks) and configs/sok.yaml (every attack against "
             "every defense). Every number here and in the reports comes from the runs: each "
             "report's seeds.csv holds every run's numbers, and the runs themselves are kept "
             "beside it (`cells/<cell>/seed<k>/`: the resolved config, one JSON record per "
             "round, the summary) where they are small enough to commit; "
             "`bash docs/results/regenerate.sh` rebuilds the reports from them and runs what "
             "is missing (delete a matrix's folder to run it again). A verdict is holds or "
             "contradicted when the interval of the claimed difference lies wholly on one "
             "side of its margin, inconclusive otherwise (each report says how).", "",
             "| matrix | cells | seeds | verdicts from | verdicts | findings that agree |",
             "| --- | --- | --- | --- | --- | --- |",
             *rows, "", "## Per matrix: the stand-in, and each finding's sentence", "",
             *sections, "## Every finding checked", "",
             "| finding | source | there | here | difference, interval | |",
             "| --- | --- | --- | --- | --- | --- |",
             *findings, ""]
    lines += _stand_ins_compared(summaries)
    missing = [c for c in configs if not (folder / c.stem / "summary.json").is_file()]
    if missing:
        lines += ["## Matrices not run yet", "",
                  "Their configs are in place; `bash docs/results/regenerate.sh` runs them "
                  "(and keeps every finished run):", "",
                  *(f"- `{c}`" for c in missing), ""]
    if untestable:
        lines += ["## Findings that cannot be tested here", "",
                  "| the source's sentence | source | matrix: why not |", "| --- | --- | --- |",
                  *untestable, ""]
    out = folder / "README.md"
    out.write_text("\n".join(lines))
    return out


def _section(name: str, summary: dict) -> list[str]:
    """A matrix's stand-in (the setting rows that differ from the source's) and its findings,
    each with its verdict, interval and the sentence it tests."""
    lines = [f"### [{summary['title']}]({name}/report.md)", ""]
    differ = [r for r in summary.get("setting", []) if r["paper"] != r["here"]]
    if differ:
        lines += ["Stand-in: " + "; ".join(f"{r['row']} {one_line(r['here'])} (source: "
                                           f"{one_line(r['paper'])})" for r in differ) + ".",
                  ""]
    for c in summary["claims"]:
        lines.append(f"- **{c['here']}** ({VERDICT[c['agrees']]}; the source: "
                     f"{c['expected']}): {c['claim']} ({c['source']}); {_interval(c)}")
        if c.get("quote"):
            lines.append(f"  > {one_line(c['quote'])}")
    return lines + [""]


def _stand_ins_compared(summaries: dict[str, dict]) -> list[str]:
    """Each finding of a matrix that reruns another on a second stand-in (its summary's
    ``extends``) whose verdict differs from the one it has there, by the finding's text."""
    pairs = [(name, s["extends"]) for name, s in summaries.items()
             if s.get("extends") in summaries]
    if not pairs:
        return []
    lines = ["## Where the stand-ins disagree", "",
             "A matrix that reruns another on a second stand-in tests the same findings with "
             "the same margins; these are the findings whose verdicts differ between the two "
             "(the other findings reach the same verdict on both).", "",
             "| finding | matrix | verdict, interval | rerun on another stand-in | verdict, "
             "interval |", "| --- | --- | --- | --- | --- |"]
    counts = []
    for name, parent in pairs:
        there = {c["claim"]: c for c in summaries[parent]["claims"]}
        shared = [(there[c["claim"]], c) for c in summaries[name]["claims"]
                  if c["claim"] in there]
        differ = [(a, b) for a, b in shared if a["here"] != b["here"]]
        counts.append(f"[{parent}]({parent}/report.md) against [{name}]({name}/report.md): "
                      f"{len(differ)} of {len(shared)} findings differ")
        lines += [f"| {b['claim']} | [{parent}]({parent}/report.md) | {a['here']}: "
                  f"{_interval(a)} | [{name}]({name}/report.md) | {b['here']}: "
                  f"{_interval(b)} |" for a, b in differ]
    return lines + ["", *(f"- {c}" for c in counts), ""]


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
    parser.add_argument("configs", type=Path, nargs="*",
                        help="matrix configs whose outputs belong in the folder (named "
                             "after the config): those without one are listed as not run")
    args = parser.parse_args(argv)
    print(f"wrote {write_index(args.folder, args.configs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
