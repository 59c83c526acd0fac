"""LQG under a KL trust region (l2o.lqg): exact algebra, brute-force references, Monte Carlo."""

import logging

import numpy as np
import pytest

from l2o.lqg import (
    LinearGaussianDynamics,
    LinearGaussianPolicy,
    NotPositiveDefiniteError,
    QuadraticCost,
    augmented_cost,
    backward_pass,
    expected_cost,
    forward_pass,
    kl_quadratic,
    solve_kl_constrained,
    traj_kl,
)


# ------------------------------------------------------------------------------ fixtures
def random_psd(rng, n, scale=1.0, jitter=0.1):
    L = rng.standard_normal((n, n))
    return scale * (L @ L.T / n) + jitter * np.eye(n)


def random_policy(rng, T, dX, dU, gain=0.3, var=0.5):
    K = gain * rng.standard_normal((T, dU, dX))
    k = rng.standard_normal((T, dU))
    cov = np.stack([random_psd(rng, dU, var, 0.1 * var) for _ in range(T)])
    return LinearGaussianPolicy(K, k, cov)


def random_dynamics(rng, T, dX, dU, noise=0.05):
    A = np.stack([0.7 * np.eye(dX) + 0.2 * rng.standard_normal((dX, dX)) for _ in range(T)])
    B = rng.standard_normal((T, dX, dU))
    Fm = np.concatenate([A, B], axis=2)
    fv = 0.1 * rng.standard_normal((T, dX))
    W = np.stack([random_psd(rng, dX, noise, noise) for _ in range(T)]) if noise else \
        np.zeros((T, dX, dX))
    return LinearGaussianDynamics(Fm, fv, W, rng.standard_normal(dX), random_psd(rng, dX, 0.2))


def random_cost(rng, T, n, scale=1.0):
    C = np.stack([random_psd(rng, n, scale, 0.05) for _ in range(T)])
    return QuadraticCost(C, rng.standard_normal((T, n)))


def brute_force_qp(dyn, fcost, w, x_start, t0):
    """Σ_{t ≥ t0} w_t ℓ_t(z_t) as a quadratic ½vᵀHv + gᵀv in v = (u_t0, …, u_{T-1}).

    The dynamics' means are substituted (deterministic), x_{t0} = x_start is fixed.
    """
    T, dX, n = dyn.Fm.shape
    dU = n - dX
    m = (T - t0) * dU
    H, g = np.zeros((m, m)), np.zeros(m)
    Sx, sx = np.zeros((dX, m)), np.array(x_start, dtype=float)
    for t in range(t0, T):
        j = (t - t0) * dU
        Sz = np.zeros((n, m))
        Sz[:dX] = Sx
        Sz[dX:, j : j + dU] = np.eye(dU)
        sz = np.concatenate([sx, np.zeros(dU)])
        H += w[t] * Sz.T @ fcost.C[t] @ Sz
        g += w[t] * Sz.T @ (fcost.C[t] @ sz + fcost.c[t])
        Sx, sx = dyn.Fm[t] @ Sz, dyn.Fm[t] @ sz + dyn.fv[t]
    return H, g


def mean_rollout(dyn, policy, x0):
    T = policy.T
    x, us = np.array(x0, dtype=float), []
    for t in range(T):
        u = policy.K[t] @ x + policy.k[t]
        us.append(u)
        x = dyn.Fm[t] @ np.concatenate([x, u]) + dyn.fv[t]
    return np.concatenate(us)


# ------------------------------------------------------------------------ containers
def test_policy_container_validates_and_caches():
    rng = np.random.default_rng(0)
    pol = random_policy(rng, 4, 3, 2)
    np.testing.assert_allclose(pol.inv_cov @ pol.cov, np.broadcast_to(np.eye(2), (4, 2, 2)),
                               atol=1e-12)
    np.testing.assert_allclose(pol.chol @ np.swapaxes(pol.chol, 1, 2), pol.cov, atol=1e-12)
    with pytest.raises(ValueError):
        pol.K[0, 0, 0] = 1.0  # read-only
    with pytest.raises(ValueError, match="positive definite"):
        LinearGaussianPolicy(pol.K, pol.k, -np.array(pol.cov))
    with pytest.raises(ValueError, match="shape"):
        LinearGaussianPolicy(pol.K, pol.k[:, :1], pol.cov)
    floored = LinearGaussianPolicy(pol.K, pol.k, 1e-9 * np.array(pol.cov)).with_min_var(0.3)
    assert np.all(np.linalg.eigvalsh(floored.cov) >= 0.3 - 1e-12)


