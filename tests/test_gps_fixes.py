"""The defects of convolutional GPS found at commit bc08979, each pinned by a test.

1. ν in the cost's units (an uncoupled ψ-step's η), not the robotics default 0.01;
2. ψ's law restricted to what π observes (no feedback on the iterate x_j);
3. the reference's step adjust: actual improvement from the sampled loss, ν·KL terms,
   predicted under the models the ψ-step optimised, the shrink to the KL step taken,
   and ε recomputed after a rejected ψ-step;
4. priors for the fits of ψ0 and π̃;
5. the cost fit pooled over neighbouring steps.
"""

import dataclasses

import numpy as np
import pytest
import torch

from l2o import badmm, dynamics, gps, lqg
from l2o.features import FeatureConfig
from l2o.gps import ConvolutionalGPS, GPSConfig, GroupModels, GroupVars
from l2o.lqg import (LinearGaussianDynamics, LinearGaussianPolicy, QuadraticCost,
                     StateProjection, backward_pass, forward_pass, solve_kl_constrained)
from tests.test_gps import CFG, PCFG, TEACHER, tiny_problem
from tests.test_lqg import random_cost, random_dynamics, random_psd


def make(cfg=CFG, tmp_path=None):
    return ConvolutionalGPS(tiny_problem(), cfg, FeatureConfig(), PCFG, TEACHER,
                            checkpoint_dir=tmp_path)


# ------------------------------------------------------------------------------- 1. ν
def scaled_problem(rng, T=10, dX=3, dU=1, scale=1e-3):
    """A ψ-step whose cost is ~1e-3 (the units of a net's loss gradients), with π̃ far from ψ."""
    dyn = random_dynamics(rng, T, dX, dU, noise=0.01)
    cost = random_cost(rng, T, dX + dU, scale=1.0)
    c = np.array(cost.c)
    c[:, dX:] = -3.0
    cost = QuadraticCost(scale * np.array(cost.C), scale * c)
    prev = LinearGaussianPolicy(np.zeros((T, dU, dX)), np.zeros((T, dU)), np.full((T, dU, dU), 0.1))
    pi_lin = LinearGaussianPolicy(np.zeros((T, dU, dX)), np.full((T, dU), -2.0),
                                  np.full((T, dU, dU), 0.1))
    return dyn, cost, prev, pi_lin


def model_cost(dyn, cost, psi):
    return float(np.sum(lqg.expected_cost(cost, *forward_pass(dyn, psi))))


def test_initial_nu_is_a_fraction_of_the_uncoupled_eta():
    rng = np.random.default_rng(0)
    dyn, cost, prev, pi_lin = scaled_problem(rng)
    T = prev.T
    cfg = dataclasses.replace(CFG, horizon=T)
    g = make(cfg)
    g.groups = [GroupVars(psi=prev, eta=1.0, nu=np.full(T, cfg.init_nu), lam=np.zeros((T, 1)),
                          pi_cov=0.1)]
    m = GroupModels(dyn, cost, None, pi_lin)
    g._init_nu([m])
    eps = cfg.kl_step * T
    free, eta_free, _ = solve_kl_constrained(dyn, cost, prev, None, None, None, eps, 1.0)
    gv = g.groups[0]
    assert gv.nu_ref == pytest.approx(cfg.init_nu * eta_free, rel=1e-9)
    np.testing.assert_allclose(gv.nu, cfg.init_nu * eta_free)
    # In these units the coupled ψ-step keeps most of the uncoupled improvement of the
    # model cost; the robotics default ν = 0.01 spends the KL budget on moving toward π̃.
    gain_free = model_cost(dyn, cost, prev) - model_cost(dyn, cost, free)
    coupled, _, _ = solve_kl_constrained(dyn, cost, prev, None, gv.nu, pi_lin, eps, gv.eta)
    robotics, _, _ = solve_kl_constrained(dyn, cost, prev, None, np.full(T, 0.01), pi_lin, eps)
    assert gain_free > 0
    assert model_cost(dyn, cost, prev) - model_cost(dyn, cost, coupled) > 0.5 * gain_free
    assert model_cost(dyn, cost, prev) - model_cost(dyn, cost, robotics) < 0.1 * gain_free


