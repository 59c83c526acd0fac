"""The outer trainers (truncated BPTT, antithetic ES) on a tiny net: they train the same π,
checkpoint every update, resume exactly, and refuse a mismatched checkpoint."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from l2o import outer
from l2o.features import FeatureConfig
from l2o.gps import load_policy
from l2o.policy import PolicyConfig
from tests.test_gps import CFG, TEACHER, tiny_problem

PCFG = PolicyConfig(hidden_size=8)


def trainer(tmp_path, method, **kw):
    base = dict(horizon=12, cost_subset=0, trajectories=2, unroll=5, pairs=2, lr=1e-2,
                sigma=0.05, eval_every_s=1e9, budget_s=1e9)
    cfg = outer.OuterConfig(method=method, **{**base, **kw})
    return outer.OuterTrainer(tiny_problem(), cfg, FeatureConfig(), TEACHER, tmp_path, CFG, PCFG)


def _weights(policy):
    return torch.cat([p.detach().reshape(-1) for p in policy.parameters()])


@pytest.mark.parametrize("method", outer.METHODS)
def test_an_update_moves_pi_and_only_its_weights(tmp_path, method):
    tr = trainer(tmp_path, method)
    tr.start()
    before = _weights(tr.policy).clone()
    buffers = {k: v.clone() for k, v in tr.policy.named_buffers()}
    info = tr.step()
    assert info["updates"] >= 1 and np.isfinite(info["train_meta_loss"])
    assert not torch.equal(before, _weights(tr.policy))
    # standardisation and output scale are the warm start's, as in GPS's θ-step
    for k, v in tr.policy.named_buffers():
        assert torch.equal(v, buffers[k]), k


def test_bptt_meta_gradient_matches_finite_differences():
    """The truncated meta-gradient is the derivative of the window's meta-loss (Ψ constant)."""
    P = tiny_problem()
    cfg = outer.OuterConfig(method="bptt", horizon=4, unroll=4, trajectories=1, cost_subset=0)
    torch.manual_seed(0)
    pol = outer.LSTMPolicy(PCFG, generator=torch.Generator().manual_seed(1),
                           feature_config=FeatureConfig()).double()
    for g in range(4):
        pol.set_output_scale(g, 0.05)
    P64 = type(P)(P.x.double(), P.y, P.n_hidden, P.n_classes, P.batch_size, P.init_std)
    cost = outer.CostProblem(P64, 0, 0)

    frozen = []

    def window_loss(policy, replay=False):
        gen = torch.Generator().manual_seed(5)
        x0, idx = outer._draw_streams(P64, gen, 1, 4)
        tracker = outer.ObservationTracker(1, P64.dim, FeatureConfig(), dtype=torch.float64)
        h = policy.initial_hidden(1, P64.dim, dtype=torch.float64)
        x, loss = x0, 0.0
        for t in range(4):
            with torch.no_grad():
                f, g = P64.minibatch_loss_and_grad(x.detach(), idx[t])
                tracker.update(x.detach(), f, g)
                o = frozen[t] if replay else tracker.observation().clone()
            if not replay:
                frozen.append(o)
            a, h = policy.step(o, P64.group_index, h)
            x = x + a
            loss = loss + cost.sub.torch_loss(x).mean()
        return loss

    p = pol.heads[0].bias
    loss = window_loss(pol)
    (grad,) = torch.autograd.grad(loss, [p])
    with torch.no_grad():
        p += 1e-6
        up = float(window_loss(pol, replay=True))
        p -= 2e-6
        down = float(window_loss(pol, replay=True))
        p += 1e-6
    assert float(grad) == pytest.approx((up - down) / 2e-6, rel=1e-4, abs=1e-9)


def test_es_weights_handle_divergence_and_scale():
    w = outer.es_gradient(np.array([2.0, -2.0, np.inf, -np.inf, np.nan]))
    assert w[0] == pytest.approx(1.0) and w[1] == pytest.approx(-1.0)
    assert w[2] == 3.0 and w[3] == -3.0 and w[4] == 0.0
    assert np.all(outer.es_gradient(np.array([1e-9, -1e-9])) == [1.0, -1.0])


