"""Convolutional GPS-BADMM end to end on a tiny net: runs, checkpoints, resumes exactly."""

import numpy as np
import pytest
import torch

from l2o.features import FeatureConfig
from l2o.gps import ConvolutionalGPS, GPSConfig
from l2o.policy import PolicyConfig
from l2o.problems import MLPProblem


def tiny_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return MLPProblem(x, y, n_hidden=4, n_classes=3, batch_size=16, init_std=0.1, name="toy")


CFG = GPSConfig(horizon=12, num_samples=3, num_iterations=2, inner_iterations=2,
                coords_per_group=6, cost_subset=0, policy_steps=3, policy_batch=8,
                pretrain_steps=5, eval_samples=2, prior_clusters=2, prior_points=500, seed=3)
PCFG = PolicyConfig(hidden_size=8)
TEACHER = {"lr": 0.2, "momentum": 0.9}


def make(tmp_path=None):
    return ConvolutionalGPS(tiny_problem(), CFG, FeatureConfig(), PCFG, TEACHER,
                            checkpoint_dir=tmp_path)


def test_two_iterations_run_with_finite_diagnostics(tmp_path):
    gps = make(tmp_path)
    history = gps.run()
    assert len(history) == 2
    for d in history:
        assert np.isfinite(d["psi_cost"]) and np.isfinite(d["pi_cost"])
        assert set(d["groups"]) == {"W1", "b1", "W2", "b2"}
        for gd in d["groups"].values():
            assert gd["eta"] > 0 and np.isfinite(gd["kl_pi_psi"])
            assert CFG.min_step_mult <= gd["step_mult"] <= CFG.max_step_mult
    assert (tmp_path / "checkpoint.pt").exists()


