"""Fitted local models (l2o.dynamics): recover known systems, policies and gradient maps."""

import numpy as np
import pytest

from l2o.dynamics import (
    GMMPrior,
    SlidingWindowPrior,
    dynamics_points,
    fit_cost_gradient_matching,
    fit_dynamics,
    fit_linear_gaussian_policy,
)


def known_system(rng, dX=3, dU=1):
    A = 0.6 * np.eye(dX) + 0.2 * rng.standard_normal((dX, dX))
    B = rng.standard_normal((dX, dU))
    c = rng.standard_normal(dX)
    L = 0.1 * rng.standard_normal((dX, dX))
    W = L @ L.T + 0.01 * np.eye(dX)
    return A, B, c, W


def simulate(rng, A, B, c, W, N, T, with_last=False):
    """Time-invariant linear-Gaussian system driven by exploratory actions."""
    dX, dU = B.shape
    Lw = np.linalg.cholesky(W)
    X = np.empty((N, T + 1, dX))
    U = rng.standard_normal((N, T, dU))
    X[:, 0] = 1.0 + 0.5 * rng.standard_normal((N, dX))
    for t in range(T):
        X[:, t + 1] = X[:, t] @ A.T + U[:, t] @ B.T + c + rng.standard_normal((N, dX)) @ Lw.T
    return (X if with_last else X[:, :T]), U


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    A, B, c, W = known_system(rng)
    X, U = simulate(rng, A, B, c, W, N=20_000, T=3, with_last=True)
    return A, B, c, W, X, U


def check_recovers(dyn, A, B, c, W, steps, tol=0.01):
    dX = A.shape[0]
    for t in steps:
        np.testing.assert_allclose(dyn.Fm[t, :, :dX], A, atol=tol)
        np.testing.assert_allclose(dyn.Fm[t, :, dX:], B, atol=tol)
        np.testing.assert_allclose(dyn.fv[t], c, atol=3 * tol)
        np.testing.assert_allclose(dyn.dyn_covar[t], W, atol=tol * np.abs(W).max() * 10)


def test_fit_dynamics_recovers_known_system(data):
    A, B, c, W, X, U = data
    dyn = fit_dynamics(X, U)                       # T+1 states: all 3 transitions fitted
    check_recovers(dyn, A, B, c, W, range(3))
    np.testing.assert_allclose(dyn.x0mu, 1.0, atol=0.02)
    np.testing.assert_allclose(dyn.x0sigma, 0.25 * np.eye(3), atol=0.02)
    short = fit_dynamics(X[:, :3], U)              # T states: the last transition is unknown
    check_recovers(short, A, B, c, W, range(2))
    assert np.all(short.Fm[2] == 0) and np.all(short.dyn_covar[2] == 0)
    np.testing.assert_allclose(short.Fm[:2], dyn.Fm[:2], rtol=1e-12)


def test_fit_dynamics_with_priors(data):
    A, B, c, W, X, U = data
    gen = np.random.default_rng(1)
    gmm = GMMPrior(n_clusters=3, max_points=3000, max_iter=10).update(X, U, gen)
    check_recovers(fit_dynamics(X, U, prior=gmm), A, B, c, W, range(3))
    # a strong prior from neighbouring steps of a time-invariant system is consistent
    win = SlidingWindowPrior(window=1, strength=5000.0).update(X, U, gen)
    check_recovers(fit_dynamics(X, U, prior=win), A, B, c, W, range(3), tol=0.02)


def test_prior_makes_tiny_sample_fit_well_posed(data):
    """With fewer points than dimensions the plain fit is singular; the prior fixes it."""
    A, B, c, W, X, U = data
    gen = np.random.default_rng(2)
    gmm = GMMPrior(n_clusters=2, max_points=5000, strength=20.0).update(X, U, gen)
    Xs, Us = X[:4], U[:4]          # 4 points, rank-3 scatter of the 4-dim (x, u)
    plain = fit_dynamics(Xs, Us, regularization=1e-12)
    dyn = fit_dynamics(Xs, Us, prior=gmm, regularization=0.0)
    assert np.all(np.isfinite(dyn.Fm))
    assert np.all(np.linalg.eigvalsh(dyn.dyn_covar) > -1e-12)
    # the 4-point fit leans on the prior, which knows the system
    err_prior = np.abs(dyn.Fm[0, :, :3] - A).max()
    assert err_prior < 0.1 and 5 * err_prior < np.abs(plain.Fm[0, :, :3] - A).max()


