"""The one rollout loop (l2o.rollout): what it records, the divergence rule, and that every
optimizer of the package runs through it."""

import numpy as np
import pytest
import torch

from l2o import experiments, gps, gps_sweep, l2l, learned, outer
from l2o import rollout as loop
from l2o.features import FeatureConfig
from l2o.policy import LSTMPolicy, PolicyConfig
from l2o.problems import MLPProblem


def toy(n_examples=60):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_examples, 3, generator=g)
    y = (x[:, 0] > 0).long()
    return MLPProblem(x, y, n_hidden=4, n_classes=2, batch_size=8, init_std=0.3, name="toy")


def streams(P, n, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([P.sample_indices(g, n) for _ in range(T)])


def test_the_record_is_the_minibatch_and_the_objective_at_each_iterate():
    P, n, T = toy(), 3, 7
    x0 = P.init(torch.Generator().manual_seed(1), n)
    idx = streams(P, n, T)
    seen = []

    def delta(t, x, loss, g):
        seen.append(x.clone())
        return -0.5 * g

    traj = loop.rollout(P, loop.StepActor(delta), x0, idx, eval_every=3)
    for t in range(T):
        loss, _ = P.minibatch_loss_and_grad(seen[t], idx[t])
        np.testing.assert_array_equal(traj.minibatch_loss[:, t], loss.double().numpy())
    evaluated = [0, 3, 6, 7]                      # every 3rd iterate and the last
    for t in range(T + 1):
        col = traj.true_loss[:, t]
        if t in evaluated:
            x = seen[t] if t < T else traj.x
            np.testing.assert_array_equal(col, P.true_loss(x).double().numpy())
        else:
            assert np.isnan(col).all()
    assert (traj.grad_evals == T).all() and traj.diverged_at == [None] * n


def test_watch_cuts_a_diverging_trajectory_and_stops_evaluating_it():
    P, T = toy(), 6
    x0 = P.init(torch.Generator().manual_seed(2), 2)
    rows_evaluated = []

    def objective(x, t):
        rows_evaluated.append(x.shape[0])
        return P.true_loss(x)

    def delta(t, x, loss, g):               # row 1 explodes at step 2
        d = -0.1 * g
        if t == 2:
            d[1] = 1e30
        return d

    traj = loop.rollout(P, loop.StepActor(delta), x0, streams(P, 2, T), objective=objective,
                        watch=True, divergence_factor=10.0)
    assert traj.diverged_at == [None, 3]
    assert np.isnan(traj.true_loss[1, 3:]).all() and np.isnan(traj.minibatch_loss[1, 3:]).all()
    assert np.isfinite(traj.true_loss[0]).all()
    assert rows_evaluated == [2, 2, 2, 2, 1, 1, 1]  # row 1 no longer evaluated after 3
    assert traj.grad_evals.tolist() == [T, 3]


def test_lazy_batches_are_drawn_in_step_order_and_calls_are_counted():
    P, T = toy(), 4
    drawn = []

    def batches(t):
        drawn.append(t)
        return streams(P, 1, 1, seed=t)[0]

    class TwoLooks:                          # a line search: two evaluations per step
        def start(self, x0):
            pass

        def step(self, t, x, batch):
            _, g = batch(x)
            batch(x - g)
            return x - 0.1 * g

    traj = loop.rollout(P, TwoLooks(), P.init(torch.Generator(), 1), batches, T)
    assert drawn == list(range(T)) and traj.grad_evals.tolist() == [2 * T]


def test_every_optimizer_runs_through_the_one_loop(monkeypatch, data_dir):
    calls = []
    real = loop.rollout

    def counting(problem, actor, *args, **kw):
        calls.append(type(actor).__name__)
        return real(problem, actor, *args, **kw)

    monkeypatch.setattr(loop, "rollout", counting)
    P = toy()
    experiments.train(P, "adam", 3, seed=0)                       # the baselines
    policy = LSTMPolicy(PolicyConfig(hidden_size=4), generator=torch.Generator().manual_seed(0))
    learned.evaluate_psd(P, policy, [0], 3, FeatureConfig())     # π (and ψ, the teachers)
    net = l2l.L2LNet(hidden_size=4)
    learned.evaluate_l2l(P, net, [0], 3)                          # L2L
    x0 = P.init(torch.Generator(), 1)
    gps_sweep.per_group_momentum(P, x0, streams(P, 1, 3), [0.1] * 4, 0.9)   # a study's rule
    assert calls == ["OptimizerActor", "FeatureActor", "StepActor", "StepActor"]
    # the meta-training unrolls: L2L's (two windows) and π's by BPTT (one window)
    calls.clear()
    cfg = l2l.L2LConfig(horizon=4, unroll=2, trajectories=1, batch_size=8, hidden_size=4)
    l2l._train_epoch(net, P, cfg, torch.optim.Adam(net.parameters()), torch.Generator())
    ocfg = outer.OuterConfig(horizon=3, trajectories=1, unroll=3, cost_subset=0)
    policy.feature_config = FeatureConfig()
    outer.bptt_update_epoch(policy, P, gps.CostProblem(P, 0, 0), ocfg,
                            torch.optim.Adam(policy.parameters()), torch.Generator())
    assert calls == ["StepActor"] * 3
    assert all(p.grad is not None for p in net.parameters())   # meta-gradients flowed


def test_an_actor_must_return_the_next_iterate():
    P = toy()

    class Nothing:
        def start(self, x0):
            pass

        def step(self, t, x, batch):
            return None

    with pytest.raises(TypeError, match=r"must return x_\{t\+1\}"):
        loop.rollout(P, Nothing(), P.init(torch.Generator(), 1), streams(P, 1, 2))
