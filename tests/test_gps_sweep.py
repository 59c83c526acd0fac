"""Chapter 5's studies (l2o.gps_sweep) on a tiny objective: what they choose and score."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from l2o import experiments, gps_sweep
from l2o.features import FeatureConfig
from l2o.gps import load_policy
from l2o.policy import LSTMPolicy, PolicyConfig

TINY = dict(horizon=6, num_samples=2, num_iterations=2, inner_iterations=1, coords_per_group=6,
            cost_subset=500, policy_steps=2, policy_batch=8, pretrain_steps=3, eval_samples=2,
            seed=0)


def tiny_setting(**kw):
    return gps_sweep.SweepSetting(sizes=(4, 4), base=TINY, eval_seeds=(0, 1),
                                  val_seeds=(2000, 2001), tune_seeds=(1000,), budget=600, **kw)


def test_sweep_chooses_pi_on_validation_and_scores_it_on_held_out_seeds(tmp_path, data_dir):
    setting = tiny_setting()
    res = gps_sweep.run_sweep(setting, {"base": {}, "broken": {"kl_step": -1.0}},
                              references={"adam": {"lr": 0.03}},
                              tune={"sgd": {"lr": [0.1, 1.0]}}, out_dir=tmp_path)
    ok, broken = res.results
    assert "kl_step" in broken["error"]            # a failing variant is recorded, not raised
    assert res.best_variant() is ok
    # the chosen π: the best validation score among the pre-trained π and each iteration's
    val = [ok["pi0_fixed_val"]] + [it["pi_fixed_val"] for it in ok["iters"]]
    assert len(ok["iters"]) == 2 and ok["best_iter"] == int(np.argmin(val)) - 1
    assert len(ok["best_test_per_seed"]) == 2
    assert ok["best_test"] == pytest.approx(np.mean(ok["best_test_per_seed"]))
    # the saved π is the chosen one: re-scored, the same held-out numbers
    policy, fcfg, meta = load_policy(tmp_path / "base.best_policy.pt")
    assert meta["best_iter"] == ok["best_iter"]
    P = setting.problem()
    assert gps_sweep.pi_meta_losses(P, policy, 6, fcfg, (0, 1)) == ok["best_test_per_seed"]
    assert (tmp_path / "base.partial.json").exists()
    # references: the teacher, the fixed Adam, SGD tuned on the tuning seeds
    assert set(res.references) == {"teacher", "adam", "sgd_tuned"}
    assert res.tuning["sgd"]["best_lr"] in (0.1, 1.0)
    teacher = experiments.train_many(P, "momentum", 6, [0, 1], hparams=gps_sweep.TEACHER)
    assert res.reference["teacher"] == pytest.approx(
        np.mean([experiments.meta_loss(r.true_loss) for r in teacher]))
    d = res.to_dict()
    assert {"reference", "reference_per_seed", "eval_seeds", "val_seeds", "tuning",
            "tune_seeds", "base", "teacher", "features", "references", "sizes",
            "results"} == set(d)
    assert d["references"]["sgd_tuned"] == {"lr": res.tuning["sgd"]["best_lr"]}


def test_setting_rejects_overlapping_seeds_and_bad_budgets():
    with pytest.raises(ValueError, match="disjoint"):
        gps_sweep.SweepSetting(eval_seeds=(0, 1), val_seeds=(1, 2))
    with pytest.raises(ValueError, match="budget"):
        gps_sweep.SweepSetting(budget=0)


def test_per_group_momentum_with_one_step_everywhere_is_momentum(data_dir):
    P = tiny_setting().problem()
    seeds, T = [1000, 1001], 8
    x0 = torch.stack([experiments.initial_iterate(P, s) for s in seeds])
    idx = torch.stack([experiments.minibatch_stream(P, s, T) for s in seeds], 1)
    ours = gps_sweep.per_group_momentum(P, x0, idx, [0.3] * 4, 0.9)
    torch_sgd = gps_sweep.optimizer_meta_losses(P, "momentum", {"lr": 0.3, "momentum": 0.9},
                                                T, seeds)
    assert ours == pytest.approx(np.mean(torch_sgd), rel=1e-9)
    # a step that diverges scores inf
    assert gps_sweep.per_group_momentum(P, x0, idx, [1e6] * 4, 0.9) == float("inf")


def test_ceiling_sorts_the_grids_and_tries_every_per_group_step(data_dir):
    P = tiny_setting().problem()
    grids = {"momentum": [{"lr": 0.1, "momentum": 0.9}, {"lr": 1.0, "momentum": 0.5}],
             "adam": [{"lr": 0.01}, {"lr": 0.1}]}
    res = gps_sweep.ceiling(P, seeds=[1000], horizon=5, grids=grids,
                            group_lrs=((0.1, 1.0), (1.0,), (0.1, 1.0), (1.0,)))
    for rows in res.baselines.values():
        losses = [r["meta_loss"] for r in rows]
        assert losses == sorted(losses) and len(rows) == 2
    assert res.per_group_momentum["n_tried"] == 4
    assert res.per_group_momentum["groups"] == ["W1", "b1", "W2", "b2"]
    q = res.gradient_abs_quantiles_t0
    assert 0 <= q["q10"] <= q["q50"] <= q["q90"] <= q["q99"]
    with pytest.raises(ValueError, match="momentum"):
        gps_sweep.ceiling(P, grids={"adam": [{"lr": 0.1}]})


def test_transfer_rows_rank_pi_among_the_references(data_dir):
    policy = LSTMPolicy(PolicyConfig(hidden_size=8), generator=torch.Generator().manual_seed(0))
    objectives = [("MNIST-4", "mnist", 4, 4, 16, 5, {})]
    refs = {"adam": {"lr": 0.05}, "sgd": {"lr": 0.1}}
    (row,) = gps_sweep.transfer(policy, FeatureConfig(), [0, 1, 2], objectives, refs)
    d = row.to_dict()
    assert set(d["per_seed"]) == {"psd", "adam", "sgd"}
    means = d["mean"]
    assert d["rank_of_psd"] == 1 + sum(means[k] < means["psd"] for k in ("adam", "sgd"))
    diff = np.array(d["per_seed"]["psd"]) - np.array(d["per_seed"]["adam"])
    assert d["psd_minus_adam"] == pytest.approx(diff.mean())
    assert d["psd_wins_vs_adam"] == int((diff < 0).sum())
    with pytest.raises(ValueError, match="adam"):
        gps_sweep.transfer(policy, FeatureConfig(), [0], objectives, {"sgd": {"lr": 0.1}})


def test_command_lines_check_their_arguments(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        gps_sweep.main(["sweep", "--out", str(tmp_path), "--variants", "{not json"])
    assert e.value.code == 2 and "--variants is not valid JSON" in capsys.readouterr().err
    # the scripts under the earlier names are the same commands
    out = subprocess.run([sys.executable, "scripts/gps_ceiling.py", "--help"],
                         capture_output=True, text=True, cwd=experiments.ROOT)
    assert out.returncode == 0 and "--out" in out.stdout