def test_known_rows_are_exact(data):
    A, B, c, W, X, U = data
    dyn = fit_dynamics(X, U, known_rows="increment")
    np.testing.assert_array_equal(dyn.Fm[:, 0], np.tile([1.0, 0.0, 0.0, 1.0], (3, 1)))
    assert np.all(dyn.fv[:, 0] == 0.0)
    assert np.all(dyn.dyn_covar[:, 0, :] == 0.0) and np.all(dyn.dyn_covar[:, :, 0] == 0.0)
    plain = fit_dynamics(X, U)
    np.testing.assert_allclose(dyn.Fm[:, 1:], plain.Fm[:, 1:], rtol=1e-12)  # other rows untouched
    np.testing.assert_allclose(dyn.dyn_covar[:, 1:, 1:], plain.dyn_covar[:, 1:, 1:], rtol=1e-12)
    general = fit_dynamics(X, U, known_rows=[(2, [0.0, 0.5, 0.0, 2.0], 0.25)])
    np.testing.assert_array_equal(general.Fm[:, 2], np.tile([0.0, 0.5, 0.0, 2.0], (3, 1)))
    assert np.all(general.fv[:, 2] == 0.25)
    with pytest.raises(ValueError):
        fit_dynamics(X, U, known_rows="nonsense")


def test_regularization_shrinks_small_scale_inputs(data):
    """Absolute ridge on tiny-scale actions shrinks B; the relative ridge does not."""
    A, B, c, W, X, U = data
    Us = 1e-3 * U                    # the same system with actions in units 1000× smaller
    B_true = np.broadcast_to(1e3 * B, (3, 3, 1))
    absolute = fit_dynamics(X, Us, regularization=1e-3)
    relative = fit_dynamics(X, Us, regularization=1e-3, relative_regularization=True)
    assert np.all(np.abs(absolute.Fm[:, :, 3:]) < 0.01 * np.abs(B_true).max())
    np.testing.assert_allclose(relative.Fm[:, :, 3:], B_true, rtol=0.05)


def test_gmm_prior_em_and_query():
    rng = np.random.default_rng(3)
    a = rng.normal([0.0, 0.0], [1.0, 0.5], size=(1500, 2))
    b = rng.normal([8.0, -6.0], [0.3, 2.0], size=(500, 2))
    pts = np.concatenate([a, b])
    gmm = GMMPrior(n_clusters=2, max_points=10_000, max_iter=50, tol=0.0)
    gmm.fit(pts, np.random.default_rng(4))
    hist = np.array(gmm.loglik_history)
    assert np.all(np.diff(hist) > -1e-9)                          # EM never decreases it
    np.testing.assert_allclose(np.sort(gmm.weights), [0.25, 0.75], atol=0.02)
    mu0, Phi, m, n0 = gmm.eval(b[:50])
    np.testing.assert_allclose(mu0, [8.0, -6.0], atol=0.2)
    np.testing.assert_allclose(Phi / m, np.diag([0.09, 4.0]), atol=0.4)
    assert m == n0 == 1.0
    again = GMMPrior(n_clusters=2, max_points=10_000, max_iter=50, tol=0.0)
    again.fit(pts, np.random.default_rng(4))
    np.testing.assert_array_equal(again.means, gmm.means)        # seeded: reproducible
    assert dynamics_points(np.zeros((2, 4, 3)), np.zeros((2, 3, 1))).shape == (6, 7)
    # a warm start from the previous fit converges at once to the same mixture
    again.tol = 1e-6
    again.fit(pts, np.random.default_rng(5))
    assert len(again.loglik_history) <= 3
    np.testing.assert_allclose(np.sort(again.weights), np.sort(gmm.weights), atol=1e-3)