def test_es_follows_a_known_gradient(tmp_path, monkeypatch):
    """With the meta-loss replaced by a linear function of π's weights, the antithetic
    estimate points along its gradient."""
    tr = trainer(tmp_path, "es", pairs=64, sigma=0.1)
    tr.start()
    c = torch.randn(tr.theta.numel(), generator=torch.Generator().manual_seed(0))

    def fake(problem, cost, policy, x0, streams):
        return np.array([float(c @ outer._flat_params(policy))])

    monkeypatch.setattr(outer, "es_meta_loss", fake)
    captured = {}
    real_step = tr.opt.step

    def step():
        captured["g"] = tr.theta.grad.clone()
        real_step()

    monkeypatch.setattr(tr.opt, "step", step)
    tr.step()
    g = captured["g"]
    cos = float(g @ c / (g.norm() * c.norm()))
    # expected ≈ sqrt(P / d) ≈ 0.19 for 64 pairs in d = 1,700 weights; a random direction
    # has cosine ~ N(0, 1/√d) ≈ ±0.024, so 0.1 is four of its standard deviations
    assert cos > 0.1


@pytest.mark.parametrize("method", outer.METHODS)
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, method):
    a = trainer(tmp_path / "a", method)
    a.start()
    for _ in range(2):
        a.step()
    a.save()
    b = trainer(tmp_path / "b", method)
    b.start()
    b.step()
    b.save()
    c = trainer(tmp_path / "b", method)
    assert c.resume() and c.updates == b.updates
    c.step()
    assert torch.equal(_weights(a.policy), _weights(c.policy))
    hist = json.loads((tmp_path / "b" / "history.json").read_text())
    assert hist["updates"] == b.updates and hist["history"]["eval"]


def test_resume_refuses_another_configuration(tmp_path):
    a = trainer(tmp_path, "bptt")
    a.start()
    b = trainer(tmp_path, "bptt", unroll=3)
    with pytest.raises(outer.OuterCheckpointError, match="another configuration"):
        b.resume()
    c = trainer(tmp_path, "bptt", budget_s=5.0)   # only the budget may change
    assert c.resume()


def test_run_stops_at_the_budget_and_ships_the_best_snapshot(tmp_path):
    tr = trainer(tmp_path, "bptt")
    tr.start()                     # the warm start counts in the budget: leave 0.3 s more
    tr.cfg = dataclasses.replace(tr.cfg, budget_s=tr.train_s + 0.3)
    res = tr.run(progress=False)
    assert tr.train_s >= tr.cfg.budget_s and tr.updates >= 1
    evals = tr.history["eval"]
    assert len(evals) >= 2 and res["best"]["meta_loss"] == min(e["meta_loss"] for e in evals)
    shipped, fcfg, meta = load_policy(tmp_path / "pi_bptt.pt")
    assert meta["method"] == "bptt" and meta["validation_meta_loss"] == res["best"]["meta_loss"]
    best_snap, _, _ = load_policy(tmp_path / "snapshots" / res["best"]["snapshot"])
    for x, y in zip(shipped.state_dict().values(), best_snap.state_dict().values()):
        assert torch.equal(x, y)


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="method"):
        outer.OuterConfig(method="sgd")
    with pytest.raises(ValueError, match="sigma"):
        outer.OuterConfig(method="es", sigma=0.0)
    with pytest.raises(ValueError, match="unroll"):
        outer.OuterConfig(unroll=0)


def test_command_line_errors_are_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        outer.main(["train", "--method", "nosuch", "--out", str(tmp_path)])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        outer.main(["train", "--method", "es", "--out", str(tmp_path), "--resume"])
    assert e.value.code == 2 and "no checkpoint" in capsys.readouterr().err


# --------------------------------------------------------------------- the study
def test_table_ranks_by_mean_and_counts_divergence():
    from l2o import outer_study

    rows = outer_study.table({"a": [2.0, 4.0], "b": [1.0, 1.0], "c": [1.0, np.inf]})
    assert [r["name"] for r in rows] == ["b", "a", "c"]
    assert rows[1]["se"] == pytest.approx(1.0) and rows[2]["diverged"] == 1


def test_verdict_follows_the_paired_differences():
    from l2o import outer_study

    rng = np.random.default_rng(0)
    base = rng.normal(200, 5, 10)     # seed-to-seed spread shared by every method

    def scores(bptt_shift):
        return {"adam": base + 20, "adagrad": base - 10, "rmsprop": base - 5,
                "pi_gps": base, "pi_bptt": base + bptt_shift, "pi_es": base + 30,
                "psi": base - 1}

    v = outer_study.verdict(scores(-3.0))      # BPTT beats GPS's π on every seed
    assert v["beats_gps"]["pi_bptt"] and v["limit"] == "GPS"
    v = outer_study.verdict(scores(+3.0))
    assert not any(v["beats_gps"].values()) and v["limit"] == "policy class"
    assert v["best_hand"] == "adagrad" and not v["beats_best_hand"]["pi_gps"]
    noisy = scores(0.0)
    noisy["pi_bptt"] = base + rng.normal(-0.5, 8, 10)  # lower mean, but within the noise
    assert not outer_study.beats(noisy, "pi_bptt", "pi_gps")


