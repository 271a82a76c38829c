"""The messages a new user meets in configs and on the command line: refusals that name the
key, the section and what to write instead; commands that say what they did."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml

import fedsec.cli as cli
import fedsec.aggregation.selftest as selftest
from fedsec.cli import main
from fedsec.fl import RunDir, load_config, run_experiment
from fedsec.fl.config import ConfigError
from fedsec.fl.plot import run_label, run_title
from fedsec.integrations.fedml import FedMLDefender
from fedsec.matrix import load_matrix, run_matrix

from support.experiments import tiny, write_matrix

KRUM = {"enable_defense": True, "defense_type": "krum", "byzantine_client_num": 1,
        "krum_param_m": 3}
BYZANTINE = {"enable_attack": True, "attack_type": "byzantine", "attack_mode": "random",
             "byzantine_client_num": 1}


def write(tmp_path, text: str, name: str = "c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- 13: empty configs, integers ------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "# nothing yet\n", "{}\n"])
def test_empty_config_is_refused(tmp_path, text):
    with pytest.raises(ConfigError, match="is empty; give at least one section"):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize("value,message", [
    ("1e12", "got the string '1e12' .*write the integer out in digits"),
    ("1.0e12", "got the string '1.0e12' .*write the integer out in digits"),
    ("1.0e+12", "got the float 1000000000000.0"),
    ("10.0", "got the float 10.0"),
    ("'10'", r"got the string '10' \(written in quotes; drop them\)"),
    ("ten", "got 'ten'$"),
])
def test_integer_keys_take_integers_only(tmp_path, value, message):
    path = write(tmp_path, f"train_args:\n  comm_round: {value}\n")
    with pytest.raises(ConfigError, match=f"train_args.comm_round must be an integer; {message}"):
        load_config(path)


def test_integers_stay_integers(tmp_path):
    config = load_config(write(tmp_path, "train_args:\n  comm_round: 1000000000000\n"))
    assert type(config.train.comm_round) is int and config.train.comm_round == 10**12


# --- 14: messages name their section and YAML key --------------------------------------------------

@pytest.mark.parametrize("section,args,key", [
    ("defense_args", {**KRUM, "byzantine_client_num": 9}, "defense_args.byzantine_client_num=9"),
    ("attack_args", {**BYZANTINE, "byzantine_client_num": 99},
     "attack_args.byzantine_client_num=99"),
])
def test_component_errors_name_their_section(tmp_path, section, args, key):
    path = write(tmp_path, yaml.safe_dump(tiny(**{section: args})))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(key), str(error.value)


def test_missing_data_names_the_yaml_key(tmp_path):
    config = load_config(write(tmp_path, yaml.safe_dump(tiny(data_args={"dataset": "mnist"}))))
    with pytest.raises(ValueError, match=r"data_args\.data_cache_dir"):
        run_experiment(config, tmp_path / "run", progress=False)


def test_bad_yaml_in_set_is_one_line(tmp_path, capsys):
    assert main(["run", "--set", "train_args.comm_round=[1", "--out", str(tmp_path / "r"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "override 'train_args.comm_round=[1': the value '[1' is not valid YAML" in err


# --- 15: matrix seeds; one-seed verdicts ----------------------------------------------------------

@pytest.mark.parametrize("seeds", ["0", "-1", "two"])
def test_matrix_refuses_impossible_seed_counts(tmp_path, capsys, seeds):
    path = write_matrix(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["matrix", str(path), "--seeds", seeds, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert "argument --seeds" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("seeds", [0, -1])
def test_run_matrix_refuses_impossible_seed_counts(tmp_path, seeds):
    with pytest.raises(ValueError, match=f"seeds={seeds} must be an integer >= 1"):
        run_matrix(load_matrix(write_matrix(tmp_path)), tmp_path / "out", seeds=seeds,
                   progress=False)


def test_report_marks_claims_decided_on_one_seed(tmp_path):
    out = tmp_path / "out"
    run_matrix(load_matrix(write_matrix(tmp_path)), out, seeds=1, progress=False)
    report = (out / "report.md").read_text()
    verdict_rows = [line for line in report.splitlines() if line.startswith("| m-Krum")
                    or line.startswith("| Byzantine")]
    assert len(verdict_rows) == 2
    assert all("| inconclusive (one seed: no spread to judge by) |" in row
               for row in verdict_rows)
    summary = json.loads((out / "summary.json").read_text())
    assert [c["seeds"] for c in summary["claims"]] == [1, 1]
    assert all(c["here"] == "inconclusive" and c["interval"] is None and c["agrees"] is None
               for c in summary["claims"])


# --- 16 and 20: plots -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def undefended_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plot") / "run"
    run_experiment(load_config_from(tiny(attack_args=BYZANTINE, train_args={"comm_round": 2}),
                                    folder.parent), folder, progress=False)
    return folder


def load_config_from(raw: dict, folder):
    return load_config(write(folder, yaml.safe_dump(raw), "config.yaml"))


def test_plot_refuses_an_unknown_metric_listing_the_known(undefended_run, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert main(["plot", str(undefended_run), "--metric", "accuracyy", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has metric 'accuracyy'; metrics in the records:" in err and "test_accuracy" in err
    assert not out.exists()


def test_undefended_run_is_labelled_fedavg_and_titled_with_what_ran(undefended_run):
    run = RunDir(undefended_run)
    assert run_label(run) == "byzantine + FedAvg"
    title = run_title(run)
    assert title.startswith("attack: byzantine (1 attacker per round); defense: none (FedAvg)")
    config = run.config()["train_args"]
    assert f"{config['client_num_per_round']} of {config['client_num_in_total']} clients" in title


# --- 17: one federation check for the YAML path and the FedML facade -------------------------------

def test_fedml_init_refuses_more_clients_per_round_than_in_total(tmp_path):
    args = SimpleNamespace(client_num_in_total=5, client_num_per_round=8, random_seed=0, **KRUM)
    with pytest.raises(ValueError) as facade:
        FedMLDefender().init(args)
    raw = tiny(train_args={"client_num_in_total": 5, "client_num_per_round": 8})
    with pytest.raises(ConfigError) as yaml_path:
        load_config(write(tmp_path, yaml.safe_dump(raw)))
    assert str(facade.value) == str(yaml_path.value) == \
        "train_args.client_num_per_round=8 must be <= client_num_in_total=5"


# --- 18: selftest verdict, info in plain words, --help without torch ------------------------------

def test_selftest_ends_with_a_verdict():
    out = io.StringIO()
    assert selftest.run_selftest(quick=True, out=out)
    assert out.getvalue().splitlines()[-1].startswith("selftest passed: all ")


def test_selftest_failure_names_the_failing_checks(monkeypatch):
    wrong = selftest.Rule("mean (reference off by 1)", lambda u, b: selftest.rules.mean(
        u, backend=b), lambda x: selftest.reference.mean(x) + 1.0)
    monkeypatch.setattr(selftest, "_rules", lambda: [wrong])
    out = io.StringIO()
    assert not selftest.run_selftest(quick=True, out=out)
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("selftest FAILED: ") and "mean (reference off by 1) on cpu/torch" in last
    monkeypatch.setattr(cli, "_selftest", cli._selftest)
    assert main(["selftest", "--quick"]) == 1


@pytest.mark.parametrize("status,plain", [
    ("cudaErrorNoDevice: no CUDA-capable device is detected", "no GPU found"),
    ("cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version",
     "no CUDA driver"),
])
def test_info_says_why_no_gpu_in_plain_words(monkeypatch, capsys, status, plain):
    import fedsec.aggregation.backends.build

    monkeypatch.setattr(fedsec.aggregation.backends.build, "build_info", lambda: {
        "version": "0", "native": True, "native_error": None, "cuda_built": True,
        "cuda_devices": 0, "cuda_status": status, "cpu_isa": "avx2",
        "cpu_isas": ["avx2", "baseline"], "num_threads": 2})
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"CUDA: built, but no usable GPU: {plain}" in out and status in out


def test_info_json_is_build_info(capsys):
    import fedsec

    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == fedsec.build_info()


def test_help_describes_the_tool_without_importing_torch():
    code = ("import sys\nfrom fedsec.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\nprint('torch imported:', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "federated-learning security benchmark" in out
    assert out.strip().endswith("torch imported: False")
