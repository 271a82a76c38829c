"""Claims' verdicts: Student's t quantile against table values, Welch's interval against
hand-computed cases, the three outcomes for every operator, one seed and no data; the report
quotes the sentence, opens with the setting table and names the config's commit; the shipped
configs quote the paper verbatim and state the setting they run. No test here trains a model."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from fedsec.fl.config import ConfigError
from fedsec.matrix import load_matrix
from fedsec.matrix.claims import (betainc, check_claims, decide, t_cdf, t_quantile,
                                  welch_interval)
from fedsec.matrix.index import write_index
from fedsec.matrix.report import config_commit, write_report
from fedsec.matrix.results import CellResult, SeedResult

from support.experiments import QUOTE, shipped_matrix_paths, write_matrix

ROOT = Path(__file__).resolve().parents[2]
PAPER = Path(os.environ.get("FEDSEC_PAPER_TEXT",
                            ROOT.parent / "shared" / "papers" / "fedmlsecurity.txt"))


# --- Student's t and the incomplete beta -----------------------------------------------------

@pytest.mark.parametrize("p,df,t", [  # two-sided tables (Abramowitz & Stegun 26.10)
    (0.975, 1, 12.7062047), (0.975, 2, 4.3026527), (0.975, 4, 2.7764451),
    (0.975, 5, 2.5705818), (0.975, 8, 2.3060041), (0.975, 10, 2.2281389),
    (0.975, 30, 2.0422725), (0.975, 120, 1.9799304), (0.95, 5, 2.0150484),
    (0.995, 10, 3.1692727), (0.9, 3, 1.6377444)])
def test_t_quantile_matches_the_tables(p, df, t):
    assert t_quantile(p, df) == pytest.approx(t, abs=1e-6)
    assert t_quantile(1 - p, df) == pytest.approx(-t, abs=1e-6)


def test_t_cdf_closed_forms_and_non_integer_df():
    assert t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-12)  # Cauchy: 1/2 + atan(t) / pi
    for t in (-2.0, 0.3, 1.5, 7.0):  # df = 2: 1/2 + t / (2 sqrt(2 + t^2))
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    assert t_cdf(0.0, 3.7) == 0.5
    q = t_quantile(0.975, 5.5)
    assert t_quantile(0.975, 6) < q < t_quantile(0.975, 5)
    assert t_cdf(q, 5.5) == pytest.approx(0.975, abs=1e-12)


def test_betainc_closed_forms():
    for x in (0.0, 0.1, 0.5, 0.93, 1.0):
        assert betainc(1, 1, x) == pytest.approx(x, abs=1e-12)
        assert betainc(3.5, 1, x) == pytest.approx(x ** 3.5, abs=1e-12)
        assert betainc(1, 2.5, x) == pytest.approx(1 - (1 - x) ** 2.5, abs=1e-12)
    assert betainc(7.3, 7.3, 0.5) == pytest.approx(0.5, abs=1e-12)


# --- Welch's interval ------------------------------------------------------------------------

def test_welch_interval_equal_variances_df_8():
    # means 3 and 2, variances 2.5, n = 5 each: se = 1, Welch df = 8, t(0.975, 8) = 2.3060041
    lo, hi = welch_interval([1, 2, 3, 4, 5], [0, 1, 2, 3, 4], 0.95)
    assert (lo, hi) == pytest.approx((1 - 2.3060041, 1 + 2.3060041), abs=1e-6)


def test_welch_interval_unequal_sizes_and_variances():
    # left: n = 3, mean 10, variance 3 (se^2 1); right: n = 5, mean 2, variance 2.5 (se^2 0.5)
    # Welch df = 1.5^2 / (1^2 / 2 + 0.5^2 / 4) = 4, t(0.975, 4) = 2.7764451
    r3 = math.sqrt(3)
    lo, hi = welch_interval([10 - r3, 10, 10 + r3], [0, 1, 2, 3, 4], 0.95)
    half = 2.7764451 * math.sqrt(1.5)
    assert (lo, hi) == pytest.approx((8 - half, 8 + half), abs=1e-6)


def test_one_sample_interval_against_a_value():
    # mean 3 - 2, se = sqrt(2.5 / 5), df = 4
    lo, hi = welch_interval([1, 2, 3, 4, 5], 2.0, 0.95)
    half = 2.7764451 * math.sqrt(0.5)
    assert (lo, hi) == pytest.approx((1 - half, 1 + half), abs=1e-6)
    assert welch_interval([1.0, 1.0, 1.0], 1.0, 0.95) == (0.0, 0.0)  # no spread: the point


def test_an_interval_needs_two_values_per_side():
    with pytest.raises(ValueError, match="two values per side"):
        welch_interval([1.0], [1.0, 2.0], 0.95)


@pytest.mark.parametrize("op,interval,margin,outcome", [
    (">=", (0.01, 0.05), 0.0, "holds"), (">=", (0.0, 0.05), 0.0, "holds"),
    (">", (0.0, 0.05), 0.0, "inconclusive"), (">=", (-0.05, -0.01), 0.0, "contradicted"),
    (">", (-0.05, 0.0), 0.0, "contradicted"), (">=", (-0.03, 0.01), -0.02, "inconclusive"),
    (">=", (-0.019, 0.01), -0.02, "holds"),
    ("<", (-0.2, -0.06), -0.05, "holds"), ("<", (-0.2, -0.04), -0.05, "inconclusive"),
    ("<", (-0.05, 0.1), -0.05, "contradicted"), ("<=", (-0.1, 0.0), 0.0, "holds"),
    ("<=", (0.001, 0.1), 0.0, "contradicted"),
    ("~=", (-0.01, 0.015), 0.02, "holds"), ("~=", (-0.03, 0.0), 0.02, "inconclusive"),
    ("~=", (0.021, 0.05), 0.02, "contradicted"), ("~=", (-0.09, -0.03), 0.02, "contradicted"),
    (">=", None, 0.0, "inconclusive")])
def test_decide_three_outcomes(op, interval, margin, outcome):
    assert decide(op, interval, margin) == outcome


# --- verdicts on a matrix's numbers ------------------------------------------------------------

CELLS = {("none", "fedavg"): [0.90, 0.91, 0.89, 0.90, 0.92],
         ("none", "m-krum"): [0.88, 0.87, 0.89, 0.88, 0.86],
         ("byzantine", "fedavg"): [0.40, 0.45, 0.38, 0.50, 0.42],
         ("byzantine", "m-krum"): [0.89, 0.90, 0.88, 0.91, 0.90]}


def claim(text, left, op, right=None, value=None, margin=0.0, **extra):
    out = {"claim": text, "source": "a study", "expected": "holds",
           "metric": "final_test_accuracy", "left": dict(zip(("attack", "defense"), left)),
           "op": op, "margin": margin, "note": f"note of {text}", **extra}
    if right is not None:
        out["right"] = dict(zip(("attack", "defense"), right))
    else:
        out["value"] = value
    return out


CLAIMS = [
    claim("m-krum keeps clean accuracy", ("byzantine", "m-krum"), ">=", ("none", "fedavg"),
          margin=-0.02),
    claim("byzantine is harmless", ("byzantine", "fedavg"), ">=", ("none", "fedavg"),
          margin=-0.05),
    claim("m-krum equals fedavg", ("none", "m-krum"), "~=", ("none", "fedavg"), margin=0.01),
    claim("m-krum reaches 0.85", ("byzantine", "m-krum"), ">", value=0.85),
    claim("backdoor", ("byzantine", "m-krum"), ">=", value=0.5,
          metric="final_backdoor_accuracy"),
    claim("fails one", ("byzantine", "fedavg"), "<", ("none", "fedavg"), expected="fails",
          level=0.99)]


def synthetic(tmp_path, values=CELLS, claims=CLAIMS, **extra):
    """A loaded 2 x 2 matrix and results with the given per-seed accuracies."""
    matrix = load_matrix(write_matrix(tmp_path, claims=claims, **extra))
    results = [CellResult(c, tuple(SeedResult(k, {"final_test_accuracy": v},
                                              [{"round": 0, "test_accuracy": v}])
                                   for k, v in enumerate(values[c.value("attack"),
                                                                c.value("defense")])))
               for c in matrix.cells]
    return matrix, results


def test_verdicts_from_intervals(tmp_path):
    matrix, results = synthetic(tmp_path)
    v = {x.claim.claim: x for x in check_claims(matrix, results)}
    keeps = v["m-krum keeps clean accuracy"]
    expected = welch_interval(CELLS["byzantine", "m-krum"], CELLS["none", "fedavg"], 0.95)
    assert keeps.interval == pytest.approx(expected) and keeps.outcome == "inconclusive"
    assert keeps.difference == pytest.approx(0.896 - 0.904) and keeps.seeds == 5
    assert v["byzantine is harmless"].outcome == "contradicted"
    assert v["byzantine is harmless"].agrees is False
    assert v["m-krum equals fedavg"].outcome == "contradicted"  # 2.6 points apart, +- 1
    reaches = v["m-krum reaches 0.85"]
    assert reaches.outcome == "holds" and reaches.agrees is True
    assert reaches.right == 0.85 and reaches.right_seeds is None
    assert reaches.interval == pytest.approx(
        welch_interval(CELLS["byzantine", "m-krum"], 0.85, 0.95))
    assert v["backdoor"].no_data and v["backdoor"].outcome == "inconclusive"
    fails = v["fails one"]  # the source found it fails; it holds here: disagrees
    assert fails.claim.level == 0.99 and fails.outcome == "holds" and fails.agrees is False
    assert fails.interval == pytest.approx(
        welch_interval(CELLS["byzantine", "fedavg"], CELLS["none", "fedavg"], 0.99))


def test_one_seed_gives_no_interval(tmp_path):
    one = {k: vs[:1] for k, vs in CELLS.items()}
    matrix, results = synthetic(tmp_path, one)
    for v in check_claims(matrix, results):
        assert v.interval is None and v.outcome == "inconclusive" and v.agrees is None
        assert v.single_seed or v.no_data


def test_report_quotes_opens_with_the_setting_and_names_the_commit(tmp_path):
    matrix, results = synthetic(tmp_path, claims=[
        {**claim("m-krum keeps clean accuracy", ("byzantine", "m-krum"), ">=",
                 ("none", "fedavg"), margin=-0.02),
         "source": "FedMLSecurity, Exp3, Section 5.1", "quote": QUOTE},
        claim("m-krum reaches 0.85", ("byzantine", "m-krum"), ">", value=0.85)])
    out = tmp_path / "out"
    out.mkdir()
    report = write_report(matrix, results, out, 5).read_text()
    head = report.split("\n")
    assert head[:4] == ["# Tiny: Byzantine vs m-Krum", "",
                        "| setting | paper | here | why it differs |",
                        "| --- | --- | --- | --- |"]
    assert head[4:10] == ["| dataset | CIFAR-10 | digits | shipped with fedsec |",
                          "| model | ResNet-20 | lr | fast on a CPU |",
                          "| clients | 10 | 10 | - |",
                          "| malicious | 1 | 2 | a stronger attack |",
                          "| m | 5 | 5 | - |", "| rounds | not stated | 2 | a test |"]
    lo, hi = welch_interval(CELLS["byzantine", "m-krum"], CELLS["none", "fedavg"], 0.95)
    assert (f"| m-krum keeps clean accuracy (final_test_accuracy) | FedMLSecurity, Exp3, "
            f"Section 5.1 | holds | inconclusive | byzantine / m-krum - none / fedavg: "
            f"-0.008, 95% [{lo:+.4g}, {hi:+.4g}]; claimed >= -0.02 | - |") in report
    assert f"\n> {QUOTE}\n" in report
    assert "| m-krum reaches 0.85 (final_test_accuracy) | a study | holds | holds | " \
           "byzantine / m-krum - 0.85: +0.046" in report
    # every note, whatever the verdict
    assert "Note: note of m-krum keeps clean accuracy" in report
    assert "Note: note of m-krum reaches 0.85" in report
    assert "Welch's t interval" in report and "(not in a git checkout)" in report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "Welch's t interval"
    assert summary["config_commit"] == "not in a git checkout"
    assert summary["setting"][3] == {"row": "malicious", "paper": "1", "here": "2",
                                     "why": "a stronger attack"}
    first = summary["claims"][0]
    assert first["quote"] == QUOTE and first["here"] == "inconclusive"
    assert first["interval"] == pytest.approx([lo, hi]) and first["level"] == 0.95
    index = write_index(tmp_path).read_text()
    assert f"| inconclusive | -0.008, 95% [{lo:+.4g}, {hi:+.4g}] | - |" in index
    assert "| Welch's t interval; config not in a git checkout | 1 holds, 0 contradicted, " \
           "1 inconclusive | 1 of 2 |" in index


def test_a_run_from_an_older_matrix_config_is_refused(tmp_path):
    matrix, results = synthetic(tmp_path)
    cell = results[3].cell
    config = cell.config(0).to_dict()
    config["defense_args"]["krum_param_m"] = 3
    results[3] = CellResult(cell, (SeedResult(0, {"final_test_accuracy": 0.9}, [], config),))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=r"cell byzantine / m-krum, seed 0: "
                                         r"defense_args.krum_param_m is 3, the matrix says 5"):
        write_report(matrix, results, out, 1)


def test_config_commit(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("a: 1\n")
    assert config_commit(path) == "not in a git checkout"

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=tmp_path, check=True, capture_output=True, text=True)

    git("init", "-q")
    assert config_commit(path) == "uncommitted"  # untracked
    git("add", "m.yaml")
    git("commit", "-q", "-m", "margins")
    head = git("log", "-1", "--format=%h").stdout.strip()
    assert config_commit(path) == head
    path.write_text("a: 2\n")
    assert config_commit(path) == "uncommitted"


# --- config errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("extra,message", [
    ({"claims": [claim("x", ("none", "fedavg"), ">=", value=1, source="FedMLSecurity, Exp2, "
                       "Section 5.1")]}, "is FedMLSecurity; quote the sentence"),
    ({"claims": [claim("x", ("none", "fedavg"), ">=", value=1, source="FedMLSecurity, Exp2",
                       quote="q")]}, "must name the experiment and the section"),
    ({"claims": [claim("x", ("none", "fedavg"), "~=", value=1)]},
     r"op '~=' needs margin > 0 .* got margin=0"),
    ({"claims": [claim("x", ("none", "fedavg"), ">=", value=1, level=95)]},
     r"claims\[0\]: level=95 must be a confidence level between 0 and 1"),
    ({"level": 1.0}, "level=1.0 must be a confidence level"),
    ({"claims": [claim("x", ("none", "fedavg"), ">=", value="high")]},
     "value='high' must be a number"),
    ({"setting": {"dataset": {"paper": "a", "here": "a"}}}, "setting lacks row 'model'"),
    ({"setting": {**{r: {"paper": 1, "here": 1} for r in ("dataset", "model", "clients",
                                                           "malicious", "m")},
                  "rounds": {"paper": 100, "here": 2}}},
     r"setting.rounds: paper='100' and here='2' differ; say why"),
    ({"setting": {r: {"paper": 1, "here": 1, "source": "x"} for r in
                  ("dataset", "model", "clients", "malicious", "m", "rounds")}},
     "setting.dataset has unknown key 'source'; valid: paper, here, why"),
])
def test_bad_claims_and_settings(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_matrix(write_matrix(tmp_path, **extra))


# --- the shipped matrices ----------------------------------------------------------------------

def shipped():
    return [load_matrix(p) for p in shipped_matrix_paths()]


def _normalised(text: str) -> str:
    """The paper's text without its Markdown and TeX marks ('*m*-Krum', 'm -Krum', '$m = 5$')."""
    text = re.sub(r"m\s+-Krum", "m-Krum", text.replace("*", "").replace("$", ""))
    return " ".join(text.split())


