"""Bregman ADMM numerics between ψ and π, per coordinate group (paper §3.4;
book/03_gps; book/design.md).

The LQG side (the η-step) lives in :mod:`l2o.lqg`. This module holds the other pieces of
one BADMM round, all float64 numpy on one group's pooled samples ``X: (N, T, dX)``:

- :func:`pi_targets`: regression targets and weights of the θ-step;
- :func:`normalize_weights`, :func:`closed_form_pi_cov`: GPS's weight normalisation and
  the closed-form Σ^π;
- :func:`dual_update_lambda`, :func:`update_nu`: the dual steps on λ_t and ν_t;
- :func:`kl_pi_psi_per_t`: E_ψ[KL(π‖ψ)] per step, which drives the ν update;
- :func:`step_adjust`: the trust-region size from predicted vs. actual improvement.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from l2o.lqg import LinearGaussianPolicy

log = logging.getLogger(__name__)

__all__ = [
    "PiTargets",
    "pi_targets",
    "normalize_weights",
    "closed_form_pi_cov",
    "dual_update_lambda",
    "update_nu",
    "kl_pi_psi_per_t",
    "kl_psi_pi_per_t",
    "step_adjust",
]


def _states(policy: LinearGaussianPolicy, X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 3 or X.shape[1] < policy.T or X.shape[2] != policy.dX:
        raise ValueError(f"X must be (N, ≥{policy.T}, {policy.dX}), got {X.shape}")
    return X[:, : policy.T]


class PiTargets(NamedTuple):
    """Targets of the θ-step (see :func:`pi_targets`).

    Attributes:
        mean: target means ``(N, T, dU)``.
        precision: G_t⁻¹ ``(T, dU, dU)``.
        weight: ν_t ``(T,)``; the loss weight matrix at step t is ``weight[t] * precision[t]``.
    """

    mean: np.ndarray
    precision: np.ndarray
    weight: np.ndarray


def pi_targets(policy: LinearGaussianPolicy, X: np.ndarray, lam: np.ndarray | None,
               nu: np.ndarray | float) -> PiTargets:
    """Targets of the θ-step by completing the square (paper §3.4, last display).

    The θ-objective's terms in μ^π at state x_t are
    λ_tᵀμ + ν_t/2 (μ − m_t)ᵀ G_t⁻¹ (μ − m_t) with m_t = K_t x_t + k_t, which equals,
    up to a constant, ν_t/2 (μ − y_t)ᵀ G_t⁻¹ (μ − y_t) with the target

        y_t = K_t x_t + k_t − G_t λ_t / ν_t.

    The θ-step is therefore a weighted regression of μ^π onto y with weight matrix
    ν_t G_t⁻¹ (GPS: precision G_t⁻¹, weight ν_t).

    Args:
        policy: ψ (``K (T, dU, dX)``, ``k (T, dU)``, ``cov (T, dU, dU)``).
        X: states along ψ's samples ``(N, T, dX)``.
        lam: λ_t ``(T, dU)`` (``None`` = 0).
        nu: ν_t ``(T,)`` or scalar, > 0 where λ_t ≠ 0.

    Returns:
        :class:`PiTargets` ``(mean (N, T, dU), precision (T, dU, dU), weight (T,))``.
    """
    X = _states(policy, X)
    T, dU = policy.T, policy.dU
    nu = np.broadcast_to(np.asarray(nu, dtype=np.float64), (T,)).copy()
    mean = policy.mean(X)
    if lam is not None:
        lam = np.asarray(lam, dtype=np.float64).reshape(T, dU)
        active = np.any(lam != 0, axis=1)
        if np.any(nu[active] <= 0):
            raise ValueError("nu_t must be > 0 where lambda_t != 0")
        shift = np.zeros((T, dU))
        shift[active] = np.einsum("tuv,tv->tu", policy.cov[active], lam[active]) / nu[active, None]
        mean = mean - shift
    return PiTargets(mean, np.array(policy.inv_cov), nu)


def normalize_weights(weights: np.ndarray, threshold: float = 1e-2) -> np.ndarray:
    """GPS's normalisation of the θ-step sample weights (``policy_opt`` update).

    Rescale so the weights average 1, clip at twice the median of the weights above
    ``threshold``, then divide by that median. Works on any shape (``(T,)`` per step,
    ``(N, T)`` per sample: equal weights over n give the same result).

    Args:
        weights: non-negative weights, any shape.
        threshold: weights at or below it are ignored when taking the median.

    Returns:
        Normalised weights, same shape.
    """
    w = np.asarray(weights, dtype=np.float64)
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite and ≥ 0")
    total = w.sum()
    if total <= 0:
        return np.ones_like(w)
    w = w * (w.size / total)
    above = w[w > threshold]
    med = float(np.median(above)) if above.size else 1.0
    return np.clip(w, 0.0, 2.0 * med) / med


def closed_form_pi_cov(policy: LinearGaussianPolicy, nu: np.ndarray | float,
                       variant: str = "weighted", ent_reg: float = 0.0) -> np.ndarray:
    """Σ^π minimising the θ-objective's covariance terms, in closed form.

    ``"weighted"`` (default; derived in book/03_gps): minimising Σ_t ν_t/2 (tr(G_t⁻¹Σ) − log|Σ|)
    gives the inverse of the ν-weighted mean precision,

        Σ^π = (Σ_t ν_t G_t⁻¹ / Σ_t ν_t)⁻¹.

    ``"gps"``: GPS's variant (``policy_opt`` update): the unweighted sum of precisions
    divided by the sum of the *normalised* weights (:func:`normalize_weights` of ν), plus
    an entropy regulariser, keeping only the diagonal:
    Σ^π = diag(1 / diag((Σ_t G_t⁻¹ + 2T·ent_reg) / Σ_t ŵ_t)). The two agree when ν is
    constant over t (and ent_reg = 0).

    Args:
        policy: ψ.
        nu: ν_t ``(T,)`` or scalar.
        variant: ``"weighted"`` or ``"gps"``.
        ent_reg: GPS's ``ent_reg`` (only for ``"gps"``).

    Returns:
        Σ^π ``(dU, dU)``.
    """
    T = policy.T
    nu = np.broadcast_to(np.asarray(nu, dtype=np.float64), (T,))
    P = policy.inv_cov
    if variant == "weighted":
        wsum = nu.sum()
        w = nu / wsum if wsum > 0 else np.full(T, 1.0 / T)
        A = np.einsum("t,tuv->uv", w, P)
        cov = np.linalg.inv(A)
        return 0.5 * (cov + cov.T)
    if variant == "gps":
        A = (P.sum(axis=0) + 2 * T * ent_reg) / normalize_weights(nu).sum()
        return np.diag(1.0 / np.diag(A))
    raise ValueError(f"Unknown variant: {variant!r} (use 'weighted' or 'gps')")


def dual_update_lambda(lam: np.ndarray, nu: np.ndarray | float, policy: LinearGaussianPolicy,
                       X: np.ndarray, U_pi_mean: np.ndarray, alpha: float = 0.1,
                       precondition: bool = True) -> np.ndarray:
    """Dual step on λ_t, driving the mean actions of ψ and π together.

    Paper §3.4: λ_t ← λ_t + α ν_t (E_ψ[E_π[u_t|x_t]] − E_ψ[u_t]). With
    ``precondition=True`` (default, GPS's ``_policy_dual_step``) the gap is multiplied by
    G_t⁻¹:

        λ_t ← λ_t + α ν_t G_t⁻¹ mean_n(μ^π(x_n,t) − (K_t x_n,t + k_t)),

    which gives λ the units of the cost per unit action (as the −λᵀu term requires) and
    is what the GPS reference code does. Sign: λ enters ψ's cost as −λᵀu, so a positive
    gap (π above ψ) pushes ψ's mean up and π's target (:func:`pi_targets`) down.

    Args:
        lam: λ_t ``(T, dU)``.
        nu: ν_t ``(T,)`` or scalar.
        policy: ψ.
        X: states along ψ's samples ``(N, T, dX)``.
        U_pi_mean: π's mean actions at those states ``(N, T, dU)``.
        alpha: step size α (GPS ``policy_dual_rate``: 0.1).
        precondition: multiply by G_t⁻¹ (GPS) or not (paper's formula).

    Returns:
        The new λ ``(T, dU)``.
    """
    X = _states(policy, X)
    T, dU = policy.T, policy.dU
    lam = np.asarray(lam, dtype=np.float64).reshape(T, dU)
    nu = np.broadcast_to(np.asarray(nu, dtype=np.float64), (T,))
    U_pi_mean = np.asarray(U_pi_mean, dtype=np.float64)[:, :T]
    gap = (U_pi_mean - policy.mean(X)).mean(axis=0)                 # (T, dU)
    if precondition:
        gap = np.einsum("tuv,tv->tu", policy.inv_cov, gap)
    return lam + alpha * nu[:, None] * gap


def update_nu(nu: np.ndarray, kl_t: np.ndarray, mode: int = 3, *, lower: float = 1.0,
              upper: float = 0.5, decrease: float = 0.5, increase: float = 2.0,
              lg_step: float = 10.0, kl_prev: np.ndarray | None = None, min_nu: float = 0.0,
              max_nu: float = np.inf) -> np.ndarray:
    """Update the BADMM weights ν_t from the per-step divergence KL_t = E_ψ[KL(π‖ψ)].

    Modes follow GPS's ``fixed_lg_step``:

    - 0: ν_t ← max(ν_t + lg_step · KL_t, 0) (a dual-ascent step);
    - 1: ν_t ← max(ν_t + lg_step, 0);
    - 2: ν_t × ``decrease`` if KL_t / KL_t^prev < 0.8, × ``increase`` if ≥ 0.95;
    - 3 (default; every GPS BADMM example): with m, s the mean and standard deviation of
      KL over t, ν_t × ``decrease`` if KL_t < m − ``lower``·s, × ``increase`` if
      KL_t ≥ m + ``upper``·s. It moves weight to the steps where π and ψ disagree most.

    Args:
        nu: ν_t ``(T,)``.
        kl_t: KL_t ``(T,)``.
        mode: 0, 1, 2 or 3.
        lower, upper: thresholds of mode 3 in standard deviations (GPS: 1.0, 0.5;
            LTO-CMA: 2, 2).
        decrease, increase: factors of modes 2 and 3 (GPS: 0.5, 2).
        lg_step: step of modes 0 and 1.
        kl_prev: previous KL_t (mode 2).
        min_nu, max_nu: clip the result.

    Returns:
        The new ν ``(T,)``.
    """
    nu = np.array(nu, dtype=np.float64)
    kl = np.asarray(kl_t, dtype=np.float64)
    if kl.shape != nu.shape:
        raise ValueError(f"kl_t {kl.shape} and nu {nu.shape} must have the same shape")
    if mode == 0:
        nu = np.maximum(nu + lg_step * kl, 0.0)
    elif mode == 1:
        nu = np.maximum(nu + lg_step, 0.0)
    elif mode == 2:
        if kl_prev is not None:
            ratio = kl / np.maximum(np.asarray(kl_prev, dtype=np.float64), 1e-300)
            nu = np.where(ratio < 0.8, nu * decrease, np.where(ratio >= 0.95, nu * increase, nu))
    elif mode == 3:
        m, s = kl.mean(), kl.std()
        nu = np.where(kl < m - lower * s, nu * decrease,
                      np.where(kl >= m + upper * s, nu * increase, nu))
    else:
        raise ValueError(f"Unknown nu update mode: {mode} (use 0, 1, 2 or 3)")
    return np.clip(nu, min_nu, max_nu)


def kl_pi_psi_per_t(pi: LinearGaussianPolicy, psi: LinearGaussianPolicy, X: np.ndarray,
                    pi_mean: np.ndarray | None = None) -> np.ndarray:
    """Sample estimate of E_ψ[KL(π(·|x_t) ‖ ψ(·|x_t))] per step.

    For Gaussians with means m^π, m^ψ and covariances S^π, G (P = G⁻¹):

        KL = ½ [tr(P S^π) − dU + log|G| − log|S^π| + (m^ψ − m^π)ᵀ P (m^ψ − m^π)],

    averaged over the sampled states x_n,t of ψ.

    Args:
        pi: π̃ (its covariance S^π is used; its mean too unless ``pi_mean`` is given).
        psi: ψ.
        X: states along ψ's samples ``(N, T, dX)``.
        pi_mean: optional π means at those states ``(N, T, dU)`` (e.g. the network's own
            outputs instead of the linearisation's).

    Returns:
        ``(T,)`` estimates.
    """
    X = _states(psi, X)
    T, dU = psi.T, psi.dU
    m_pi = pi.mean(X) if pi_mean is None else np.asarray(pi_mean, dtype=np.float64)[:, :T]
    d = psi.mean(X) - m_pi                                          # (N, T, dU)
    P = psi.inv_cov
    maha = np.einsum("ntu,tuv,ntv->t", d, P, d) / X.shape[0]
    tr = np.einsum("tuv,tvu->t", P, pi.cov)
    ld_psi = 2.0 * np.sum(np.log(np.diagonal(psi.chol, axis1=1, axis2=2)), axis=1)
    ld_pi = 2.0 * np.sum(np.log(np.diagonal(pi.chol, axis1=1, axis2=2)), axis=1)
    return np.maximum(0.5 * (tr - dU + ld_psi - ld_pi + maha), 0.0)


def kl_psi_pi_per_t(psi: LinearGaussianPolicy, pi_mean: np.ndarray, pi_cov, X: np.ndarray
                    ) -> np.ndarray:
    """Sample estimate of E_ψ[KL(ψ(·|x_t) ‖ π(·|o_t))] per step, with π's own means.

    π is the Gaussian N(μ^π(o_{≤t}), Σ^π) of the network (not its linearisation π̃):
    with m^ψ = K_t x + k_t, G = G_t and P^π = (Σ^π)⁻¹,

        KL = ½ [tr(P^π G) − dU + log|Σ^π| − log|G| + (m^ψ − μ^π)ᵀ P^π (m^ψ − μ^π)],

    averaged over ψ's sampled states. This is the divergence the reference's ν update
    and step adjustment read.

    Args:
        psi: ψ.
        pi_mean: π's mean actions at the sampled states ``(N, T, dU)``.
        pi_cov: Σ^π, a scalar (× I), ``(dU, dU)`` or ``(T, dU, dU)``.
        X: states along ψ's samples ``(N, T, dX)``.

    Returns:
        ``(T,)`` estimates.
    """
    X = _states(psi, X)
    T, dU = psi.T, psi.dU
    S = np.asarray(pi_cov, dtype=np.float64)
    S = np.broadcast_to(S * np.eye(dU) if S.ndim == 0 else S, (T, dU, dU))
    P = np.linalg.inv(S)
    d = psi.mean(X) - np.asarray(pi_mean, dtype=np.float64)[:, :T]
    maha = np.einsum("ntu,tuv,ntv->t", d, P, d) / X.shape[0]
    tr = np.einsum("tuv,tvu->t", P, psi.cov)
    ld_pi = np.linalg.slogdet(S)[1]
    ld_psi = 2.0 * np.sum(np.log(np.diagonal(psi.chol, axis1=1, axis2=2)), axis=1)
    return np.maximum(0.5 * (tr - dU + ld_pi - ld_psi + maha), 0.0)


def step_adjust(prev_pred: float, new_pred: float, new_actual: float, step_mult: float, *,
                min_mult: float = 0.01, max_mult: float = 10.0, min_factor: float = 0.1,
                max_factor: float = 5.0, min_gap: float = 1e-4) -> float:
    """New trust-region multiplier from predicted vs. actual improvement (GPS ``_set_new_mult``).

    With predicted = prev_pred − new_pred (the LQG-predicted cost of the previous ψ minus
    that of the new ψ, both under the previous local models) and actual = prev_pred −
    new_actual (the new ψ under the newly fitted models):

        factor = predicted / (2 max(min_gap, predicted − actual)),  clipped to
        [min_factor, max_factor];  step_mult ← clip(factor · step_mult, min_mult, max_mult).

    A model that predicted well (actual ≈ predicted) grows the step; a model that
    over-promised shrinks it (factor 1/2 when actual = 0).

    Args:
        prev_pred, new_pred, new_actual: the three expected costs (scalars, summed over t).
        step_mult: the current multiplier.
        min_mult, max_mult: bounds on the multiplier (GPS: 0.01, 10).
        min_factor, max_factor: bounds on one change (GPS: 0.1, 5).
        min_gap: floor of the denominator (GPS: 1e-4, in cost units).

    Returns:
        The new multiplier.
    """
    predicted = float(prev_pred) - float(new_pred)
    actual = float(prev_pred) - float(new_actual)
    factor = predicted / (2.0 * max(min_gap, predicted - actual))
    factor = min(max(factor, min_factor), max_factor)
    new = min(max(factor * float(step_mult), min_mult), max_mult)
    log.debug("step adjust: predicted %.4g, actual %.4g, factor %.3g, step_mult %.3g -> %.3g",
              predicted, actual, factor, step_mult, new)
    return new
