"""BADMM numerics (l2o.badmm): hand-computed cases, GPS rules, and the sign of the dual step."""

import numpy as np
import pytest

from l2o.badmm import (
    closed_form_pi_cov,
    dual_update_lambda,
    kl_pi_psi_per_t,
    normalize_weights,
    pi_targets,
    step_adjust,
    update_nu,
)
from l2o.lqg import (
    LinearGaussianDynamics,
    LinearGaussianPolicy,
    QuadraticCost,
    augmented_cost,
    backward_pass,
    forward_pass,
)


@pytest.fixture
def tiny():
    """T = 2, dX = 2, dU = 1, N = 2 with round numbers."""
    psi = LinearGaussianPolicy(K=[[[1.0, 2.0]], [[0.0, -1.0]]], k=[[0.5], [1.0]],
                               cov=[[[2.0]], [[0.5]]])
    X = np.array([[[1.0, 0.0], [2.0, 1.0]],
                  [[0.0, 1.0], [-1.0, 3.0]]])          # (n, t, x)
    lam = np.array([[1.0], [-2.0]])
    nu = np.array([0.5, 4.0])
    return psi, X, lam, nu


def test_pi_targets_by_hand(tiny):
    psi, X, lam, nu = tiny
    # ψ means: [[1.5, 0], [2.5, -2]]; shifts G λ / ν: [2·1/0.5, 0.5·(−2)/4] = [4, −0.25]
    tg = pi_targets(psi, X, lam, nu)
    np.testing.assert_allclose(tg.mean[..., 0], [[-2.5, 0.25], [-1.5, -1.75]])
    np.testing.assert_allclose(tg.precision[:, 0, 0], [0.5, 2.0])
    np.testing.assert_allclose(tg.weight, nu)
    mean, _, _ = pi_targets(psi, X, None, nu)
    np.testing.assert_allclose(mean[..., 0], [[1.5, 0.0], [2.5, -2.0]])
    with pytest.raises(ValueError, match="nu_t must be > 0"):
        pi_targets(psi, X, lam, np.array([0.0, 1.0]))


def test_pi_targets_minimise_the_theta_objective(tiny):
    """The target is the minimiser of λμ + ν/2 (μ − m)ᵀG⁻¹(μ − m) at every sample."""
    psi, X, lam, nu = tiny
    y = pi_targets(psi, X, lam, nu).mean[..., 0]
    m = psi.mean(X)[..., 0]
    P = psi.inv_cov[:, 0, 0]
    grad = lam[:, 0] + nu * P * (y - m)
    np.testing.assert_allclose(grad, 0.0, atol=1e-12)


def test_normalize_weights_by_hand():
    # mean-1 rescale → [.25, .5, .75, 2.5]; median .625; clip at 1.25; divide by .625
    np.testing.assert_allclose(normalize_weights(np.array([1.0, 2.0, 3.0, 10.0])),
                               [0.4, 0.8, 1.2, 2.0])
    w = normalize_weights(np.full((3, 5), 0.01))
    np.testing.assert_allclose(w, 1.0)
    # equal weights over samples give the per-step result
    per_t = np.array([0.5, 1.0, 4.0])
    np.testing.assert_allclose(normalize_weights(np.tile(per_t, (7, 1)))[0],
                               normalize_weights(per_t))


def test_closed_form_pi_cov(tiny):
    psi, _, _, nu = tiny
    # ν-weighted mean precision (0.5·0.5 + 4·2) / 4.5, inverted
    cov = closed_form_pi_cov(psi, nu)
    assert cov.shape == (1, 1)
    assert cov[0, 0] == pytest.approx(4.5 / 8.25)
    # it minimises Σ_t ν_t/2 (G_t⁻¹ Σ − log Σ)
    P = psi.inv_cov[:, 0, 0]
    f = lambda s: np.sum(nu / 2 * (P * s - np.log(s)))  # noqa: E731
    s = cov[0, 0]
    assert f(s) < f(s * 1.01) and f(s) < f(s / 1.01)
    # GPS's variant agrees for constant ν
    np.testing.assert_allclose(closed_form_pi_cov(psi, 3.0, variant="gps"),
                               closed_form_pi_cov(psi, 3.0))
    with pytest.raises(ValueError):
        closed_form_pi_cov(psi, nu, variant="nope")


def test_dual_update_lambda_by_hand(tiny):
    psi, X, lam, nu = tiny
    U_pi = np.array([[[2.0], [1.0]], [[2.0], [-1.0]]])
    # gaps mean_n(π − ψ): t0: (0.5 − 0.5)/2 = 0; t1: (1 + 1)/2 = 1
    got = dual_update_lambda(lam, nu, psi, X, U_pi, alpha=0.1)
    np.testing.assert_allclose(got[:, 0], [1.0, -2.0 + 0.1 * 4.0 * 2.0 * 1.0])  # × G⁻¹ = 2
    plain = dual_update_lambda(lam, nu, psi, X, U_pi, alpha=0.1, precondition=False)
    np.testing.assert_allclose(plain[:, 0], [1.0, -2.0 + 0.1 * 4.0 * 1.0])


