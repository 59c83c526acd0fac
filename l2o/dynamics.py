"""Fitted local models of one coordinate group: dynamics p̃, π's linearisation π̃, cost c̃.

All fits pool the samples of one coordinate group: ``N`` = trajectories × stored
coordinates of the group, since the block-diagonal, tied structure of convolutional GPS
(paper §3.5) makes every coordinate of a group a sample of the same per-coordinate model.
Arrays are float64 numpy; shapes are ``X: (N, T, dX)`` (or ``(N, T+1, dX)``, see
:func:`fit_dynamics`), ``U: (N, T, dU)``.

- :func:`fit_dynamics`: per t, a joint Gaussian over [x_t, u_t, x_{t+1}] with a
  Normal-inverse-Wishart prior, conditioned on (x_t, u_t) (the GPS machinery of book/design.md);
- :class:`GMMPrior`, :class:`SlidingWindowPrior`: where the prior comes from;
- :func:`fit_linear_gaussian_policy`: the same conditioning on [x_t, μ^π_t] gives π̃
  (paper footnote 2);
- :func:`fit_cost_gradient_matching`: the quadratic cost by matching ∂c̃/∂x_j to the true
  gradient (book/design.md, D6; the paper does not say how c̃ is fitted).
"""

from __future__ import annotations

import logging
import math
from typing import Protocol, Sequence

import numpy as np

from l2o.lqg import (LinearGaussianDynamics, LinearGaussianPolicy, QuadraticCost,
                     StateProjection, _floor_cov)

log = logging.getLogger(__name__)

__all__ = [
    "NIWPrior",
    "GMMPrior",
    "SlidingWindowPrior",
    "dynamics_points",
    "fit_dynamics",
    "fit_linear_gaussian_policy",
    "fit_cost_gradient_matching",
    "fit_state_projection",
    "pad_hidden",
]


class NIWPrior(Protocol):
    """What a prior offers the fits: Normal-inverse-Wishart parameters for a query set."""

    def eval(self, points: np.ndarray, t: int | None = None
             ) -> tuple[np.ndarray, np.ndarray, float, float]:
        """``points (M, D)`` at step ``t`` → ``(μ0 (D,), Φ (D, D), m, n0)``."""
        ...


# --------------------------------------------------------------------------- helpers
def _check_XU(X, U) -> tuple[np.ndarray, np.ndarray, int]:
    X = np.asarray(X, dtype=np.float64)
    U = np.asarray(U, dtype=np.float64)
    if X.ndim != 3 or U.ndim != 3:
        raise ValueError(f"X and U must be (N, T, d); got {X.shape} and {U.shape}")
    N, T = U.shape[:2]
    if X.shape[0] != N or X.shape[1] not in (T, T + 1):
        raise ValueError(f"X {X.shape} does not match U {U.shape}: need (N, T or T+1, dX)")
    return X, U, T


def _niw_map_cov(mean, emp_cov, N, prior) -> np.ndarray:
    """MAP covariance under a NIW prior (μ0, Φ, m, n0), with the empirical mean kept:

        Σ = (N Σ_emp + Φ + N m / (N + m) (μ̂ − μ0)(μ̂ − μ0)ᵀ) / (N + n0).
    """
    mu0, Phi, m, n0 = prior
    d = mean - mu0
    S = (N * emp_cov + Phi + (N * m / (N + m)) * np.outer(d, d)) / (N + n0)
    return 0.5 * (S + S.T)


def _add_ridge(S: np.ndarray, idx: slice, reg: float, relative: bool) -> None:
    """Add ``reg`` (or ``reg ×`` the variance, floored) to the diagonal of ``S[..., idx, idx]``."""
    if reg <= 0:
        return
    diag = np.einsum("...ii->...i", S[..., idx, idx])  # a writable view
    if relative:
        floor = 1e-12 * np.maximum(diag.mean(axis=-1, keepdims=True), 1e-300)
        diag += reg * np.maximum(diag, floor)
    else:
        diag += reg


