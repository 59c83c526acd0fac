"""The GPS arms study on a tiny net: runs, scores on validation seeds, resumes."""

import dataclasses
import json

import numpy as np

from l2o import gps_study
from tests.test_gps import CFG, tiny_problem


def test_an_arm_runs_scores_every_iteration_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(gps_study, "teacher_hparams", lambda name: {"lr": 0.2, "momentum": 0.5})
    monkeypatch.setattr(gps_study, "PolicyConfig", lambda: __import__("l2o.policy").policy.PolicyConfig(hidden_size=8))
    arm = gps_study.ARMS["paper"]
    P = tiny_problem()
    seeds = (2000, 2001)
    s1 = gps_study.run_arm(arm, P, tmp_path / "paper", 1, CFG, seeds)
    assert [r["iteration"] for r in s1["rows"]] == [0, 1]
    assert all(len(r["pi"]) == 2 and np.all(np.isfinite(r["psi_mean"])) for r in s1["rows"])
    s2 = gps_study.run_arm(arm, P, tmp_path / "paper", 2, CFG, seeds)
    assert [r["iteration"] for r in s2["rows"]] == [0, 1, 2]
    assert s2["rows"][:2] == json.loads(json.dumps(s1["rows"]))
    summary = gps_study.summarise(s2)
    assert summary["pi_best"] == min(np.mean(r["pi"]) for r in s2["rows"])


def test_unknown_arm_is_a_usage_error(capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        gps_study.main(["arms", "--arms", "nosuch"])
    assert e.value.code == 2
    assert "unknown arm" in capsys.readouterr().err


def test_choose_snapshot_ships_the_best_on_validation_seeds(tmp_path):
    from l2o.features import FeatureConfig
    from l2o.gps import load_policy, save_policy
    from l2o.policy import LSTMPolicy, PolicyConfig

    import torch

    P = tiny_problem()
    snaps = tmp_path / "snapshots"
    for i in range(3):
        pol = LSTMPolicy(PolicyConfig(hidden_size=8), generator=torch.Generator().manual_seed(i))
        for g in range(4):
            pol.set_output_scale(g, 0.01 * (i + 1))
        save_policy(snaps / f"pi_iter{i:02d}.pt", pol, FeatureConfig(), {"iteration": i + 1})
    res = gps_study.choose_snapshot(P, tmp_path, seeds=(2000, 2001), horizon=10)
    assert res["best"]["mean"] == min(r["mean"] for r in res["rows"])
    shipped, _, meta = load_policy(tmp_path / "psd_mnist48.pt")
    assert meta["snapshot"] == res["best"]["file"]
    best, _, _ = load_policy(snaps / res["best"]["file"])
    for a, b in zip(shipped.state_dict().values(), best.state_dict().values()):
        assert torch.equal(a, b)
    assert (tmp_path / "validation.json").exists()