def test_update_nu_rules():
    nu = np.ones(5)
    kl = np.array([0.0, 5.0, 5.0, 5.0, 5.0])          # mean 4, std 2
    # mode 3: t0 < 4 − 1·2 → ×0.5; t ≥ 4 + 0.5·2 = 5 → ×2
    np.testing.assert_allclose(update_nu(nu, kl), [0.5, 2, 2, 2, 2])
    np.testing.assert_allclose(update_nu(nu, kl, lower=2.0, upper=2.0), nu)  # LTO-CMA thresholds
    kl2 = np.array([0.0, 0.0, 0.0, 0.0, 10.0])         # mean 2, std 4
    np.testing.assert_allclose(update_nu(nu, kl2), [1, 1, 1, 1, 2])
    np.testing.assert_allclose(update_nu(nu, kl2, max_nu=1.5), [1, 1, 1, 1, 1.5])
    np.testing.assert_allclose(update_nu(nu, kl2, mode=0, lg_step=0.1), [1, 1, 1, 1, 2])
    np.testing.assert_allclose(update_nu(nu, kl2, mode=1, lg_step=-2.0), 0.0)
    kl3 = np.array([0.5, 0.9, 1, 2, 1])                # ratios to kl_prev = 1
    np.testing.assert_allclose(update_nu(nu, kl3, mode=2, kl_prev=np.ones(5)), [0.5, 1, 2, 2, 2])
    with pytest.raises(ValueError):
        update_nu(nu, kl, mode=7)


def test_step_adjust_rule_and_clipping():
    # model exactly right (actual = predicted): factor capped at 5
    assert step_adjust(10.0, 9.0, 9.0, 1.0) == pytest.approx(5.0)
    # no actual improvement: factor ½
    assert step_adjust(10.0, 9.0, 10.0, 1.0) == pytest.approx(0.5)
    # half the predicted improvement realised: 1 / (2 · 0.5) = 1
    assert step_adjust(10.0, 9.0, 9.5, 2.0) == pytest.approx(2.0)
    # cost went up: factor clipped at 0.1
    assert step_adjust(10.0, 9.0, 12.0, 1.0) == pytest.approx(1.0 / 6.0)
    assert step_adjust(10.0, 11.0, 12.0, 1.0) == pytest.approx(0.1)  # predicted < 0
    # the multiplier itself stays in [min_mult, max_mult]
    assert step_adjust(10.0, 9.0, 9.0, 3.0) == pytest.approx(10.0)
    assert step_adjust(10.0, 11.0, 12.0, 0.05) == pytest.approx(0.01)


def test_kl_pi_psi_per_t_matches_per_sample_formula():
    rng = np.random.default_rng(0)
    T, dX, dU, N = 3, 2, 2, 5

    def rand_pol():
        L = rng.standard_normal((T, dU, dU))
        return LinearGaussianPolicy(rng.standard_normal((T, dU, dX)), rng.standard_normal((T, dU)),
                                    L @ np.swapaxes(L, 1, 2) + 0.2 * np.eye(dU))

    pi, psi = rand_pol(), rand_pol()
    X = rng.standard_normal((N, T, dX))
    want = np.zeros(T)
    for t in range(T):
        for n in range(N):
            m1 = pi.K[t] @ X[n, t] + pi.k[t]
            m2 = psi.K[t] @ X[n, t] + psi.k[t]
            S1, S2 = pi.cov[t], psi.cov[t]
            P2 = np.linalg.inv(S2)
            want[t] += 0.5 * (np.trace(P2 @ S1) - dU + np.log(np.linalg.det(S2) / np.linalg.det(S1))
                              + (m2 - m1) @ P2 @ (m2 - m1)) / N
    np.testing.assert_allclose(kl_pi_psi_per_t(pi, psi, X), want, rtol=1e-10)
    np.testing.assert_allclose(kl_pi_psi_per_t(pi, psi, X, pi_mean=pi.mean(X)), want, rtol=1e-10)
    assert np.allclose(kl_pi_psi_per_t(psi, psi, X), 0.0)


def test_lambda_updates_drive_the_means_together():
    """Repeated λ steps with ψ re-solved in between close the gap to a fixed π̃; the
    opposite sign opens it."""
    rng = np.random.default_rng(1)
    T, dX, dU = 4, 2, 1
    A = np.stack([0.8 * np.eye(dX) + 0.1 * rng.standard_normal((dX, dX)) for _ in range(T)])
    Fm = np.concatenate([A, rng.standard_normal((T, dX, dU))], axis=2)
    W = np.broadcast_to(0.01 * np.eye(dX), (T, dX, dX))
    dyn = LinearGaussianDynamics(Fm, np.zeros((T, dX)), W, np.ones(dX), 0.1 * np.eye(dX))
    cost = QuadraticCost(np.broadcast_to(0.1 * np.eye(dX + dU), (T, dX + dU, dX + dU)),
                         np.zeros((T, dX + dU)))
    psi0 = LinearGaussianPolicy(np.zeros((T, dU, dX)), np.zeros((T, dU)), np.full((T, dU, dU), 0.5))
    pi = LinearGaussianPolicy(0.3 * rng.standard_normal((T, dU, dX)), np.full((T, dU), 2.0),
                              np.full((T, dU, dU), 0.5))
    eta, nu, alpha = 0.5, np.ones(T), 1.0

    def run(sign, rounds):
        lam, gaps = np.zeros((T, dU)), []
        for _ in range(rounds):
            psi = backward_pass(dyn, augmented_cost(cost, lam, eta, psi0, nu, pi), eta, nu)
            mu, sigma = forward_pass(dyn, psi)
            L = np.linalg.cholesky(sigma[:, :dX, :dX])
            X = mu[:, :dX] + np.einsum("tij,ntj->nti", L, rng.standard_normal((2000, T, dX)))
            gaps.append(np.abs((pi.mean(X) - psi.mean(X)).mean(0)).max())
            step = dual_update_lambda(lam, nu, psi, X, pi.mean(X), alpha) - lam
            lam = lam + sign * step
        return np.array(gaps)

    gaps = run(+1, 25)
    assert gaps[0] > 0.5
    assert gaps[-1] < 0.02 * gaps[0]
    assert np.all(np.diff(gaps[:6]) < 0)  # then sampling noise (~2e-3) dominates
    wrong = run(-1, 8)
    assert wrong[-1] > 2 * wrong[0]
