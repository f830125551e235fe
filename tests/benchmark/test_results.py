"""Reuse of finished benchmark runs: unchanged settings reuse the record, a changed setting reruns."""
import json

import pytest

from ppkt.benchmark.results import Results
from ppkt.errors import UserError


def test_reuse_only_with_identical_settings(tmp_path):
    path = tmp_path / "results.json"
    calls = []

    def work(score):
        return lambda: calls.append(score) or {"miou": score}

    settings = {"config": {"train": {"iterations": 100, "seed": 0}}, "inputs": {"backbone": "abc"}}
    first = Results(path).run("ppkt_s0", settings, work(0.4), cell="full", seed=0)
    assert calls == [0.4] and first["miou"] == 0.4 and first["cell"] == "full"
    again = Results(path).run("ppkt_s0", json.loads(json.dumps(settings)), work(0.9), cell="full", seed=0)
    assert calls == [0.4] and again["miou"] == 0.4  # read back from disk, not rerun
    changed = {"config": {"train": {"iterations": 120, "seed": 0}}, "inputs": {"backbone": "abc"}}
    assert Results(path).run("ppkt_s0", changed, work(0.5), cell="full", seed=0)["miou"] == 0.5
    other_input = {**changed, "inputs": {"backbone": "def"}}
    assert Results(path).run("ppkt_s0", other_input, work(0.6), cell="full", seed=0)["miou"] == 0.6
    assert calls == [0.4, 0.5, 0.6]
    saved = json.loads(path.read_text())
    assert [r["name"] for r in saved["runs"]] == ["ppkt_s0"] and saved["runs"][0]["settings"] == other_input


def test_select_and_bad_file(tmp_path):
    r = Results(tmp_path / "results.json")
    for seed in (0, 1):
        for init in ("scratch", "ppkt"):
            r.run(f"{init}_s{seed}", {"seed": seed, "init": init}, lambda: {"miou": 0.1}, init=init, seed=seed)
    assert [x["name"] for x in r.select(init="ppkt")] == ["ppkt_s0", "ppkt_s1"]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="bad.json"):
        Results(tmp_path / "bad.json")
