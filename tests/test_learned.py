"""Learned optimizers replay exactly the runs the baselines get for the same seed."""

import numpy as np
import torch

from l2o import experiments
from l2o.features import FeatureConfig
from l2o.gps import rollout, CostProblem, teacher_actor
from l2o.experiments import streams_of
from l2o.learned import evaluate_psd
from l2o.policy import LSTMPolicy, PolicyConfig
from l2o.problems import MLPProblem


def toy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 4, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    return MLPProblem(x, y, n_hidden=3, n_classes=2, batch_size=8, init_std=0.3)


def test_replayed_streams_match_the_runner():
    P, seeds, T = toy(), [0, 3], 6
    x0, idx = streams_of(P, seeds, T)
    # plain SGD through gps.rollout on the replayed streams == experiments.train with SGD
    sgd = teacher_actor(lr=0.1, momentum=0.0)
    s = rollout(P, CostProblem(P, 0, 0), T, 2, sgd, FeatureConfig(), torch.Generator(), None,
                need_states=False, x0=x0, streams=idx)
    for i, seed in enumerate(seeds):
        ref = experiments.train(P, "sgd", T, seed, hparams={"lr": 0.1})
        np.testing.assert_allclose(s.true_loss[i], ref.true_loss, rtol=1e-10)


def test_evaluate_psd_returns_comparable_results():
    P = toy()
    policy = LSTMPolicy(PolicyConfig(hidden_size=4), generator=torch.Generator().manual_seed(1))
    policy.double()
    res = evaluate_psd(P, policy, [0, 1], 5)
    assert [r.seed for r in res] == [0, 1]
    assert all(r.true_loss.shape == (6,) and r.optimizer == "psd" for r in res)
    assert all(np.isfinite(r.meta_loss) or r.diverged for r in res)


def test_the_learned_runs_use_the_runners_divergence_rule(data_dir):
    """One rule: ``experiments.divergence_point`` finds where ``train`` stopped a run, and
    it is what the learned optimizers' batched rollouts are cut with."""
    import numpy as np

    from l2o import data, experiments

    assert experiments.divergence_point([2.0, 1.0, 0.5]) is None
    assert experiments.divergence_point([2.0, 1.0, 2001.0, 1.0]) == 2
    assert experiments.divergence_point([2.0, 1.0, np.inf]) == 2
    assert experiments.divergence_point([2.0, 1.0, 0.5], [1.0, np.nan]) == 1
    assert experiments.divergence_point([2.0, 3000.0], factor=None) is None
    P = data.make_problem("faces", 48, 48, batch_size=64, data_dir=data_dir)
    r = experiments.train(P, "sgd", 30, seed=0, hparams={"lr": 1e4})
    assert r.diverged
    assert experiments.divergence_point(r.true_loss, r.minibatch_loss) == r.diverged_at


def test_rescoring_the_shipped_policies_reproduces_the_committed_runs(data_dir):
    """The shipped PSD and L2L, and a tuned baseline, re-run now on Figure 1's faces panel
    give the committed figure runs (their first 40 iterations: a stream's first rows do
    not depend on the horizon), to float32 round-off."""
    import pytest

    from l2o import figures
    from l2o.data import make_problem

    setting = dict(experiments.FIGURES[1])
    P = make_problem("faces", setting["n_in"], setting["n_hidden"],
                     batch_size=setting["batch_size"], data_dir=data_dir)
    horizon, seeds = 40, list(experiments.EVAL_SEEDS)
    for name, f in (("psd", figures.PSD_FILE), ("l2l", figures.L2L_FILE)):
        paths = figures._learned_paths(name, "faces", setting, seeds, f, figures.LEARNED_DIR)
        if not all(p.exists() for p in paths.values()):
            pytest.skip(f"no committed {name} runs in {figures.LEARNED_DIR}")
        # all seeds in one batch, as the figures run them: L2L's steps amplify the
        # round-off of a different batch shape within a few dozen iterations
        now = figures.learned_runs(name, "faces", setting | {"horizon": horizon}, seeds,
                                   f.read_bytes(), f.name, data_dir)
        for s, run in zip(seeds, now):
            stored = experiments.RunResult.load(paths[s])
            np.testing.assert_allclose(run.true_loss, stored.true_loss[:horizon + 1],
                                       rtol=1e-5, err_msg=f"{name}, seed {s}")
    spec = experiments.ExperimentSpec("faces", 48, 48, 64, setting["horizon"], "adam", 0)
    stored = experiments.RunResult.load(experiments.result_path(spec, experiments.GRID_DIR))
    now = experiments.train(P, "adam", horizon, seed=0)
    np.testing.assert_allclose(now.true_loss, stored.true_loss[:horizon + 1], rtol=1e-5)
