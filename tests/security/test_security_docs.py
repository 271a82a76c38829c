"""The custom-defense example of docs/security.md runs as written: its module, loaded from a
package on sys.path, and its YAML line through config loading and one aggregation round; its
declared bounds are enforced by the config alone."""
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fedsec.security import (Federation, RoundContext, aggregate_round,
                             build_defense)

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)


def test_custom_defense_example_runs_from_yaml(tmp_path, monkeypatch):
    module = next(b for b in _blocks("python") if b.startswith("# mypkg/defenses.py"))
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "defenses.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mypkg", raising=False)

    config = yaml.safe_load(next(b for b in _blocks("yaml") if "mypkg.defenses" in b))
    defense = build_defense(config["defense_args"], Federation(5, 5))
    assert defense.params.bound == 0.5

    models = [(10.0, {"w": torch.full((3,), float(v))}) for v in (0.1, 0.2, 0.3, 0.4, 9.0)]
    ctx = RoundContext(0, list(range(5)), np.random.default_rng(0))
    out = aggregate_round(None, defense, models, {"w": torch.zeros(3)}, ctx,
                          base_aggregation=lambda *_: None)
    assert torch.allclose(out["w"], torch.full((3,), 0.3))  # mean of 0.2, 0.3, 0.4: under it

    models[1] = (10.0, {"w": torch.full((3,), 2.0)})
    models[2] = (10.0, {"w": torch.full((3,), 3.0)})
    out = aggregate_round(None, defense, models, {"w": torch.zeros(3)}, ctx,
                          base_aggregation=lambda *_: None)
    assert torch.allclose(out["w"], torch.full((3,), 0.5))  # 0.4, 2, 3 give 1.8: clipped

    # The declared bounds are enforced without any validation code in the class.
    for key, value, message in (("beta", 0.5, "defense_args.beta=0.5 must be in [0, 0.5)"),
                                ("bound", -1, "defense_args.bound=-1.0 must be a positive")):
        with pytest.raises(ValueError, match=re.escape(message)):
            build_defense({**config["defense_args"], key: value}, Federation(5, 5))