def test_kl_quadratic_is_negative_log_density():
    rng = np.random.default_rng(1)
    T, dX, dU = 3, 4, 2
    q = random_policy(rng, T, dX, dU)
    M, v, h = kl_quadratic(q)
    X = rng.standard_normal((7, T, dX))
    U = rng.standard_normal((7, T, dU))
    Z = np.concatenate([X, U], axis=2)
    quad = 0.5 * np.einsum("nti,tij,ntj->nt", Z, M, Z) + np.einsum("ti,nti->nt", v, Z) + h
    np.testing.assert_allclose(quad, -q.log_prob(X, U), rtol=1e-12, atol=1e-12)


def test_augmented_cost_matches_its_definition():
    """fcost(z) = (ℓ(z) − λᵀu − η log ψ_prev(u|x) − ν log π̃(u|x)) / (η + ν)."""
    rng = np.random.default_rng(2)
    T, dX, dU = 4, 3, 2
    n = dX + dU
    cost = random_cost(rng, T, n)
    prev, pi = random_policy(rng, T, dX, dU), random_policy(rng, T, dX, dU)
    lam, nu, eta = rng.standard_normal((T, dU)), rng.uniform(0, 2, T), 0.7
    f = augmented_cost(cost, lam, eta, prev, nu, pi)
    X, U = rng.standard_normal((5, T, dX)), rng.standard_normal((5, T, dU))
    Z = np.concatenate([X, U], axis=2)

    def ell(cst):
        return (0.5 * np.einsum("nti,tij,ntj->nt", Z, cst.C, Z)
                + np.einsum("ti,nti->nt", cst.c, Z) + cst.cc)

    want = (ell(cost) - np.einsum("tu,ntu->nt", lam, U) - eta * prev.log_prob(X, U)
            - nu * pi.log_prob(X, U)) / (eta + nu)
    np.testing.assert_allclose(ell(f), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="pi_lin"):
        augmented_cost(cost, lam, eta, prev, nu, None)


# ------------------------------------------------------------- backward pass vs. a QP
@pytest.mark.parametrize("with_nu", [False, True])
def test_backward_pass_equals_brute_force_qp(with_nu):
    """Mean controls = argmin of the stacked QP; G_t⁻¹ = its reduced Hessian in u_t."""
    rng = np.random.default_rng(3 + with_nu)
    T, dX, dU = 6, 3, 2
    dyn = random_dynamics(rng, T, dX, dU, noise=0.0)
    cost = random_cost(rng, T, dX + dU)
    prev = random_policy(rng, T, dX, dU)
    eta = 1.0
    if with_nu:
        nu, pi = rng.uniform(0.1, 3.0, T), random_policy(rng, T, dX, dU)
        lam = rng.standard_normal((T, dU))
    else:
        nu, pi, lam = np.zeros(T), None, None
    f = augmented_cost(cost, lam, eta, prev, nu, pi)
    pol = backward_pass(dyn, f, eta, nu)
    w = eta + nu
    x0 = rng.standard_normal(dX)
    H, g = brute_force_qp(dyn, f, w, x0, 0)
    np.testing.assert_allclose(mean_rollout(dyn, pol, x0), -np.linalg.solve(H, g),
                               rtol=1e-9, atol=1e-10)
    # G_t = Q_uu⁻¹: Q_uu is the Hessian in u_t after minimising out the later controls,
    # divided by the step weight w_t
    for t0 in range(T):
        H, _ = brute_force_qp(dyn, f, w, np.zeros(dX), t0)
        a, b, c = H[:dU, :dU], H[:dU, dU:], H[dU:, dU:]
        schur = a - b @ np.linalg.solve(c, b.T) if c.size else a
        np.testing.assert_allclose(np.linalg.inv(pol.cov[t0]), schur / w[t0], rtol=1e-9)