def test_psi_runs_replays_gps_controller_from_a_checkpoint(tmp_path):
    from l2o import outer_study
    from tests.test_gps import make

    g = make(tmp_path)
    g.init_info = g.initialize()
    g.iterate()
    (tmp_path / "provenance.json").write_text(json.dumps(
        {"config": dataclasses.asdict(g.cfg), "teacher": g.teacher_hparams}))
    import l2o.outer_study as s

    orig = s.PolicyConfig
    s.PolicyConfig = lambda: PCFG
    try:
        runs = outer_study.psi_runs(tiny_problem(), tmp_path, (0, 1), 12)
    finally:
        s.PolicyConfig = orig
    assert [r.seed for r in runs] == [0, 1] and runs[0].optimizer == "psi"
    assert runs[0].hparams["iteration"] == 1
    assert all(np.isfinite(r.true_loss).all() for r in runs)


@pytest.mark.parametrize("grad_scale", ["rms", "offset"])
def test_differentiable_features_equal_the_tracker(grad_scale):
    cfg = FeatureConfig(grad_scale=grad_scale)
    gen = torch.Generator().manual_seed(0)
    ref = outer.ObservationTracker(2, 7, cfg, dtype=torch.float64)
    mine = outer.DifferentiableObservation(cfg)
    for _ in range(5):
        x = torch.randn(2, 7, generator=gen, dtype=torch.float64)
        f = torch.rand(2, generator=gen, dtype=torch.float64) + 0.5
        g = 1e-3 * torch.randn(2, 7, generator=gen, dtype=torch.float64)
        ref.update(x, f, g)
        mine.update(x, f, g)
        torch.testing.assert_close(mine.observation(), ref.observation(), rtol=1e-12, atol=0)


def test_bptt_exact_meta_gradient_matches_finite_differences():
    """Through the features, the window gradient is the derivative of the window's
    meta-loss itself: finite differences agree without freezing anything."""
    P = tiny_problem()
    P64 = type(P)(P.x.double(), P.y, P.n_hidden, P.n_classes, P.batch_size, P.init_std)
    cost = outer.CostProblem(P64, 0, 0)
    pol = outer.LSTMPolicy(PCFG, generator=torch.Generator().manual_seed(1),
                           feature_config=FeatureConfig(grad_scale="rms")).double()
    for g in range(4):
        pol.set_output_scale(g, 0.05)
    x0, idx = outer._draw_streams(P64, torch.Generator().manual_seed(5), 1, 4)

    def window_loss():
        tracker = outer.DifferentiableObservation(pol.feature_config)
        h = pol.initial_hidden(1, P64.dim, dtype=torch.float64)
        x, loss = x0.clone(), 0.0
        for t in range(4):
            f, g = outer._loss_and_grad(P64, x, idx[t])
            tracker.update(x, f, g)
            a, h = pol.step(tracker.observation(), P64.group_index, h)
            x = x + a
            loss = loss + cost.sub.torch_loss(x).mean()
        return loss

    p = pol.lstms[1].weight_ih_l0
    (grad,) = torch.autograd.grad(window_loss(), [p])
    i, j = 3, 1                               # the gradient feature's input weight
    with torch.no_grad():
        p[i, j] += 1e-6
    up = float(window_loss().detach())
    with torch.no_grad():
        p[i, j] -= 2e-6
    down = float(window_loss().detach())
    with torch.no_grad():
        p[i, j] += 1e-6
    assert float(grad[i, j]) == pytest.approx((up - down) / 2e-6, rel=1e-4, abs=1e-10)


def test_curriculum_lengthens_the_unroll_over_the_budget():
    cfg = outer.OuterConfig(budget_s=90.0, curriculum=[20, 50, 100])
    assert [outer.unroll_at(cfg, s) for s in (0, 29, 31, 61, 89, 200)] == [20, 20, 50, 100, 100, 100]
    assert outer.unroll_at(outer.OuterConfig(unroll=7), 1e9) == 7
    with pytest.raises(ValueError, match="curriculum"):
        outer.OuterConfig(curriculum=(20, 0))


def test_a_coordinate_with_zero_gradients_keeps_the_meta_gradient_finite():
    obs = outer.DifferentiableObservation(FeatureConfig(grad_scale="rms"))
    x = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    g = x * torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)   # coordinate 1: gradient 0
    obs.update(x, torch.ones(1, dtype=torch.float64), g + torch.tensor([1e-3, 0.0, 1e-3]))
    (grad,) = torch.autograd.grad(obs.observation().sum(), x)
    assert torch.isfinite(grad).all()