def test_shipped_matrices_state_seeds_level_setting_and_quotes():
    for matrix in shipped():
        raw = yaml.safe_load(matrix.path.read_text())
        fixed_level = "level" in raw or "extends" in raw  # an extension keeps its parent's
        assert matrix.seeds >= 5 and fixed_level and matrix.setting, matrix.name
        for c in matrix.claims:
            if "FedMLSecurity" in c.source:
                assert c.quote, (matrix.name, c.claim)


def test_shipped_quotes_are_the_papers_sentences_of_their_experiment():
    if not PAPER.is_file():
        pytest.skip(f"the paper's text is not at {PAPER} (set FEDSEC_PAPER_TEXT)")
    paper = _normalised(PAPER.read_text())
    for matrix in shipped():
        for c in matrix.claims:
            if not c.quote or "FedMLSecurity" not in c.source:
                continue  # other sources' sentences are not in this paper
            quote = _normalised(c.quote)
            assert quote in paper, (matrix.name, c.quote)
            experiment = re.findall(r"Exp ?(\d+):", paper[:paper.index(quote)])[-1]
            assert f"Exp{experiment}," in c.source, (matrix.name, c.claim, experiment)
        for u in matrix.untestable:
            if "FedMLSecurity" in u.source:
                assert _normalised(u.quote) in paper, (matrix.name, u.quote)