def test_backward_pass_ignores_dynamics_noise():
    """Certainty equivalence: K, k, G do not depend on F_t."""
    rng = np.random.default_rng(5)
    T, dX, dU = 5, 3, 1
    dyn = random_dynamics(rng, T, dX, dU, noise=0.3)
    quiet = LinearGaussianDynamics(dyn.Fm, dyn.fv, 0 * dyn.dyn_covar, dyn.x0mu, dyn.x0sigma)
    f = augmented_cost(random_cost(rng, T, dX + dU), None, 1.0, random_policy(rng, T, dX, dU))
    a, b = backward_pass(dyn, f, 1.0), backward_pass(quiet, f, 1.0)
    for name in ("K", "k", "cov"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12)


def test_backward_pass_min_var_floor():
    rng = np.random.default_rng(6)
    T, dX, dU = 4, 2, 1
    dyn = random_dynamics(rng, T, dX, dU)
    f = augmented_cost(random_cost(rng, T, dX + dU, scale=100.0), None, 1.0,
                       random_policy(rng, T, dX, dU))
    pol = backward_pass(dyn, f, 1.0, min_var=0.5)
    assert np.all(pol.cov >= 0.5)


# ------------------------------------------------------------------ Monte Carlo checks
def sample_trajectories(rng, dyn, policy, n):
    T, dX, dU = policy.T, policy.dX, policy.dU
    L0 = np.linalg.cholesky(dyn.x0sigma)
    X = np.empty((n, T, dX))
    U = np.empty((n, T, dU))
    x = dyn.x0mu + rng.standard_normal((n, dX)) @ L0.T
    for t in range(T):
        X[:, t] = x
        U[:, t] = x @ policy.K[t].T + policy.k[t] + rng.standard_normal((n, dU)) @ policy.chol[t].T
        if t < T - 1:
            Lw = np.linalg.cholesky(dyn.dyn_covar[t] + 1e-14 * np.eye(dX))
            x = (np.concatenate([x, U[:, t]], 1) @ dyn.Fm[t].T + dyn.fv[t]
                 + rng.standard_normal((n, dX)) @ Lw.T)
    return X, U


def test_forward_pass_and_traj_kl_match_monte_carlo():
    rng = np.random.default_rng(7)
    T, dX, dU = 4, 2, 2
    dyn = random_dynamics(rng, T, dX, dU, noise=0.1)
    new, old = random_policy(rng, T, dX, dU), random_policy(rng, T, dX, dU)
    mu, sigma = forward_pass(dyn, new)
    X, U = sample_trajectories(rng, dyn, new, 100_000)
    Z = np.concatenate([X, U], axis=2)
    n = Z.shape[0]
    se = np.sqrt(np.diagonal(sigma, 0, 1, 2).max() / n)
    np.testing.assert_allclose(Z.mean(0), mu, atol=6 * se)
    np.testing.assert_allclose(np.cov(Z[:, -1].T), sigma[-1], rtol=0.05, atol=0.02)
    # Σ_t E[KL(new‖old)] = E[Σ_t log new(u_t|x_t) − log old(u_t|x_t)] under the new trajectory
    total, kl_t = traj_kl(new, old, mu, sigma)
    ratio = (new.log_prob(X, U) - old.log_prob(X, U))
    se_t = ratio.std(0) / np.sqrt(n)
    assert np.all(np.abs(ratio.mean(0) - kl_t) < 4 * se_t)
    s = ratio.sum(1)
    assert abs(s.mean() - total) < 4 * s.std() / np.sqrt(n)
    assert traj_kl(new, new, mu, sigma)[0] == pytest.approx(0.0, abs=1e-12)
    # expected cost (Laplace) vs Monte Carlo
    cost = random_cost(rng, T, dX + dU)
    ell = (0.5 * np.einsum("nti,tij,ntj->nt", Z, cost.C, Z) + np.einsum("ti,nti->nt", cost.c, Z))
    se = ell.std(0) / np.sqrt(n)
    assert np.all(np.abs(ell.mean(0) - expected_cost(cost, mu, sigma)) < 4 * se)


# ---------------------------------------------------------------- KL-constrained solve
def big_step_problem(rng, T=8, dX=3, dU=1):
    dyn = random_dynamics(rng, T, dX, dU, noise=0.05)
    cost = random_cost(rng, T, dX + dU, scale=0.5)
    c = np.array(cost.c)
    c[:, dX:] = -20.0  # a strong linear reward for large actions: the unconstrained step is far
    prev = LinearGaussianPolicy(np.zeros((T, dU, dX)), np.zeros((T, dU)), np.full((T, dU, dU), 0.1))
    return dyn, QuadraticCost(cost.C, c), prev