def test_nu_stays_in_its_range_and_is_set_on_the_first_iteration():
    g = make()
    g.run(num_iterations=2)
    for gv in g.groups:
        assert gv.nu_ref > 0
        assert np.all(gv.nu >= gv.nu_ref / CFG.nu_range * (1 - 1e-12))
        assert np.all(gv.nu <= gv.nu_ref * CFG.nu_range * (1 + 1e-12))
    absolute = make(dataclasses.replace(CFG, nu_units="absolute", init_nu=0.01))
    absolute.run(num_iterations=1)
    assert all(gv.nu_ref == 0 for gv in absolute.groups)


# ------------------------------------------------------------------ 2. what ψ may read
def consistent_dynamics(rng, T=6, noise=False):
    """dX = 3 with x0 ≡ x1 + 2 x2 along every trajectory (row 0 = row 1 + 2 row 2)."""
    dX, dU = 3, 1
    base = random_dynamics(rng, T, dX, dU, noise=0.0)
    Fm, fv = np.array(base.Fm), np.array(base.fv)
    Fm[:, 0] = Fm[:, 1] + 2 * Fm[:, 2]
    fv[:, 0] = fv[:, 1] + 2 * fv[:, 2]
    x0 = np.array([0.0, 0.3, -0.2])
    x0[0] = x0[1] + 2 * x0[2]
    return LinearGaussianDynamics(Fm, fv, np.zeros((T, dX, dX)), x0, 1e-6 * np.eye(dX))


def test_restricted_law_ignores_x_and_is_optimal_where_x_is_predictable():
    rng = np.random.default_rng(1)
    T = 6
    dyn = consistent_dynamics(rng, T)
    cost = random_cost(rng, T, 4)
    P = np.broadcast_to(np.eye(3), (T, 3, 3)).copy()
    P[:, 0] = [0.0, 1.0, 2.0]
    restrict = StateProjection(P, np.zeros((T, 3)), (0,))
    full = backward_pass(dyn, cost, 1.0)
    part = backward_pass(dyn, cost, 1.0, restrict=restrict)
    assert np.all(part.K[:, :, 0] == 0)
    assert np.any(np.abs(full.K[:, :, 0]) > 1e-3)      # the unrestricted law does read x
    np.testing.assert_allclose(part.cov, full.cov)
    # on states where x0 = x1 + 2 x2 the two laws act the same
    S = rng.standard_normal((50, T, 3))
    S[..., 0] = S[..., 1] + 2 * S[..., 2]
    np.testing.assert_allclose(part.mean(S), full.mean(S), atol=1e-9)


def test_identity_projection_equals_the_unrestricted_backward_pass():
    rng = np.random.default_rng(2)
    T, dX = 5, 3
    dyn = random_dynamics(rng, T, dX, 1)
    cost = random_cost(rng, T, dX + 1)
    ident = StateProjection(np.broadcast_to(np.eye(dX), (T, dX, dX)).copy(), np.zeros((T, dX)), ())
    a, b = backward_pass(dyn, cost, 0.7), backward_pass(dyn, cost, 0.7, restrict=ident)
    np.testing.assert_allclose(b.K, a.K, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b.k, a.k, rtol=1e-9, atol=1e-12)


def test_state_projection_recovers_an_affine_relation():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((400, 8, 4))
    X[..., 0] = 0.5 * X[..., 1] - X[..., 3] + 2.0
    proj = dynamics.fit_state_projection(X, (0,), window=1, ridge=1e-9)
    np.testing.assert_allclose(proj.P[:, 0, 1:], np.tile([0.5, 0.0, -1.0], (8, 1)), atol=1e-5)
    np.testing.assert_allclose(proj.p[:, 0], 2.0, atol=1e-5)
    assert np.all(proj.P[:, :, 0] == 0)


def test_psi_never_feeds_back_on_x_when_observed_only():
    g = make()
    g.run(num_iterations=1)
    assert all(np.all(gv.psi.K[:, :, 0] == 0) for gv in g.groups)
    full = make(dataclasses.replace(CFG, psi_feedback="full"))
    full.run(num_iterations=1)
    assert any(np.any(gv.psi.K[:, :, 0] != 0) for gv in full.groups)