def test_sliding_window_prior_pools_neighbouring_steps():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((50, 6, 2)) + np.arange(6)[None, :, None]   # mean drifts with t
    U = rng.standard_normal((50, 6, 1))
    win = SlidingWindowPrior(window=1, strength=3.0).update(X, U, rng)
    mu0, Phi, m, n0 = win.eval(None, t=2)
    np.testing.assert_allclose(mu0, win.means[1:4].mean(0))
    assert m == n0 == 3.0 and np.all(np.linalg.eigvalsh(Phi) > 0)
    assert win.eval(None, t=0)[0] == pytest.approx(win.means[0:2].mean(0))  # clipped at 0


def test_fit_linear_gaussian_policy_recovers_known_policy():
    rng = np.random.default_rng(5)
    N, T, dX, dU = 20_000, 3, 4, 2
    K = rng.standard_normal((T, dU, dX))
    k = rng.standard_normal((T, dU))
    S = np.array([[0.04, 0.01], [0.01, 0.02]])
    X = rng.standard_normal((N, T, dX)) * [1.0, 2.0, 0.5, 1.0] + 0.3
    U = (np.einsum("tux,ntx->ntu", K, X) + k
         + rng.standard_normal((N, T, dU)) @ np.linalg.cholesky(S).T)
    pol = fit_linear_gaussian_policy(X, U, regularization=0.0, pi_cov=0.1)
    np.testing.assert_allclose(pol.K, K, atol=0.01)
    prior = GMMPrior(n_clusters=2, max_points=2000).update_policy(X, U, np.random.default_rng(0))
    with_prior = fit_linear_gaussian_policy(X, U, prior=prior, pi_cov=0.1)
    np.testing.assert_allclose(with_prior.K, K, atol=0.01)
    np.testing.assert_allclose(pol.k, k, atol=0.01)
    np.testing.assert_allclose(pol.cov, np.broadcast_to(S + 0.1 * np.eye(2), (T, 2, 2)), atol=0.005)
    # a noiseless linear policy: exact gains, covariance = Σ^π (floored when Σ^π = 0)
    exact = fit_linear_gaussian_policy(X, np.einsum("tux,ntx->ntu", K, X) + k, regularization=0.0)
    np.testing.assert_allclose(exact.K, K, rtol=1e-8, atol=1e-8)
    assert np.all(np.linalg.eigvalsh(exact.cov) > 0)


def test_gradient_matching_cost_recovers_linear_gradient_map():
    rng = np.random.default_rng(6)
    N, T, dX = 5000, 4, 5
    r = rng.standard_normal((T, dX))
    b = rng.standard_normal(T)
    X = rng.standard_normal((N, T, dX))
    g = np.einsum("tx,ntx->nt", r, X) + b + 1e-3 * rng.standard_normal((N, T))
    cost = fit_cost_gradient_matching(X, g[..., None], ridge=1e-8)
    C, c = cost.C, cost.c
    assert C.shape == (T, dX + 1, dX + 1)
    np.testing.assert_allclose(C[:, 0, :dX], r, atol=1e-3)
    np.testing.assert_array_equal(C[:, 0, :dX], C[:, :dX, 0])
    np.testing.assert_allclose(c[:, 0], b, atol=1e-3)
    assert np.all(C[:, 1:, 1:] == 0) and np.all(c[:, 1:] == 0)
    # ∂c̃/∂x_j = (C z + c)[0] = r·s + b for any z, and actions carry no cost
    z = rng.standard_normal((T, dX + 1))
    grad = np.einsum("tij,tj->ti", C, z) + c
    np.testing.assert_allclose(grad[:, 0], np.einsum("tx,tx->t", C[:, 0, :dX], z[:, :dX]) + c[:, 0])
    np.testing.assert_allclose(grad[:, 0], np.einsum("tx,tx->t", r, z[:, :dX]) + b, atol=1e-2)
    assert np.all(grad[:, dX] == 0)