def test_solve_kl_constrained_meets_target():
    rng = np.random.default_rng(8)
    dyn, cost, prev = big_step_problem(rng)
    T = prev.T
    eps = 0.2 * T
    loose = backward_pass(dyn, augmented_cost(cost, None, 1e-6, prev), 1e-6)
    assert traj_kl(loose, prev, *forward_pass(dyn, loose))[0] > 50 * eps
    pol, eta, info = solve_kl_constrained(dyn, cost, prev, None, None, None, eps, eta0=1.0)
    assert info["converged"] and info["status"] == "converged"
    assert abs(info["kl"] - eps) < 0.1 * eps
    # the returned η reproduces the returned policy and its KL
    again = backward_pass(dyn, augmented_cost(cost, None, eta, prev), eta)
    np.testing.assert_allclose(again.k, pol.k, rtol=1e-12)
    assert traj_kl(pol, prev, *forward_pass(dyn, pol))[0] == pytest.approx(info["kl"])
    assert info["eta_path"][-1] == eta and len(info["kl_path"]) == info["iterations"] <= 50
    # with BADMM terms switched on the solve still meets the target
    nu, pi = np.full(T, 0.5), random_policy(rng, T, prev.dX, prev.dU)
    _, _, info = solve_kl_constrained(dyn, cost, prev, rng.standard_normal((T, 1)), nu, pi, eps)
    assert abs(info["kl"] - eps) < 0.1 * eps


def test_solve_kl_constrained_inactive_constraint():
    rng = np.random.default_rng(9)
    dyn, cost, prev = big_step_problem(rng)
    pol, eta, info = solve_kl_constrained(dyn, cost, prev, None, None, None, 1e9, eta0=1.0,
                                          min_eta=1e-4)
    assert info["status"] == "inactive" and eta == pytest.approx(1e-4)
    assert info["kl"] < 1e9


def nonconvex_problem(T=5, dX=2, dU=1):
    rng = np.random.default_rng(10)
    dyn = random_dynamics(rng, T, dX, dU, noise=0.05)
    C = np.zeros((T, dX + dU, dX + dU))
    C[:, :dX, :dX] = np.eye(dX)
    C[:, dX:, dX:] = -10.0  # negative curvature in u: PD only for η ≳ 100 (prev precision 0.1)
    cost = QuadraticCost(C, np.zeros((T, dX + dU)))
    prev = LinearGaussianPolicy(np.zeros((T, dU, dX)), np.zeros((T, dU)),
                                np.full((T, dU, dU), 10.0))
    return dyn, cost, prev


def test_non_pd_backward_pass_raises_with_time_step():
    dyn, cost, prev = nonconvex_problem()
    with pytest.raises(NotPositiveDefiniteError) as e:
        backward_pass(dyn, augmented_cost(cost, None, 1e-3, prev), 1e-3)
    assert e.value.t == prev.T - 1 and isinstance(e.value, np.linalg.LinAlgError)


def test_non_pd_recovers_by_raising_eta(caplog):
    dyn, cost, prev = nonconvex_problem()
    eps = 0.5 * prev.T
    with caplog.at_level(logging.WARNING, logger="l2o.lqg"):
        pol, eta, info = solve_kl_constrained(dyn, cost, prev, None, None, None, eps, eta0=1e-3)
    assert info["pd_failures"] > 0
    assert eta > 100.0 and min(info["eta_path"]) > 100.0
    assert np.all(np.linalg.eigvalsh(pol.cov) > 0) and np.all(np.isfinite(pol.K))
    assert info["converged"] or "did not converge" in caplog.text
    with pytest.raises(NotPositiveDefiniteError):
        solve_kl_constrained(dyn, cost, prev, None, None, None, eps, eta0=1e-3, eta_limit=10.0)


def test_solve_kl_constrained_validates():
    dyn, cost, prev = nonconvex_problem()
    with pytest.raises(ValueError, match="epsilon"):
        solve_kl_constrained(dyn, cost, prev, None, None, None, 0.0)
    with pytest.raises(ValueError, match="bracket"):
        solve_kl_constrained(dyn, cost, prev, None, None, None, 1.0, min_eta=2.0, max_eta=1.0)