def test_shipped_settings_say_what_the_cells_run():
    """The 'here' column names the clients, malicious clients (of the attacked cells), m and
    rounds of the cells."""
    for matrix in shipped():
        rows = {r.name: set(map(int, re.findall(r"\d+", r.here))) for r in matrix.setting}
        for cell in matrix.cells:
            config = cell.config(0).to_dict()
            attack, defense = config["attack_args"], config["defense_args"]
            malicious = (attack.get("byzantine_client_num") or attack.get("poisoned_client_num")
                         or 1) if attack["enable_attack"] else 0
            assert config["train_args"]["client_num_in_total"] in rows["clients"], matrix.name
            assert config["train_args"]["comm_round"] in rows["rounds"], matrix.name
            assert malicious in rows["malicious"] or not malicious, (matrix.name, cell.label)
            if defense.get("defense_type") == "krum":
                assert defense["krum_param_m"] in rows["m"], (matrix.name, cell.label)


def test_a_claim_may_test_the_detection_metrics(tmp_path):
    recall = claim("m-krum finds the attackers", ("byzantine", "m-krum"), ">=", value=0.9,
                   metric="detection_recall")
    matrix = load_matrix(write_matrix(tmp_path, claims=[recall]))
    assert matrix.claims[0].metric == "detection_recall"
