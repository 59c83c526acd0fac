"""Learned optimizers replay exactly the runs the baselines get for the same seed."""

import numpy as np
import torch

from l2o import experiments
from l2o.features import FeatureConfig
from l2o.gps import rollout, CostProblem, teacher_actor
from l2o.learned import _streams, evaluate_psd
from l2o.policy import LSTMPolicy, PolicyConfig
from l2o.problems import MLPProblem


def toy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 4, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    return MLPProblem(x, y, n_hidden=3, n_classes=2, batch_size=8, init_std=0.3)


def test_replayed_streams_match_the_runner():
    P, seeds, T = toy(), [0, 3], 6
    x0, idx = _streams(P, seeds, T)
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