def _mean_cov(Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (biased) covariance of the rows of ``Y (N, D)``."""
    mu = Y.mean(axis=0)
    Yc = Y - mu
    S = (Yc.T @ Yc) / Y.shape[0]   # A.T @ A runs as a symmetric rank-k update
    return mu, 0.5 * (S + S.T)


def _fit_conditional(points_at, T: int, n_in: int, N: int, prior, regularization: float,
                     relative: bool):
    """Per step, a joint Gaussian over ``Y_t = [z_t, y_t]`` conditioned on ``z_t``.

    The covariance of each step gets the NIW prior (if any) and a ridge on its ``z``
    block; conditioning gives the linear-Gaussian map ``y = F z + f + noise``.

    Args:
        points_at: ``t -> (N, n_in + n_out)`` rows ``[z, y]`` of step ``t``.

    Returns:
        ``F (T, n_out, n_in)``, ``f (T, n_out)``, noise covariance ``S (T, n_out, n_out)``.
    """
    mus, covs = [], []
    for t in range(T):
        Y = points_at(t)
        mu, S = _mean_cov(Y)
        if prior is not None:
            S = _niw_map_cov(mu, S, N, prior.eval(Y, t))
        mus.append(mu)
        covs.append(S)
    mus, covs = np.stack(mus), np.stack(covs)
    _add_ridge(covs, slice(0, n_in), regularization, relative)
    Szz, Szy = covs[:, :n_in, :n_in], covs[:, :n_in, n_in:]
    F = np.swapaxes(np.linalg.solve(Szz, Szy), 1, 2)
    f = mus[:, n_in:] - np.einsum("tij,tj->ti", F, mus[:, :n_in])
    S = covs[:, n_in:, n_in:] - F @ Szy                  # Σ_yy − F Σ_zz Fᵀ
    return F, f, 0.5 * (S + np.swapaxes(S, 1, 2))


def dynamics_points(X: np.ndarray, U: np.ndarray, index: tuple[np.ndarray, np.ndarray] | None = None
                    ) -> np.ndarray:
    """Transition points [x_t, u_t, x_{t+1}] ``(M, 2dX+dU)``.

    Args:
        X: ``(N, T or T+1, dX)``; U: ``(N, T, dU)``.
        index: optional ``(n, t)`` index arrays selecting transitions; all if ``None``.
    """
    X, U, T = _check_XU(X, U)
    n_trans = X.shape[1] - 1
    if index is None:
        n, t = np.meshgrid(np.arange(X.shape[0]), np.arange(n_trans), indexing="ij")
        n, t = n.ravel(), t.ravel()
    else:
        n, t = index
    return np.concatenate([X[n, t], U[n, t], X[n, t + 1]], axis=1)


# ------------------------------------------------------------------------------ priors
class GMMPrior:
    """Gaussian-mixture prior on pooled transition points, as in GPS's dynamics prior.

    :meth:`update` fits a K-component mixture by EM to at most ``max_points`` transition
    points [x, u, x'] drawn from all time steps (book/design.md: the 2016 paper used a
    mixture of 10 Gaussians). :meth:`eval` averages the cluster posteriors over the query
    points (those of one time step) and returns the moments of the resulting mixture as a
    Normal-inverse-Wishart prior (μ0, Φ, m, n0) with m = n0 = ``strength`` pseudo-points
    and Φ = ``strength`` · Σ_mix.

    EM runs on standardised coordinates (each dimension shifted and scaled by its pooled
    mean and standard deviation), so ``reg`` is relative to each dimension's spread; the
    returned moments are in the original units.

    Args:
        n_clusters: maximum number of components K.
        max_points: subsample size for EM (drawn with the generator passed to ``update``).
        min_points_per_cluster: K = clip(points / this, 1, n_clusters) (GPS: 20–40).
        max_iter: cap on EM iterations.
        tol: stop when the mean log-likelihood per point improves by less than this.
        strength: pseudo-count of the prior (GPS's ``strength``, default 1).
        max_query_points: :meth:`eval` averages posteriors over at most this many query
            points (evenly spaced), which keeps a per-t query cheap at large N.
        reg: ridge added to every component covariance (standardised units).
        warm_start: start EM from the previous fit when K and D are unchanged.
    """

    def __init__(self, n_clusters: int = 10, max_points: int = 20_000,
                 min_points_per_cluster: int = 20, max_iter: int = 20, tol: float = 1e-3,
                 strength: float = 1.0, max_query_points: int = 128, reg: float = 1e-6,
                 warm_start: bool = True):
        if n_clusters < 1:
            raise ValueError(f"Invalid n_clusters: {n_clusters} (must be ≥ 1)")
        if max_points < 2:
            raise ValueError(f"Invalid max_points: {max_points} (must be ≥ 2)")
        if min_points_per_cluster < 1 or max_iter < 1 or max_query_points < 1:
            raise ValueError("min_points_per_cluster, max_iter and max_query_points must be ≥ 1")
        if strength < 0 or reg < 0 or tol < 0:
            raise ValueError("strength, reg and tol must be ≥ 0")
        self.n_clusters = n_clusters
        self.max_points = max_points
        self.min_points_per_cluster = min_points_per_cluster
        self.max_iter = max_iter
        self.tol = tol
        self.strength = strength
        self.max_query_points = max_query_points
        self.reg = reg
        self.warm_start = warm_start
        self.weights = self.means = self.covs = None
        self.shift = self.scale = None
        self.loglik_history: list[float] = []

    @property
    def fitted(self) -> bool:
        return self.means is not None

    # --- fitting
    def update(self, X: np.ndarray, U: np.ndarray, rng: np.random.Generator) -> "GMMPrior":
        """Fit to the transition points of one group: ``X (N, T[+1], dX)``, ``U (N, T, dU)``."""
        X, U, _ = _check_XU(X, U)
        N, n_trans = X.shape[0], X.shape[1] - 1
        total = N * n_trans
        flat = np.arange(total) if total <= self.max_points else \
            np.sort(rng.choice(total, size=self.max_points, replace=False))
        return self.fit(dynamics_points(X, U, (flat // n_trans, flat % n_trans)), rng)

    def update_policy(self, X: np.ndarray, U: np.ndarray, rng: np.random.Generator
                      ) -> "GMMPrior":
        """Fit to state-action points [x_t, u_t]: a prior for :func:`fit_linear_gaussian_policy`."""
        X = np.asarray(X, dtype=np.float64)
        U = np.asarray(U, dtype=np.float64)
        N, T = U.shape[:2]
        total = N * T
        flat = np.arange(total) if total <= self.max_points else \
            np.sort(rng.choice(total, size=self.max_points, replace=False))
        n, t = flat // T, flat % T
        return self.fit(np.concatenate([X[n, t], U[n, t]], axis=1), rng)

    def fit(self, points: np.ndarray, rng: np.random.Generator) -> "GMMPrior":
        """Fit by EM to ``points (M, D)`` (subsampled to ``max_points`` with ``rng``)."""
        P = np.asarray(points, dtype=np.float64)
        if P.ndim != 2 or P.shape[0] < 2:
            raise ValueError(f"points must be (M ≥ 2, D), got {P.shape}")
        if P.shape[0] > self.max_points:
            P = P[np.sort(rng.choice(P.shape[0], size=self.max_points, replace=False))]
        M, D = P.shape
        K = int(np.clip(M // self.min_points_per_cluster, 1, self.n_clusters))
        shift = P.mean(axis=0)
        scale = P.std(axis=0)
        scale[scale <= 1e-12 * max(scale.max(), 1e-300)] = 1.0  # constant dimensions
        Z = (P - shift) / scale
        warm = (self.warm_start and self.fitted and self.means.shape == (K, D))
        if warm:
            # previous components, re-expressed in the new standardisation
            r = self.scale / scale
            means = ((self.means * self.scale + self.shift) - shift) / scale
            covs = self.covs * r[:, None] * r[None, :]
            weights = self.weights
            log_resp, ll = self._e_step(Z, weights, means, covs)
        else:
            log_resp = self._init_resp(Z, K, rng)
            ll = -np.inf
        hist = []
        for _ in range(self.max_iter):
            weights, means, covs = self._m_step(Z, log_resp)
            log_resp, ll_new = self._e_step(Z, weights, means, covs)
            hist.append(ll_new)
            if ll_new - ll < self.tol:
                ll = ll_new
                break
            ll = ll_new
        self.weights, self.means, self.covs = weights, means, covs
        self.shift, self.scale = shift, scale
        self._prec_chol = self._inv_chols(covs)
        self.loglik_history = hist
        log.debug("GMM prior: K=%d, %d points, %d EM iterations, loglik/point %.3f",
                  K, M, len(hist), ll)
        return self

    @staticmethod
    def _init_resp(Z, K, rng):
        """k-means++ seeding, then a hard assignment to the nearest seed."""
        M = Z.shape[0]
        centers = [Z[rng.integers(M)]]
        d2 = np.sum((Z - centers[0]) ** 2, axis=1)
        for _ in range(1, K):
            p = d2 / d2.sum() if d2.sum() > 0 else None
            centers.append(Z[rng.choice(M, p=p)])
            d2 = np.minimum(d2, np.sum((Z - centers[-1]) ** 2, axis=1))
        C = np.stack(centers)
        dist = (Z ** 2).sum(1)[:, None] - 2 * Z @ C.T + (C ** 2).sum(1)[None, :]
        log_resp = np.full((M, K), -np.inf)
        log_resp[np.arange(M), np.argmin(dist, axis=1)] = 0.0
        return log_resp

    def _m_step(self, Z, log_resp):
        M, D = Z.shape
        R = np.exp(log_resp)
        Nk = R.sum(axis=0) + 1e-10
        weights = Nk / Nk.sum()
        means = (R.T @ Z) / Nk[:, None]
        covs = np.empty((len(Nk), D, D))
        for j in range(len(Nk)):
            Zw = Z - means[j]
            Zw *= np.sqrt(R[:, j])[:, None]
            covs[j] = (Zw.T @ Zw) / Nk[j]
            covs[j] = 0.5 * (covs[j] + covs[j].T)
            covs[j][np.diag_indices(D)] += self.reg
        return weights, means, covs

    def _inv_chols(self, covs):
        """Inverse Cholesky factors Lk⁻¹ and log-determinants of the component covariances."""
        out = []
        for S in covs:
            try:
                L = np.linalg.cholesky(S)
            except np.linalg.LinAlgError:
                S = S + (1e-6 + self.reg) * np.eye(len(S))
                L = np.linalg.cholesky(S)
            out.append((np.linalg.inv(L), 2.0 * np.sum(np.log(np.diag(L)))))
        return out

    def _log_joint(self, Z, weights, means, prec_chol):
        """log w_k + log N(z | μ_k, Σ_k), ``(M, K)``."""
        M, D = Z.shape
        out = np.empty((M, len(weights)))
        for j, (Linv, logdet) in enumerate(prec_chol):
            y = Z @ Linv.T
            y -= Linv @ means[j]
            out[:, j] = (math.log(max(weights[j], 1e-300))
                         - 0.5 * (np.einsum("ij,ij->i", y, y) + logdet + D * math.log(2 * math.pi)))
        return out

    def _e_step(self, Z, weights, means, covs):
        lj = self._log_joint(Z, weights, means, self._inv_chols(covs))
        lse = _logsumexp(lj)
        return lj - lse[:, None], float(lse.mean())

    # --- querying
    def eval(self, points: np.ndarray, t: int | None = None
             ) -> tuple[np.ndarray, np.ndarray, float, float]:
        """NIW prior for a query set: the mixture's moments under the averaged posterior.

        Args:
            points: ``(M, D)`` query points (e.g. all [x_t, u_t, x_{t+1}] of one t).
            t: ignored (the mixture is shared by all steps).

        Returns:
            ``μ0 (D,)``, ``Φ (D, D)``, ``m``, ``n0``.
        """
        if not self.fitted:
            raise RuntimeError("GMMPrior.eval called before update/fit")
        P = np.asarray(points, dtype=np.float64)
        if P.shape[0] > self.max_query_points:
            P = P[np.linspace(0, P.shape[0] - 1, self.max_query_points).astype(int)]
        Z = (P - self.shift) / self.scale
        lj = self._log_joint(Z, self.weights, self.means, self._prec_chol)
        post = np.exp(lj - _logsumexp(lj)[:, None]).mean(axis=0)       # (K,)
        mu = post @ self.means
        dm = self.means - mu
        S = np.einsum("k,kij->ij", post, self.covs) + np.einsum("k,ki,kj->ij", post, dm, dm)
        mu0 = self.shift + self.scale * mu
        Sigma = S * self.scale[:, None] * self.scale[None, :]
        s = float(self.strength)
        return mu0, s * 0.5 * (Sigma + Sigma.T), s, s


class SlidingWindowPrior:
    """One Gaussian per step, over the transition points of the steps t−w … t+w.

    A simpler alternative to :class:`GMMPrior`: the prior for step t is the pooled
    Gaussian of its neighbouring steps (each step weighted equally), as a NIW prior with
    m = n0 = ``strength`` and Φ = ``strength`` · Σ_window.

    Args:
        window: half-width w of the window.
        strength: pseudo-count of the prior.
        max_points_per_step: per-step subsample used to estimate the moments.
    """

    def __init__(self, window: int = 2, strength: float = 1.0, max_points_per_step: int = 1024):
        if window < 0:
            raise ValueError(f"Invalid window: {window} (must be ≥ 0)")
        if strength < 0:
            raise ValueError(f"Invalid strength: {strength} (must be ≥ 0)")
        if max_points_per_step < 2:
            raise ValueError(f"Invalid max_points_per_step: {max_points_per_step}")
        self.window, self.strength = window, strength
        self.max_points_per_step = max_points_per_step
        self.means = self.covs = None

    def update(self, X: np.ndarray, U: np.ndarray, rng: np.random.Generator,
               transitions: bool = True) -> "SlidingWindowPrior":
        """Per-step moments of the points the fit will condition.

        Args:
            X: ``(N, T[+1], dX)``; U: ``(N, T, dU)``.
            transitions: points [x_t, u_t, x_{t+1}] (a dynamics prior, default) or
                [x_t, u_t] (a prior for a policy fit, :func:`fit_linear_gaussian_policy`).
        """
        if transitions:
            X, U, _ = _check_XU(X, U)
            n_steps = X.shape[1] - 1
        else:
            X, U = np.asarray(X, dtype=np.float64), np.asarray(U, dtype=np.float64)
            n_steps = U.shape[1]
        N = X.shape[0]
        D = (2 if transitions else 1) * X.shape[2] + U.shape[2]
        self.means = np.empty((n_steps, D))
        self.covs = np.empty((n_steps, D, D))
        for t in range(n_steps):
            n = np.arange(N) if N <= self.max_points_per_step else \
                rng.choice(N, size=self.max_points_per_step, replace=False)
            parts = [X[n, t], U[n, t]] + ([X[n, t + 1]] if transitions else [])
            self.means[t], self.covs[t] = _mean_cov(np.concatenate(parts, axis=1))
        return self

    def eval(self, points: np.ndarray, t: int | None = None
             ) -> tuple[np.ndarray, np.ndarray, float, float]:
        """NIW prior for step ``t`` (``points`` unused)."""
        if self.means is None:
            raise RuntimeError("SlidingWindowPrior.eval called before update")
        if t is None:
            raise ValueError("SlidingWindowPrior needs the time step t")
        lo, hi = max(0, t - self.window), min(len(self.means), t + self.window + 1)
        mus, covs = self.means[lo:hi], self.covs[lo:hi]
        mu0 = mus.mean(axis=0)
        dm = mus - mu0
        S = covs.mean(axis=0) + dm.T @ dm / len(mus)
        s = float(self.strength)
        return mu0, s * S, s, s


def _logsumexp(a: np.ndarray) -> np.ndarray:
    m = np.max(a, axis=1)
    m = np.where(np.isfinite(m), m, 0.0)
    return m + np.log(np.sum(np.exp(a - m[:, None]), axis=1))


# ---------------------------------------------------------------------------- dynamics
KnownRows = str | Sequence[tuple]


def _known_rows(spec: KnownRows | None, dX: int, dU: int) -> list[tuple[int, np.ndarray, float]]:
    if spec is None:
        return []
    if isinstance(spec, str):
        if spec != "increment":
            raise ValueError(f"Unknown known_rows spec: {spec!r} (use 'increment' or a list)")
        # D3: the iterate coordinate i (state index i < dU) moves by the action: x' = x + u
        rows = []
        for i in range(dU):
            a = np.zeros(dX + dU)
            a[i], a[dX + i] = 1.0, 1.0
            rows.append((i, a, 0.0))
        return rows
    rows = []
    for item in spec:
        row, coef = int(item[0]), np.asarray(item[1], dtype=np.float64)
        off = float(item[2]) if len(item) > 2 else 0.0
        if not 0 <= row < dX or coef.shape != (dX + dU,):
            raise ValueError(f"known row {row} needs 0 ≤ row < {dX} and {dX + dU} coefficients")
        rows.append((row, coef, off))
    return rows


def fit_dynamics(X: np.ndarray, U: np.ndarray, prior: NIWPrior | None = None,
                 regularization: float = 1e-6, known_rows: KnownRows | None = None, *,
                 relative_regularization: bool = False, initial_state_var: float = 1e-6
                 ) -> LinearGaussianDynamics:
    """Linear-Gaussian dynamics of one group by conditioning a per-step joint Gaussian.

    For each transition t, the points y = [x_t, u_t, x_{t+1}] (pooled over the ``N``
    trajectory-coordinates) give an empirical mean μ̂ and covariance Σ̂. With a prior
    (μ0, Φ, m, n0) from ``prior.eval(points, t)`` the covariance becomes the NIW MAP

        Σ = (N Σ̂ + Φ + N m / (N + m) (μ̂ − μ0)(μ̂ − μ0)ᵀ) / (N + n0);

    ``regularization`` is then added to the diagonal of its (x, u) block, and conditioning
    on (x_t, u_t) gives

        Fm_t = [A_t B_t] = Σ_{x'z} Σ_{zz}⁻¹,  fv_t = μ̂_{x'} − Fm_t μ̂_z,
        F_t = Σ_{x'x'} − Fm_t Σ_{zz} Fm_tᵀ.

    Known rows (D3) replace rows of the fit exactly afterwards: the row's coefficients and
    offset are set, and its noise variance and covariances with other rows are zero (an
    exact row has no residual).

    Args:
        X: states ``(N, T, dX)``, or ``(N, T+1, dX)`` when the state after the last action
            is recorded; with T states the last transition is unknown and entry ``T-1`` of
            the result is zeros (never used by the LQG passes).
        U: actions ``(N, T, dU)``.
        prior: an object with ``eval(points, t) -> (μ0, Φ, m, n0)``, e.g. a fitted
            :class:`GMMPrior` or :class:`SlidingWindowPrior`; ``None`` = plain ML fit.
        regularization: ridge on the (x, u) block of Σ (GPS: 1e-6; LTO-CMA: 1e-3). It is in
            *absolute* units unless ``relative_regularization``.
        known_rows: ``None``; ``"increment"`` for x'_i = x_i + u_i, i < dU (our D3: the
            iterate coordinate is state index 0); or a sequence of
            ``(row, coefficients (dX+dU,), offset)``.
        relative_regularization: add ``regularization`` × each variance instead, i.e. a
            ridge in correlation units; use it when variables have very different scales
            (iterates ~1e-2, steps ~1e-3, relative objective changes ~1e-1).
        initial_state_var: floor added to the diagonal of the covariance of x_0.

    Returns:
        :class:`~l2o.lqg.LinearGaussianDynamics` with ``T = U.shape[1]``.
    """
    X, U, T = _check_XU(X, U)
    N, dX, dU = X.shape[0], X.shape[2], U.shape[2]
    n = dX + dU
    n_trans = X.shape[1] - 1
    Fm_fit, fv_fit, W_fit = _fit_conditional(
        lambda t: np.concatenate([X[:, t], U[:, t], X[:, t + 1]], axis=1), n_trans, n, N,
        prior, regularization, relative_regularization)
    Fm = np.zeros((T, dX, n))
    fv = np.zeros((T, dX))
    W = np.zeros((T, dX, dX))
    Fm[:n_trans], fv[:n_trans], W[:n_trans] = Fm_fit, fv_fit, W_fit
    for row, coef, off in _known_rows(known_rows, dX, dU):
        Fm[:n_trans, row] = coef
        fv[:n_trans, row] = off
        W[:n_trans, row, :] = 0.0
        W[:n_trans, :, row] = 0.0
    x0mu, x0sigma = _mean_cov(X[:, 0])
    x0sigma[np.diag_indices(dX)] += initial_state_var
    return LinearGaussianDynamics(Fm, fv, W, x0mu, x0sigma)


# ------------------------------------------------------------------------- π̃ and c̃
def fit_linear_gaussian_policy(X: np.ndarray, U_pi: np.ndarray, prior: NIWPrior | None = None,
                               regularization: float = 1e-6, pi_cov=0.0, *,
                               relative_regularization: bool = False, min_var: float = 1e-20
                               ) -> LinearGaussianPolicy:
    """Linear-Gaussian fit π̃(u|x, t) of a policy's mean actions (paper footnote 2).

    Per step, the joint Gaussian of [x_t, μ^π_t] (pooled, optional NIW prior from
    ``prior.eval(points, t)``, ``regularization`` on the x block) is conditioned on x_t:

        K_t = Σ_{ux} Σ_{xx}⁻¹,  k_t = μ̂_u − K_t μ̂_x,
        S_t = Σ_{uu} − K_t Σ_{xx} K_tᵀ + Σ^π,

    i.e. the covariance is the residual covariance of the regression plus π's own Σ^π
    (GPS's ``pol_S``). Used also to fit ψ0 to a teacher's actions (D7).

    Args:
        X: states ``(N, T, dX)`` (any extra state at T is ignored).
        U_pi: π's mean actions at those states ``(N, T, dU)``.
        prior: optional NIW prior over [x, u] points.
        regularization: ridge on the x block (absolute units unless
            ``relative_regularization``).
        pi_cov: Σ^π, a scalar (× I), ``(dU, dU)`` or ``(T, dU, dU)``.
        relative_regularization: ridge relative to each state variance.
        min_var: eigenvalue floor on S_t (keeps a noiseless fit positive definite).

    Returns:
        π̃ as a :class:`~l2o.lqg.LinearGaussianPolicy`.
    """
    U_pi = np.asarray(U_pi, dtype=np.float64)
    if U_pi.ndim != 3:
        raise ValueError(f"U_pi must be (N, T, dU), got {U_pi.shape}")
    N, T, dU = U_pi.shape
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 3 or X.shape[0] != N or X.shape[1] < T:
        raise ValueError(f"X {X.shape} does not match U_pi {U_pi.shape}")
    dX = X.shape[2]
    K, k, S = _fit_conditional(lambda t: np.concatenate([X[:, t], U_pi[:, t]], axis=1), T,
                               dX, N, prior, regularization, relative_regularization)
    pc = np.asarray(pi_cov, dtype=np.float64)
    if pc.ndim == 0:
        pc = pc * np.eye(dU)
    S = S + np.broadcast_to(pc, (T, dU, dU))
    return LinearGaussianPolicy(K, k, _floor_cov(S, min_var))


def fit_cost_gradient_matching(X: np.ndarray, grad_x: np.ndarray, ridge: float = 1e-6,
                               dU: int = 1, x_index: int = 0, window: int = 0,
                               relative_ridge: bool = False,
                               features: Sequence[int] | None = None) -> QuadraticCost:
    """Quadratic cost c̃ whose x-derivative matches the true gradient (book/design.md, D6).

    The paper fits "local quadratic approximations to c(s_t)" without saying how; under
    within-group tying an averaged Taylor expansion (GPS) would average per-coordinate
    gradients of random sign to about zero. Our choice: per step, a ridge regression,
    pooled over the group's coordinates and trajectories, of the full-batch gradient
    ∂f/∂x_j(x_t) on the coordinate's state s_t^j,

        (r_t, b_t) = argmin_{r, b} mean_n (g_n − rᵀ s_n − b)² + ridge ‖r‖²,

    and the symmetric quadratic over z = [s; u] with C_t[x, :dX] = C_t[:dX, x] = r_t
    (so C_t[x, x] = r_t[x]), c_t[x] = b_t, zero elsewhere. Then ∂c̃/∂x_j = r_tᵀ s + b_t
    and the curvature along x_j is r_t[x]. Actions carry no direct cost; the state-feature
    entries C[x, i] = r_i make c̃ depend on the features only through the product with x_j.
    The constant h_t is unidentified by gradients and left at 0.

    Args:
        X: states ``(N, T, dX)`` with the iterate coordinate x_j at index ``x_index``.
        grad_x: ∂f/∂x_j at those states, ``(N, T)`` or ``(N, T, 1)``.
        ridge: ridge on r (absolute units of the states, or × each state variance with
            ``relative_ridge``).
        dU: action dimension of the returned cost.
        x_index: state index of the iterate coordinate.
        window: pool the points of steps t−window … t+window into step t's regression
            (0: each step alone). Per-step fits with ~76 regressors overfit the noisy
            gradients; pooling over neighbouring steps trades a little time resolution
            for a fit that predicts held-out gradients.
        relative_ridge: ridge in correlation units (the states' scales differ by orders).
        features: state indices the regression may use (default: all). The iterate
            coordinate is always included.

    Returns:
        :class:`~l2o.lqg.QuadraticCost` with ``C (T, dX+dU, dX+dU)``, ``c (T, dX+dU)``.
    """
    X = np.asarray(X, dtype=np.float64)
    g = np.asarray(grad_x, dtype=np.float64)
    if g.ndim == 3:
        g = g[..., 0]
    N, T = g.shape
    if X.ndim != 3 or X.shape[0] != N or X.shape[1] < T:
        raise ValueError(f"X {X.shape} does not match grad_x {g.shape}")
    dX = X.shape[2]
    if window < 0:
        raise ValueError(f"Invalid window: {window} (must be ≥ 0)")
    cols = np.arange(dX) if features is None else np.union1d([x_index], np.asarray(features, int))
    if cols.min() < 0 or cols.max() >= dX:
        raise ValueError(f"features must be state indices in [0, {dX})")
    d = len(cols)
    # per-step moments of [s, g], pooled over a window of steps below
    mus = np.empty((T, d + 1))
    Ss = np.empty((T, d + 1, d + 1))
    for t in range(T):
        mus[t], Ss[t] = _mean_cov(np.concatenate([X[:, t][:, cols], g[:, t, None]], axis=1))
    r = np.zeros((T, dX))
    b = np.empty(T)
    for t in range(T):
        lo, hi = max(0, t - window), min(T, t + window + 1)
        mu = mus[lo:hi].mean(axis=0)
        dm = mus[lo:hi] - mu
        S = Ss[lo:hi].mean(axis=0) + dm.T @ dm / (hi - lo)
        Sxx = np.array(S[:d, :d])
        if relative_ridge:
            Sxx[np.diag_indices(d)] += ridge * np.maximum(np.diag(Sxx), 1e-300)
        else:
            Sxx[np.diag_indices(d)] += ridge
        r[t, cols] = np.linalg.solve(Sxx, S[:d, d])
        b[t] = mu[d] - r[t, cols] @ mu[:d]
    n = dX + dU
    C = np.zeros((T, n, n))
    c = np.zeros((T, n))
    C[:, x_index, :dX] = r
    C[:, :dX, x_index] = r
    c[:, x_index] = b
    return QuadraticCost(C, c)


def fit_state_projection(X: np.ndarray, hidden: Sequence[int] = (0,), window: int = 3,
                         ridge: float = 1e-3) -> StateProjection:
    """Best affine prediction of hidden state entries from the visible ones, per step.

    For each step t, a ridge regression pooled over the ``N`` samples of steps
    t−window … t+window gives x_h ≈ a_tᵀ x_v + b_t for each hidden entry h (visible
    entries v). The result maps a state to the state a law that cannot read the hidden
    entries acts on (:class:`~l2o.lqg.StateProjection`).

    Args:
        X: states ``(N, T, dX)``.
        hidden: entries the law may not read (default: the iterate coordinate, index 0).
        window: half-width of the pooling window, in steps.
        ridge: ridge in correlation units (× each visible variance).

    Returns:
        :class:`~l2o.lqg.StateProjection` with ``T = X.shape[1]``.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 3:
        raise ValueError(f"X must be (N, T, dX), got {X.shape}")
    N, T, dX = X.shape
    hidden = sorted(set(int(h) for h in hidden))
    vis = np.setdiff1d(np.arange(dX), hidden)
    mus = np.empty((T, dX))
    Ss = np.empty((T, dX, dX))
    for t in range(T):
        mus[t], Ss[t] = _mean_cov(X[:, t])
    P = np.broadcast_to(np.eye(dX), (T, dX, dX)).copy()
    p = np.zeros((T, dX))
    for t in range(T):
        lo, hi = max(0, t - window), min(T, t + window + 1)
        mu = mus[lo:hi].mean(axis=0)
        dm = mus[lo:hi] - mu
        S = Ss[lo:hi].mean(axis=0) + dm.T @ dm / (hi - lo)
        Svv = S[np.ix_(vis, vis)]
        Svv[np.diag_indices(len(vis))] += ridge * np.maximum(np.diag(Svv), 1e-300) + 1e-300
        A = np.linalg.solve(Svv, S[np.ix_(vis, hidden)])            # (|v|, |h|)
        for j, h in enumerate(hidden):
            P[t, h, :] = 0.0
            P[t, h, vis] = A[:, j]
            p[t, h] = mu[h] - A[:, j] @ mu[vis]
    return StateProjection(P, p, tuple(hidden))


def pad_hidden(policy: LinearGaussianPolicy, hidden: Sequence[int], dX: int
               ) -> LinearGaussianPolicy:
    """A policy fitted on the visible state entries, as a policy on the full state.

    The gains on the ``hidden`` entries are zero: the law does not read them.
    """
    vis = np.setdiff1d(np.arange(dX), list(hidden))
    K = np.zeros((policy.T, policy.dU, dX))
    K[:, :, vis] = policy.K
    return LinearGaussianPolicy(K, policy.k, policy.cov)