# -------------------------------------------------------------------------- 3. step rule
def prepared_step_adjust(monkeypatch, predicted_old, predicted_new, kl_terms=(0.0, 0.0),
                         kl_reached=None):
    """A GPS whose one group has a previous ψ-step; the model evaluations are stubbed."""
    g = make(dataclasses.replace(CFG, max_step_mult=10.0))
    g.initialize()
    T = CFG.horizon
    gv = g.groups[0]
    g.groups = [gv]
    g.problem.groups = g.problem.groups[:1]
    old_models = {"dyn": "old-dyn", "cost": "old-cost"}
    seen = []

    def fake_objective(dyn, cost, psi, pi_lin, nu):
        seen.append((dyn, cost))
        return predicted_old if psi is gv.prev["psi_old"] else predicted_new

    monkeypatch.setattr(gps, "_lqg_objective", fake_objective)
    kl_old, kl_new = kl_terms
    monkeypatch.setattr(badmm, "kl_psi_pi_per_t", lambda *a: np.full(T, kl_new / T))
    gv.nu = np.ones(T)
    gv.step_mult = 1.0
    reached = CFG.kl_step * T if kl_reached is None else kl_reached
    gv.prev = {**old_models, "psi_old": object(), "psi_new": gv.psi, "pi_lin": None,
               "mc_kl_old": np.full(T, kl_old / T), "kl_reached": reached}
    g.history = [{"psi_cost": 300.0}]
    return g, gv, seen


class _Samples:
    def __init__(self, n):
        self.groups = [type("GS", (), {"X": None})() for _ in range(n)]


def test_reference_step_adjust_uses_sampled_cost_and_the_optimised_models(monkeypatch):
    size = tiny_problem().groups[0].size
    # predicted per coordinate 12/size in total: 12; sampled improvement 300 → 290: 10
    g, gv, seen = prepared_step_adjust(monkeypatch, 12.0 / size, 0.0)
    m = GroupModels("new-dyn", "new-cost", None)
    out = g._reference_step_adjust(_Samples(1), [m], 290.0)
    assert out["predicted"] == pytest.approx(12.0)
    assert out["actual"] == pytest.approx(10.0)
    # factor = 12 / (2 (12 − 10)) = 3
    assert gv.step_mult == pytest.approx(3.0)
    assert seen and all(s == ("old-dyn", "old-cost") for s in seen)


def test_reference_step_adjust_includes_the_nu_weighted_kl(monkeypatch):
    size = tiny_problem().groups[0].size
    # same costs, but the new ψ sits 1 nat per coordinate further from π: actual − size
    g, gv, _ = prepared_step_adjust(monkeypatch, 12.0 / size, 0.0, kl_terms=(0.0, 1.0))
    out = g._reference_step_adjust(_Samples(1), [GroupModels("d", "c", None)], 290.0)
    assert out["actual"] == pytest.approx(10.0 - size)


def test_reference_step_adjust_shrinks_to_the_kl_step_taken(monkeypatch):
    size = tiny_problem().groups[0].size
    T = CFG.horizon
    g, gv, _ = prepared_step_adjust(monkeypatch, 20.0 / size, 0.0,
                                    kl_reached=0.3 * CFG.kl_step * T)
    g._reference_step_adjust(_Samples(1), [GroupModels("d", "c", None)], 290.0)
    # shrink to 0.3, then × 20 / (2 (20 − 10)) = 1
    assert gv.step_mult == pytest.approx(0.3)


def test_epsilon_is_recomputed_after_a_rejected_psi_step(monkeypatch):
    g = make(dataclasses.replace(CFG, inner_iterations=2))
    g.initialize()
    eps_seen = []
    real = lqg.solve_kl_constrained

    def fake(dyn, cost, prev, lam, nu, pi_lin, eps, eta0, **kw):
        eps_seen.append(eps)
        pol, eta, info = real(dyn, cost, prev, lam, nu, pi_lin, eps, eta0, **kw)
        if len(eps_seen) == 1:
            info = {**info, "kl": np.inf}
        return pol, eta, info

    g.cfg = dataclasses.replace(g.cfg, nu_units="absolute")   # no uncoupled solve first
    monkeypatch.setattr(lqg, "solve_kl_constrained", fake)
    samples = g._sample()
    m = g._fit(0, samples.groups[0])
    g._badmm(0, samples.groups[0], m, {})
    assert eps_seen[1] == pytest.approx(0.5 * eps_seen[0])


def test_kl_psi_pi_matches_monte_carlo():
    rng = np.random.default_rng(4)
    T, dX, N = 3, 2, 5
    psi = LinearGaussianPolicy(rng.standard_normal((T, 1, dX)), rng.standard_normal((T, 1)),
                               np.full((T, 1, 1), 0.3))
    X = rng.standard_normal((N, T, dX))
    mu_pi = rng.standard_normal((N, T, 1))
    s2 = 0.5
    kl = badmm.kl_psi_pi_per_t(psi, mu_pi, s2, X)
    u = psi.mean(X)[None] + np.sqrt(0.3) * rng.standard_normal((200_000, N, T, 1))
    logp = -0.5 * ((u - psi.mean(X)[None]) ** 2 / 0.3 + np.log(2 * np.pi * 0.3))
    logq = -0.5 * ((u - mu_pi[None]) ** 2 / s2 + np.log(2 * np.pi * s2))
    mc = (logp - logq).mean(axis=(0, 1))[..., 0]
    np.testing.assert_allclose(kl, mc, rtol=0.02, atol=0.01)