def test_resume_equals_uninterrupted(tmp_path):
    full = make(tmp_path / "a")
    full.run()
    part = make(tmp_path / "b")
    part.run(num_iterations=1)
    resumed = make(tmp_path / "b")
    assert resumed.resume()
    assert resumed.iteration == 1
    resumed.run()
    for (k, v), (k2, v2) in zip(full.policy.state_dict().items(), resumed.policy.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert [d["pi_cost"] for d in full.history] == [d["pi_cost"] for d in resumed.history]


def test_config_mismatch_on_resume_is_reported(tmp_path):
    make(tmp_path).run(num_iterations=1)
    other = ConvolutionalGPS(tiny_problem(), GPSConfig(**{**CFG.__dict__, "kl_step": 0.5}),
                             FeatureConfig(), PCFG, TEACHER, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="kl_step"):
        other.resume()
    rms = ConvolutionalGPS(tiny_problem(), CFG, FeatureConfig(grad_scale="rms"), PCFG, TEACHER,
                           checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="other features"):
        rms.resume()


def test_rms_features_with_an_adam_teacher_run(tmp_path):
    """The configuration of chapter 5's last runs: finite, checkpointed, resumable."""
    fcfg = FeatureConfig(grad_scale="rms")
    cfg = GPSConfig(**{**CFG.__dict__, "min_step_mult": 1.0, "max_step_mult": 1.0})
    teacher = {"name": "adam", "lr": 0.05}
    gps = ConvolutionalGPS(tiny_problem(), cfg, fcfg, PCFG, teacher, checkpoint_dir=tmp_path)
    history = gps.run()
    assert len(history) == 2 and all(np.isfinite(d["pi_cost"]) for d in history)
    assert all(gd["step_mult"] == 1.0 for d in history for gd in d["groups"].values())
    again = ConvolutionalGPS(tiny_problem(), cfg, fcfg, PCFG, teacher, checkpoint_dir=tmp_path)
    assert again.resume() and again.iteration == 2


def test_corrupt_checkpoint_is_reported(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read GPS checkpoint"):
        make(tmp_path).resume()


def test_invalid_config():
    with pytest.raises(ValueError, match="horizon"):
        GPSConfig(horizon=0)
    with pytest.raises(ValueError, match="kl_step"):
        GPSConfig(kl_step=-1)


def test_policy_file_round_trip_and_errors(tmp_path):
    from l2o.gps import PolicyFileError, load_policy, save_policy
    from l2o.policy import PredictedStepDescent

    gps = make()
    gps.initialize()
    save_policy(tmp_path / "psd.pt", gps.policy, gps.fcfg, {"note": "toy"})
    policy, fcfg, meta = load_policy(tmp_path / "psd.pt")
    assert meta["note"] == "toy" and fcfg == gps.fcfg
    for (k, v), (k2, v2) in zip(gps.policy.state_dict().items(), policy.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    # the loaded policy drives an arbitrary module through the torch.optim interface
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    opt = PredictedStepDescent(model.parameters(), policy, fcfg)
    before = [p.detach().clone() for p in model.parameters()]
    xb, yb = torch.randn(8, 3), torch.randint(0, 2, (8,))

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))

    (tmp_path / "bad.pt").write_bytes(b"\x00garbage")
    with pytest.raises(PolicyFileError, match="corrupt"):
        load_policy(tmp_path / "bad.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(PolicyFileError, match="not a Predicted Step Descent"):
        load_policy(tmp_path / "other.pt")
    blob = torch.load(tmp_path / "psd.pt", weights_only=False)
    blob["policy_config"]["hidden_size"] = 16
    torch.save(blob, tmp_path / "mismatch.pt")
    with pytest.raises(PolicyFileError, match="do not match"):
        load_policy(tmp_path / "mismatch.pt")


def test_diverged_samples_are_dropped_and_total_failure_is_reported():
    from l2o.gps import CostProblem, GPSNumericalError, rollout

    P = tiny_problem()
    cost = CostProblem(P, 0, 0)
    stored = [np.arange(g.start, min(g.stop, g.start + 3)) for g in P.groups]

    def act(t, s, o, g, state):  # trajectory 0 blows up at t = 2, the others take SGD steps
        a = -0.1 * g
        if t == 2:
            a[0] = float("nan")
        return a, state

    samples = rollout(P, cost, 5, 3, act, FeatureConfig(), torch.Generator().manual_seed(0), stored)
    assert samples.diverged == 1
    assert samples.groups[0].X.shape[0] == 2 * 3  # two surviving trajectories x 3 coordinates
    assert all(np.isfinite(gs.X).all() for gs in samples.groups)

    def all_nan(t, s, o, g, state):
        return torch.full_like(g, float("nan")), state

    with pytest.raises(GPSNumericalError, match="non-finite"):
        rollout(P, cost, 5, 2, all_nan, FeatureConfig(), torch.Generator().manual_seed(0), stored)


def test_windowed_memory_matches_full_sequence():
    from l2o.gps import _window_memory
    from l2o.policy import LSTMPolicy

    policy = LSTMPolicy(PolicyConfig(hidden_size=6), generator=torch.Generator().manual_seed(0))
    O = torch.randn(23, 5, 3, generator=torch.Generator().manual_seed(1))
    h_all, c_all = _window_memory(policy, O, 1, window=5, chunk=2)
    full = policy.forward_sequence(O, 1).detach()
    for k in range(h_all.shape[0]):
        ts = slice(5 * k, min(23, 5 * (k + 1)))
        part = policy.forward_sequence(O[ts], 1, (h_all[k], c_all[k])).detach()
        torch.testing.assert_close(part, full[ts], rtol=1e-5, atol=1e-6)


def test_windowed_policy_training_reduces_regression_loss():
    from l2o.gps import train_policy
    from l2o.policy import LSTMPolicy

    policy = LSTMPolicy(PolicyConfig(hidden_size=8), generator=torch.Generator().manual_seed(0))
    O = torch.randn(30, 40, 3, generator=torch.Generator().manual_seed(2))
    target = (0.5 * O[..., 1]).T.numpy()  # a step proportional to the gradient feature
    losses = train_policy(policy, 0, O, target, np.ones(30), steps=150, batch=16, lr=1e-2,
                          clip=1.0, gen=torch.Generator().manual_seed(3), window=10)
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10])