# ------------------------------------------------------------------------- 4–5. the fits
def few_points(rng, N=60, T=20, dX=76, noise=0.5):
    w = rng.standard_normal(dX) / np.sqrt(dX)
    X = rng.standard_normal((N, T, dX))
    U = (X @ w)[..., None] + noise * rng.standard_normal((N, T, 1))
    return X, U, w


def test_policy_fit_with_the_window_prior_generalises_on_few_points():
    rng = np.random.default_rng(5)
    X, U, w = few_points(rng)
    Xte = rng.standard_normal((500, X.shape[1], X.shape[2]))
    cfg = dataclasses.replace(CFG, horizon=X.shape[1], psi_feedback="full", prior_window=5)
    err = {}
    for prior in (True, False):
        pol = gps.fit_policy(X, U, dataclasses.replace(cfg, policy_prior=prior),
                             np.random.default_rng(0))
        err[prior] = np.mean((pol.mean(Xte)[..., 0] - Xte @ w) ** 2)
    assert err[True] < 0.5 * err[False]


def test_policy_fit_leaves_out_the_iterate_when_observed_only():
    rng = np.random.default_rng(6)
    X, U, w = few_points(rng, N=300, dX=5)
    U = U + 3.0 * X[..., :1]                # a policy that would like to read x
    cfg = dataclasses.replace(CFG, horizon=X.shape[1])
    pol = gps.fit_policy(X, U, cfg, np.random.default_rng(0))
    assert np.all(pol.K[:, :, 0] == 0)
    full = gps.fit_policy(X, U, dataclasses.replace(cfg, psi_feedback="full"),
                          np.random.default_rng(0))
    assert np.all(np.abs(full.K[:, 0, 0] - (3.0 + w[0])) < 0.2)


def test_pooled_cost_fit_predicts_held_out_gradients():
    rng = np.random.default_rng(7)
    N, T, dX = 60, 40, 30
    r = rng.standard_normal(dX) / np.sqrt(dX)
    X = rng.standard_normal((2 * N, T, dX))
    G = X @ r + 3.0 * rng.standard_normal((2 * N, T))

    def r2(cost):
        pred = np.einsum("td,ntd->nt", cost.C[:, 0, :dX], X[N:]) + cost.c[:, 0]
        return 1 - np.mean((G[N:] - pred) ** 2) / np.mean((G[N:] - G[N:].mean()) ** 2)

    per_step = dynamics.fit_cost_gradient_matching(X[:N], G[:N], ridge=1e-6)
    pooled = dynamics.fit_cost_gradient_matching(X[:N], G[:N], ridge=0.1, window=10,
                                                 relative_ridge=True)
    assert r2(per_step) < 0 < r2(pooled)
    # GPS fits its cost pooled by default
    gs = gps.GroupSamples(X[:N], None, None, G[:N])
    c = gps.fit_cost(gs, dataclasses.replace(CFG, horizon=T), FeatureConfig(n_grad_terms=25))
    assert r2(c) == pytest.approx(r2(pooled))


# ------------------------------------------------------------- resuming in a fresh clone
def test_resume_without_the_fitted_models_skips_one_step_adjust(tmp_path, caplog):
    full = make(tmp_path=tmp_path / "a")
    full.run(num_iterations=2)
    ckpt, models = tmp_path / "a" / "checkpoint.pt", tmp_path / "a" / "models.pt"
    assert ckpt.exists() and models.exists()
    assert ckpt.stat().st_size < models.stat().st_size   # the large part is apart
    models.unlink()
    resumed = make(tmp_path=tmp_path / "a")
    with caplog.at_level("WARNING"):
        assert resumed.resume()
    assert "step adjust is skipped" in caplog.text
    before = [gv.step_mult for gv in resumed.groups]
    d = resumed.iterate()
    assert "step_adjust" not in d or not d["step_adjust"]
    assert [gd["step_mult"] for gd in d["groups"].values()] == before or any(
        gd["rejected"] for gd in d["groups"].values())