def test_trace_rollout_records_what_the_policy_saw_and_did():
    from l2o.gps import (
        CostProblem,
        effective_step_size,
        rollout,
        teacher_actor,
        trace_rollout,
    )

    P, T, lr = tiny_problem(), 6, 0.1
    gen = torch.Generator().manual_seed(4)
    x0 = P.init(gen, 2)
    streams = torch.stack([P.sample_indices(gen, 2) for _ in range(T)])  # (T, N, B)
    sgd = teacher_actor(lr, 0.0)
    tr = trace_rollout(P, sgd, FeatureConfig(), x0, streams)
    assert tr.obs.shape == (T, 2, P.dim, 3) and tr.step.shape == tr.grad.shape == (T, 2, P.dim)
    # SGD: the recorded step is -lr times the recorded minibatch gradient, at x0 exactly
    torch.testing.assert_close(tr.step, -lr * tr.grad)
    torch.testing.assert_close(tr.grad[0], P.minibatch_loss_and_grad(x0, streams[0])[1])
    ref = rollout(P, CostProblem(P, 0, 0), T, 2, sgd, FeatureConfig(), torch.Generator(), None,
                  need_states=False, x0=x0, streams=streams)
    np.testing.assert_array_equal(tr.true_loss, ref.true_loss)
    # |Δx_g| / |∇f̂_g| is the step size of SGD in every group at every step
    eff = effective_step_size(P, tr)
    assert eff.shape == (T, 2, len(P.groups))
    np.testing.assert_allclose(eff, lr, rtol=1e-6)


def test_adam_teacher_equals_torch_adam_and_teachers_are_validated():
    from l2o.gps import make_teacher

    gen = torch.Generator().manual_seed(5)
    grads = torch.randn(12, 2, 7, generator=gen, dtype=torch.float64) * 1e-3
    p = torch.zeros(2, 7, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.05, betas=(0.8, 0.99), eps=1e-7)
    act = make_teacher({"name": "adam", "lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-7})
    x, state = torch.zeros(2, 7, dtype=torch.float64), None
    for t in range(12):
        p.grad = grads[t].clone()
        opt.step()
        a, state = act(t, None, None, grads[t], state)
        x = x + a
        torch.testing.assert_close(x, p.detach(), rtol=1e-10, atol=1e-12)
    # momentum stays the default; wrong names and steps fail when GPS is built
    mom = make_teacher({"lr": 0.1, "momentum": 0.5})
    a0, v = mom(0, None, None, grads[0], None)
    a1, _ = mom(1, None, None, grads[1], v)
    torch.testing.assert_close(a1, 0.1 * (0.5 * -grads[0] - grads[1]))
    for bad in ({"name": "adma", "lr": 0.1}, {"name": "adam"}, {"lr": -1.0}):
        with pytest.raises(ValueError):
            make_teacher(bad)
    with pytest.raises(ValueError, match="Unknown teacher"):
        ConvolutionalGPS(tiny_problem(), teacher_hparams={"name": "lbfgs", "lr": 1.0})


def test_teacher_config_is_validated_and_keeps_the_stored_dict_form():
    from l2o.gps import TeacherConfig

    # the dicts earlier runs stored read back to the same teacher, and write back equal
    for d in ({"lr": 0.3, "momentum": 0.5}, {"name": "adam", "lr": 0.01},
              {"name": "adam", "lr": 0.05, "betas": [0.8, 0.99], "eps": 1e-7}):
        assert TeacherConfig.from_dict(d).to_dict() == d
    assert TeacherConfig.from_dict({"lr": 0.1}).momentum == 0.0   # plain SGD, as before
    assert TeacherConfig().to_dict() == {"lr": 0.1, "momentum": 0.9}  # GPS's default
    for bad in ({"name": "adam"}, {"lr": 0.1, "beta": 0.9}, {"lr": 0.1, "momentum": 1.0},
                {"name": "adam", "lr": 0.1, "betas": (0.9,)}, {"lr": float("nan")}):
        with pytest.raises(ValueError):
            TeacherConfig.from_dict(bad)
    tuned = TeacherConfig.tuned("adam")
    assert tuned.name == "adam" and tuned.lr > 0
    assert TeacherConfig.tuned("momentum", lr=0.2).lr == 0.2
    with pytest.raises(ValueError, match="Unknown teacher"):
        TeacherConfig.tuned("lbfgs")
    g = ConvolutionalGPS(tiny_problem(), teacher_hparams=TeacherConfig("adam", 0.02))
    assert g.teacher_hparams == {"name": "adam", "lr": 0.02}
