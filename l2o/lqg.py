"""LQG under a KL trust region: the ψ update of GPS-BADMM (paper §3.4;
book/03_gps; book/design.md).

Everything here is float64 numpy and acts on **one coordinate group**: a time-varying
linear-Gaussian problem with per-coordinate state ``x ∈ R^dX`` and action ``u ∈ R^dU``
(``dX = 76``, ``dU = 1`` in the paper's setting; the code is written for general ``dU``).
The caller loops over the four groups.

Notation (paper §3.4, symbols used as variable names inside the kernels):

- ψ(u|x, t) = N(K_t x + k_t, G_t): :class:`LinearGaussianPolicy` (``K``, ``k``, ``cov``);
- p̃(x'|x, u, t) = N(A_t x + B_t u + c_t, F_t): :class:`LinearGaussianDynamics` with
  ``Fm = [A B]``, ``fv = c``, ``dyn_covar = F``;
- c̃(z_t) = ½ z_tᵀ C_t z_t + c_tᵀ z_t + h_t over z = [x; u]: :class:`QuadraticCost`.

The pieces compose as in GPS:

1. :func:`augmented_cost` adds the Lagrange term −λ_tᵀu and the Bregman/trust-region KL
   terms to the fitted cost and divides by (η + ν_t);
2. :func:`backward_pass` is the maximum-entropy LQR recursion on that cost;
3. :func:`forward_pass` propagates the state-action Gaussian through p̃;
4. :func:`traj_kl` measures Σ_t E[KL(ψ_new ‖ ψ_old)] on the new trajectory distribution;
5. :func:`solve_kl_constrained` runs dual gradient descent on η around 2–4.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "NotPositiveDefiniteError",
    "LinearGaussianPolicy",
    "LinearGaussianDynamics",
    "QuadraticCost",
    "StateProjection",
    "kl_quadratic",
    "augmented_cost",
    "backward_pass",
    "forward_pass",
    "traj_kl",
    "expected_cost",
    "solve_kl_constrained",
]


class NotPositiveDefiniteError(np.linalg.LinAlgError):
    """Q_uu was not positive definite at time step ``t`` of the backward pass.

    This is an *expected* event in GPS: the augmented cost is not convex in u when η is
    too small relative to negative curvature of the fitted cost. :func:`solve_kl_constrained`
    catches it and raises η.

    Attributes:
        t: the time step whose Cholesky factorisation of Q_uu failed.
        eta: the η in use, if known.
    """

    def __init__(self, t: int, eta: float | None = None, reason: str = "is not positive definite"):
        self.t = int(t)
        self.eta = eta
        msg = f"Q_uu {reason} at t={t}"
        if eta is not None:
            msg += f" (eta={eta:.3g})"
        super().__init__(msg)


def _sym(a: np.ndarray) -> np.ndarray:
    """Symmetric part over the last two axes."""
    return 0.5 * (a + np.swapaxes(a, -1, -2))


def _f64(a, name: str, ndim: int) -> np.ndarray:
    a = np.array(a, dtype=np.float64)  # a private copy: containers are immutable
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values")
    a.setflags(write=False)
    return a


def _floor_cov(cov: np.ndarray, min_var: float) -> np.ndarray:
    """Raise the eigenvalues of each ``(dU, dU)`` block of ``cov`` to at least ``min_var``."""
    if min_var <= 0:
        return cov
    if cov.shape[-1] == 1:
        return np.maximum(cov, min_var)
    w, v = np.linalg.eigh(cov)
    return np.einsum("...ij,...j,...kj->...ik", v, np.maximum(w, min_var), v)


# ------------------------------------------------------------------------- containers
@dataclass(frozen=True, eq=False)
class LinearGaussianPolicy:
    """Time-varying linear-Gaussian policy ψ(u|x, t) = N(K_t x + k_t, G_t).

    Arrays are copied, symmetrised (``cov``) and made read-only; the Cholesky factor and
    inverse of the covariance are cached.

    Args:
        K: gains ``(T, dU, dX)``.
        k: offsets ``(T, dU)``.
        cov: covariances G_t ``(T, dU, dU)``; must be positive definite.

    Attributes:
        chol: lower Cholesky factors of ``cov``, ``(T, dU, dU)``.
        inv_cov: precisions G_t⁻¹, ``(T, dU, dU)``.
    """

    K: np.ndarray
    k: np.ndarray
    cov: np.ndarray
    chol: np.ndarray = field(init=False, repr=False)
    inv_cov: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        K = _f64(self.K, "K", 3)
        T, dU, dX = K.shape
        k = _f64(self.k, "k", 2)
        cov = np.array(self.cov, dtype=np.float64)
        if k.shape != (T, dU):
            raise ValueError(f"k must have shape {(T, dU)}, got {k.shape}")
        if cov.shape != (T, dU, dU):
            raise ValueError(f"cov must have shape {(T, dU, dU)}, got {cov.shape}")
        cov = _f64(_sym(cov), "cov", 3)
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError as e:
            bad = [t for t in range(T) if np.any(np.linalg.eigvalsh(cov[t]) <= 0)]
            raise ValueError(f"policy covariance is not positive definite at t={bad[:5]}") from e
        eye = np.broadcast_to(np.eye(dU), cov.shape)
        inv_cov = _sym(np.linalg.solve(cov, eye))
        for name, val in (("K", K), ("k", k), ("cov", cov), ("chol", chol), ("inv_cov", inv_cov)):
            val.setflags(write=False)
            object.__setattr__(self, name, val)

    @property
    def T(self) -> int:
        return self.K.shape[0]

    @property
    def dU(self) -> int:
        return self.K.shape[1]

    @property
    def dX(self) -> int:
        return self.K.shape[2]

    def mean(self, X: np.ndarray) -> np.ndarray:
        """Mean actions K_t x_t + k_t for states ``X: (..., T, dX)`` → ``(..., T, dU)``."""
        return np.einsum("tux,...tx->...tu", self.K, X) + self.k

    def log_prob(self, X: np.ndarray, U: np.ndarray) -> np.ndarray:
        """log ψ(u_t|x_t, t) for ``X: (..., T, dX)``, ``U: (..., T, dU)`` → ``(..., T)``."""
        d = U - self.mean(X)
        maha = np.einsum("...tu,tuv,...tv->...t", d, self.inv_cov, d)
        logdet = 2.0 * np.sum(np.log(np.diagonal(self.chol, axis1=1, axis2=2)), axis=1)
        return -0.5 * (maha + logdet + self.dU * math.log(2 * math.pi))

    def with_min_var(self, min_var: float) -> "LinearGaussianPolicy":
        """The same policy with every covariance eigenvalue raised to at least ``min_var``."""
        return LinearGaussianPolicy(self.K, self.k, _floor_cov(np.array(self.cov), min_var))


@dataclass(frozen=True, eq=False)
class LinearGaussianDynamics:
    """Fitted dynamics p̃(x_{t+1}|x_t, u_t) = N(A_t x_t + B_t u_t + c_t, F_t) and p(x_0).

    Entry ``T-1`` of ``Fm``, ``fv``, ``dyn_covar`` describes a transition out of the horizon;
    it is never used by :func:`backward_pass` or :func:`forward_pass`.

    Args:
        Fm: ``[A_t B_t]``, ``(T, dX, dX+dU)``.
        fv: ``c_t``, ``(T, dX)``.
        dyn_covar: ``F_t``, ``(T, dX, dX)`` (positive semi-definite).
        x0mu: mean of x_0, ``(dX,)``.
        x0sigma: covariance of x_0, ``(dX, dX)``.
    """

    Fm: np.ndarray
    fv: np.ndarray
    dyn_covar: np.ndarray
    x0mu: np.ndarray
    x0sigma: np.ndarray

    def __post_init__(self):
        Fm = _f64(self.Fm, "Fm", 3)
        T, dX, dXU = Fm.shape
        if dXU <= dX:
            raise ValueError(f"Fm must be (T, dX, dX+dU) with dU ≥ 1, got {Fm.shape}")
        fv = _f64(self.fv, "fv", 2)
        W = _f64(_sym(np.asarray(self.dyn_covar, dtype=np.float64)), "dyn_covar", 3)
        x0mu = _f64(self.x0mu, "x0mu", 1)
        x0sigma = _f64(_sym(np.asarray(self.x0sigma, dtype=np.float64)), "x0sigma", 2)
        for name, val, shape in (("fv", fv, (T, dX)), ("dyn_covar", W, (T, dX, dX)),
                                 ("x0mu", x0mu, (dX,)), ("x0sigma", x0sigma, (dX, dX))):
            if val.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {val.shape}")
        for name, val in (("Fm", Fm), ("fv", fv), ("dyn_covar", W), ("x0mu", x0mu),
                          ("x0sigma", x0sigma)):
            object.__setattr__(self, name, val)

    @property
    def T(self) -> int:
        return self.Fm.shape[0]

    @property
    def dX(self) -> int:
        return self.Fm.shape[1]

    @property
    def dU(self) -> int:
        return self.Fm.shape[2] - self.Fm.shape[1]

    @property
    def A(self) -> np.ndarray:
        """``(T, dX, dX)`` view of Fm."""
        return self.Fm[:, :, : self.dX]

    @property
    def B(self) -> np.ndarray:
        """``(T, dX, dU)`` view of Fm."""
        return self.Fm[:, :, self.dX :]


@dataclass(frozen=True, eq=False)
class QuadraticCost:
    """Per-step quadratic cost ℓ_t(z) = ½ zᵀ C_t z + c_tᵀ z + cc_t over z = [x; u].

    Args:
        C: ``(T, dX+dU, dX+dU)``, symmetrised on construction.
        c: ``(T, dX+dU)``.
        cc: constants ``(T,)``; zeros if omitted (they do not affect the policy).
    """

    C: np.ndarray
    c: np.ndarray
    cc: np.ndarray | None = None

    def __post_init__(self):
        C = _f64(_sym(np.asarray(self.C, dtype=np.float64)), "C", 3)
        T, n, n2 = C.shape
        if n != n2:
            raise ValueError(f"C must be square per step, got {C.shape}")
        c = _f64(self.c, "c", 2)
        if c.shape != (T, n):
            raise ValueError(f"c must have shape {(T, n)}, got {c.shape}")
        cc = _f64(np.zeros(T) if self.cc is None else self.cc, "cc", 1)
        if cc.shape != (T,):
            raise ValueError(f"cc must have shape {(T,)}, got {cc.shape}")
        object.__setattr__(self, "C", C)
        object.__setattr__(self, "c", c)
        object.__setattr__(self, "cc", cc)

    @property
    def T(self) -> int:
        return self.C.shape[0]


# ------------------------------------------------------------------------- KL algebra
@dataclass(frozen=True, eq=False)
class StateProjection:
    """What a restricted control law may read: ``P_t x + p_t`` instead of ``x``.

    π observes only Ψ, not the iterate x_j, so a ψ that π is asked to imitate should not
    feed back on x_j either. The hidden entries are replaced by their best affine
    prediction from the visible ones (:func:`l2o.dynamics.fit_state_projection`): rows of
    ``P_t`` for visible entries are unit rows, a hidden entry's row holds its prediction
    coefficients (zero on the hidden columns), and ``p_t`` holds the prediction offsets.
    Every column of a hidden entry is zero, so any gain ``K P_t`` ignores that entry.

    Args:
        P: ``(T, dX, dX)``.
        p: ``(T, dX)``.
        hidden: indices of the entries the law may not read.
    """

    P: np.ndarray
    p: np.ndarray
    hidden: tuple[int, ...] = (0,)

    def __post_init__(self):
        P = _f64(self.P, "P", 3)
        p = _f64(self.p, "p", 2)
        T, dX, dX2 = P.shape
        if dX != dX2 or p.shape != (T, dX):
            raise ValueError(f"P must be (T, dX, dX) and p (T, dX); got {P.shape}, {p.shape}")
        hidden = tuple(int(i) for i in self.hidden)
        if any(not 0 <= i < dX for i in hidden):
            raise ValueError(f"hidden entries {hidden} out of range for dX={dX}")
        if np.any(P[:, :, list(hidden)] != 0):
            raise ValueError("the columns of hidden entries in P must be zero")
        object.__setattr__(self, "P", P)
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "hidden", hidden)

    @property
    def T(self) -> int:
        return self.P.shape[0]


def kl_quadratic(policy: LinearGaussianPolicy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """−log q(u|x) of a linear-Gaussian q = N(Kx + k, S) as a quadratic in z = [x; u].

    −log q(u|x) = ½ zᵀ M_t z + v_tᵀ z + h_t with (S⁻¹ = P)

        M_t = [[KᵀPK, −KᵀP], [−PK, P]],   v_t = [KᵀPk; −Pk],
        h_t = ½ kᵀPk + ½ log|2πS|.

    ``M`` and ``v`` are GPS's TKLm and TKLv. Since KL(ψ‖q) = E_ψ[−log q] − H(ψ), adding
    ``weight · (M, v)`` to the cost of the ψ update adds ``weight · KL(ψ‖q)`` up to the
    entropy, which the maximum-entropy backward pass supplies.

    Args:
        policy: q, with ``K (T, dU, dX)``, ``k (T, dU)``, ``cov (T, dU, dU)``.

    Returns:
        ``M (T, dX+dU, dX+dU)``, ``v (T, dX+dU)``, ``h (T,)``.
    """
    K, k, P = policy.K, policy.k, policy.inv_cov
    T, dU, dX = K.shape
    PK = P @ K                                   # (T, dU, dX)
    Pk = np.einsum("tuv,tv->tu", P, k)           # (T, dU)
    M = np.empty((T, dX + dU, dX + dU))
    M[:, :dX, :dX] = np.swapaxes(K, 1, 2) @ PK
    M[:, :dX, dX:] = -np.swapaxes(PK, 1, 2)
    M[:, dX:, :dX] = -PK
    M[:, dX:, dX:] = P
    v = np.empty((T, dX + dU))
    v[:, :dX] = np.einsum("tux,tu->tx", K, Pk)
    v[:, dX:] = -Pk
    logdet = 2.0 * np.sum(np.log(np.diagonal(policy.chol, axis1=1, axis2=2)), axis=1)
    h = 0.5 * np.einsum("tu,tu->t", k, Pk) + 0.5 * (logdet + dU * math.log(2 * math.pi))
    return _sym(M), v, h


def _as_nu(nu, T: int) -> np.ndarray:
    if nu is None:
        return np.zeros(T)
    nu = np.broadcast_to(np.asarray(nu, dtype=np.float64), (T,))
    if np.any(nu < 0):
        raise ValueError("Invalid nu: BADMM weights must be ≥ 0")
    return nu


class _AugmentedParts:
    """The η-independent pieces of :func:`augmented_cost`, precomputed once per DGD solve."""

    def __init__(self, cost: QuadraticCost, lam, prev_policy, nu, pi_lin):
        T, n = cost.c.shape
        dU = prev_policy.dU
        self.nu = _as_nu(nu, T)
        # fitted cost with the Lagrange term −λ_tᵀ u (c_u −= λ_t)
        self.C = np.array(cost.C)
        self.c = np.array(cost.c)
        self.cc = np.array(cost.cc)
        if lam is not None:
            lam = np.asarray(lam, dtype=np.float64).reshape(T, dU)
            self.c[:, n - dU :] -= lam
        # ν_t · (−log π̃): the Bregman term of the ψ update
        if np.any(self.nu > 0):
            if pi_lin is None:
                raise ValueError("pi_lin is required when some nu_t > 0")
            Mp, vp, hp = kl_quadratic(pi_lin)
            self.C += self.nu[:, None, None] * Mp
            self.c += self.nu[:, None] * vp
            self.cc += self.nu * hp
        # η · (−log ψ_prev): the trust region
        self.Mq, self.vq, self.hq = kl_quadratic(prev_policy)

    def step(self, eta: float):
        """``cost_at(t) -> (fC_t, fc_t)`` for :func:`_backward`, formed on the fly."""
        w = eta + self.nu
        if np.any(w <= 0):
            raise ValueError(f"eta + nu_t must be > 0 (eta={eta})")
        C, c, Mq, vq = self.C, self.c, self.Mq, self.vq

        def cost_at(t):
            fC = Mq[t] * eta
            fC += C[t]
            fC /= w[t]
            return fC, (c[t] + eta * vq[t]) / w[t]

        return cost_at

    def at(self, eta: float) -> QuadraticCost:
        w = eta + self.nu
        if np.any(w <= 0):
            raise ValueError(f"eta + nu_t must be > 0 (eta={eta})")
        C = (self.C + eta * self.Mq) / w[:, None, None]
        c = (self.c + eta * self.vq) / w[:, None]
        cc = (self.cc + eta * self.hq) / w
        return QuadraticCost(C, c, cc)


def augmented_cost(cost: QuadraticCost, lam: np.ndarray | None, eta: float,
                   prev_policy: LinearGaussianPolicy, nu: np.ndarray | float | None = None,
                   pi_lin: LinearGaussianPolicy | None = None) -> QuadraticCost:
    """Cost of the BADMM ψ update, normalised per step (book/03_gps; book/design.md).

    The ψ-subproblem (paper §3.4, η-update with the KL trust region as a Lagrangian)

        Σ_t E[c̃(z_t) − λ_tᵀu_t] + ν_t KL(ψ‖π̃) + η (KL(ψ‖ψ_prev) − ε/T)

    is, up to the entropies, Σ_t (η + ν_t) E[ℓ_t(z_t)] − (η + ν_t) H(ψ_t) with

        fC_t = (C_t + η M_t^prev + ν_t M_t^π̃) / (η + ν_t),
        fc_t = (c_t − [0; λ_t] + η v_t^prev + ν_t v_t^π̃) / (η + ν_t),

    where (M, v) come from :func:`kl_quadratic`. The per-step weights (η + ν_t) reappear
    in :func:`backward_pass` as the multiplier (η + ν_{t+1}) / (η + ν_t) on V_{t+1}.
    GPS's λ_K term (a Lagrange multiplier on the gain, ``policy_dual_rate_covar``) is 0.

    Args:
        cost: fitted cost ``C (T, n, n)``, ``c (T, n)``, n = dX + dU.
        lam: λ_t, ``(T, dU)`` (``None`` = 0).
        eta: η > 0, the trust-region multiplier.
        prev_policy: ψ_prev, the policy of the previous GPS iteration.
        nu: ν_t, ``(T,)`` or scalar (``None`` = 0).
        pi_lin: π̃, the linear-Gaussian fit of π; needed when any ν_t > 0.

    Returns:
        The augmented :class:`QuadraticCost` (fC, fc, constants).
    """
    return _AugmentedParts(cost, lam, prev_policy, nu, pi_lin).at(float(eta))


# ------------------------------------------------------------------------ LQG passes
def backward_pass(dyn: LinearGaussianDynamics, fcost: QuadraticCost, eta: float,
                  nu: np.ndarray | float | None = None, min_var: float = 0.0,
                  restrict: StateProjection | None = None) -> LinearGaussianPolicy:
    """Maximum-entropy LQR recursion on the augmented cost (the GPS machinery of book/design.md).

    With multiplier m_t = (η + ν_{t+1}) / (η + ν_t) (the ratio of the per-step weights of
    :func:`augmented_cost`), for t = T-1, …, 0:

        Q_t = fC_t + m_t Fm_tᵀ V_{t+1} Fm_t,
        q_t = fc_t + m_t Fm_tᵀ (v_{t+1} + V_{t+1} fv_t),
        G_t = Q_uu⁻¹,  K_t = −Q_uu⁻¹ Q_ux,  k_t = −Q_uu⁻¹ q_u,
        V_t = Q_xx − Q_xu Q_uu⁻¹ Q_ux,  v_t = q_x + Q_xu k_t,

    with V_T = 0, v_T = 0. G_t = Q_uu⁻¹ is the maximum-entropy solution: ψ_t ∝ exp(−Q_t).
    The dynamics noise F_t does not change K, k, G (certainty equivalence).

    Args:
        dyn: fitted dynamics (``Fm (T, dX, dX+dU)``, ``fv (T, dX)``).
        fcost: augmented cost ``fC (T, n, n)``, ``fc (T, n)``.
        eta: η, only used in the multiplier.
        nu: ν_t ``(T,)`` or scalar (``None`` = 0).
        min_var: optional floor on the eigenvalues of G_t (0 = off).
        restrict: optional :class:`StateProjection`: the control law may not read some
            state entries (those π does not observe); see there.

    Returns:
        The new ψ as a :class:`LinearGaussianPolicy`.

    Raises:
        NotPositiveDefiniteError: if Q_uu is not positive definite at some t (or so nearly
            singular that the gains overflow).
    """
    T, dX, n = dyn.Fm.shape
    if fcost.C.shape != (T, n, n):
        raise ValueError(f"cost shape {fcost.C.shape} does not match dynamics {(T, n, n)}")
    fC, fc = fcost.C, fcost.c
    return _backward(dyn, lambda t: (fC[t], fc[t]), eta, _as_nu(nu, T), min_var, restrict)


def _backward(dyn: LinearGaussianDynamics, cost_at, eta: float, nu: np.ndarray,
              min_var: float, restrict: StateProjection | None = None) -> LinearGaussianPolicy:
    """:func:`backward_pass` with the augmented cost supplied per step by ``cost_at(t)``.

    Building fC for all t costs more than the recursion itself at T = 400, dX = 76, so the
    DGD loop hands in a function that forms (fC_t, fc_t) on the fly.
    """
    Fm, fv = dyn.Fm, dyn.fv
    T, dX, n = Fm.shape
    dU = n - dX
    w = eta + nu
    mult = np.empty(T)
    mult[:-1] = w[1:] / w[:-1]
    mult[-1] = 0.0
    K = np.empty((T, dU, dX))
    k = np.empty((T, dU))
    G = np.empty((T, dU, dU))
    Vxx = np.zeros((dX, dX))
    vx = np.zeros(dX)
    ix, iu = slice(0, dX), slice(dX, n)
    for t in range(T - 1, -1, -1):
        fC_t, fc_t = cost_at(t)
        if t < T - 1:
            F = Fm[t]
            Q = F.T @ (Vxx @ F)                            # the O(n³) part
            Q *= mult[t]
            Q += fC_t
            q = fc_t + mult[t] * (F.T @ (vx + Vxx @ fv[t]))
        else:
            Q, q = fC_t, fc_t
        # Q is symmetric up to round-off; V is re-symmetrised below
        Qux = 0.5 * (Q[iu, ix] + Q[ix, iu].T)
        if dU == 1:                                        # scalar action: no factorisation
            quu = Q[dX, dX]
            if not quu > 0:                                # also catches NaN
                raise NotPositiveDefiniteError(t, eta)
            Quu_inv = np.array([[1.0 / quu]])
        else:
            try:
                L = np.linalg.cholesky(0.5 * (Q[iu, iu] + Q[iu, iu].T))
            except np.linalg.LinAlgError:
                raise NotPositiveDefiniteError(t, eta) from None
            Linv = np.linalg.inv(L)                        # dU × dU, cheap
            Quu_inv = Linv.T @ Linv
        G[t] = Quu_inv
        if restrict is None:
            K[t] = -Quu_inv @ Qux
            k[t] = -Quu_inv @ q[iu]
            Vxx = Q[ix, ix] + Qux.T @ K[t]
            vx = q[ix] + Qux.T @ k[t]
        else:
            # The law may read only P_t x + p_t (the hidden entries replaced by their best
            # affine prediction from the visible ones): minimise Q(P_t x + p_t, u) over u,
            # then evaluate the law actually used, u = K x + k, on the full state.
            Pt, pt = restrict.P[t], restrict.p[t]
            K[t] = -Quu_inv @ (Qux @ Pt)
            k[t] = -Quu_inv @ (q[iu] + Qux @ pt)
            QxuK = Qux.T @ K[t]
            Vxx = Q[ix, ix] + QxuK + QxuK.T + K[t].T @ Q[iu, iu] @ K[t]
            vx = q[ix] + Qux.T @ k[t] + K[t].T @ (q[iu] + Q[iu, iu] @ k[t])
        Vxx = 0.5 * (Vxx + Vxx.T)
    bad = ~(np.isfinite(K).all(axis=(1, 2)) & np.isfinite(k).all(axis=1))
    if bad.any():
        # a nearly singular Q_uu overflowed the recursion; a larger η cures it like non-PD
        raise NotPositiveDefiniteError(int(np.nonzero(bad)[0].max()), eta,
                                       "is nearly singular (non-finite gains)")
    return LinearGaussianPolicy(K, k, _floor_cov(G, min_var))


def forward_pass(dyn: LinearGaussianDynamics, policy: LinearGaussianPolicy
                 ) -> tuple[np.ndarray, np.ndarray]:
    """State-action marginals of ψ under p̃, starting from N(x0mu, x0sigma).

    For z_t = [x_t; u_t]:  μ_t^u = K_t μ_t^x + k_t,
    Σ_t = [[Σ^x, Σ^x K_tᵀ], [K_t Σ^x, K_t Σ^x K_tᵀ + G_t]],
    μ_{t+1}^x = Fm_t μ_t + fv_t,  Σ_{t+1}^x = Fm_t Σ_t Fm_tᵀ + F_t.

    Args:
        dyn: fitted dynamics.
        policy: ψ with ``T`` steps matching ``dyn``.

    Returns:
        ``mu (T, dX+dU)`` and ``sigma (T, dX+dU, dX+dU)``.
    """
    Fm, fv, W = dyn.Fm, dyn.fv, dyn.dyn_covar
    T, dX, n = Fm.shape
    if policy.K.shape != (T, n - dX, dX):
        raise ValueError(f"policy gains {policy.K.shape} do not match dynamics {(T, n - dX, dX)}")
    K, k, G = policy.K, policy.k, policy.cov
    mu = np.empty((T, n))
    sigma = np.empty((T, n, n))
    mx, Sx = dyn.x0mu, dyn.x0sigma
    for t in range(T):
        KS = K[t] @ Sx
        mu[t, :dX] = mx
        mu[t, dX:] = K[t] @ mx + k[t]
        sigma[t, :dX, :dX] = Sx
        sigma[t, dX:, :dX] = KS
        sigma[t, :dX, dX:] = KS.T
        sigma[t, dX:, dX:] = KS @ K[t].T + G[t]
        if t < T - 1:
            F = Fm[t]
            mx = F @ mu[t] + fv[t]
            Sx = F @ sigma[t] @ F.T + W[t]
            Sx = 0.5 * (Sx + Sx.T)
    return mu, sigma


def traj_kl(new: LinearGaussianPolicy, old: LinearGaussianPolicy, mu: np.ndarray,
            sigma: np.ndarray) -> tuple[float, np.ndarray]:
    """Σ_t E_{x_t ~ new traj}[KL(new(·|x_t) ‖ old(·|x_t))] in closed form.

    With ΔK = K_new − K_old, Δk = k_new − k_old, P = G_old⁻¹ and x_t ~ N(μ^x_t, Σ^x_t):

        KL_t = ½ [tr(P G_new) − dU + log|G_old| − log|G_new|
                  + (ΔK μ^x + Δk)ᵀ P (ΔK μ^x + Δk) + tr(P ΔK Σ^x ΔKᵀ)].

    The same function gives E[KL(ψ‖π̃)] per step (``old = π̃``).

    Args:
        new, old: policies with equal shapes.
        mu, sigma: state-action marginals of the *new* policy from :func:`forward_pass`
            (``(T, dX+dU)``, ``(T, dX+dU, dX+dU)``).

    Returns:
        ``(total, kl_t)``: the sum over t and the per-step values ``(T,)``.
    """
    dX, dU = new.dX, new.dU
    mx, Sx = mu[:, :dX], sigma[:, :dX, :dX]
    dK = new.K - old.K
    dm = np.einsum("tux,tx->tu", dK, mx) + (new.k - old.k)
    P = old.inv_cov
    dKS = dK @ Sx                                                   # (T, dU, dX)
    quad = np.einsum("tu,tuv,tv->t", dm, P, dm)
    quad += np.einsum("tuv,tvx,tux->t", P, dK, dKS)                 # tr(P ΔK Σ ΔKᵀ)
    tr = np.einsum("tuv,tvu->t", P, new.cov)
    ld_old = 2.0 * np.sum(np.log(np.diagonal(old.chol, axis1=1, axis2=2)), axis=1)
    ld_new = 2.0 * np.sum(np.log(np.diagonal(new.chol, axis1=1, axis2=2)), axis=1)
    kl_t = 0.5 * (tr - dU + ld_old - ld_new + quad)
    kl_t = np.maximum(kl_t, 0.0)  # round-off can give −1e-16
    return float(kl_t.sum()), kl_t


def expected_cost(cost: QuadraticCost, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """E[ℓ_t(z_t)] for z_t ~ N(μ_t, Σ_t): ½ μᵀCμ + ½ tr(CΣ) + cᵀμ + cc ``(T,)``.

    This is GPS's "Laplace" (LQG-predicted) cost used by step adjustment.
    """
    C, c = cost.C, cost.c
    return (0.5 * np.einsum("ti,tij,tj->t", mu, C, mu)
            + 0.5 * np.einsum("tij,tji->t", C, sigma)
            + np.einsum("ti,ti->t", c, mu) + cost.cc)


# -------------------------------------------------------------------- dual descent on η
def solve_kl_constrained(dyn: LinearGaussianDynamics, cost: QuadraticCost,
                         prev_policy: LinearGaussianPolicy, lam: np.ndarray | None,
                         nu: np.ndarray | float | None, pi_lin: LinearGaussianPolicy | None,
                         epsilon: float, eta0: float = 1.0, *, min_eta: float = 1e-8,
                         max_eta: float = 1e16, max_iter: int = 50, tol: float = 0.1,
                         min_var: float = 0.0, del0: float = 1e-4, eta_limit: float = 1e16,
                         restrict: StateProjection | None = None
                         ) -> tuple[LinearGaussianPolicy, float, dict]:
    """ψ update under Σ_t E[KL(ψ‖ψ_prev)] ≤ ε by dual gradient descent on η (paper §3.4).

    Each iteration solves the augmented LQG at the current η (:func:`augmented_cost`,
    :func:`backward_pass`), propagates the new trajectory distribution
    (:func:`forward_pass`) and measures KL = :func:`traj_kl`. The bracket [lo, hi] on η
    starts at [min_eta, max_eta]; if KL < ε, η is too big: hi ← η,
    η ← max(√(lo·hi), hi/10); otherwise lo ← η, η ← min(√(lo·hi), 10·lo). Stops when
    |KL − ε| < tol·ε, or when KL < ε already at η = lo (the trust region is not binding).

    A non-positive-definite Q_uu is an expected event: η is raised to η_start + δ with δ
    starting at ``del0`` and doubling on each failure (as in GPS), and the failing η becomes
    the lower end of the bracket (smaller η would fail too, in practice). Only at
    η ≥ ``eta_limit`` does it give up.

    Args:
        dyn: fitted dynamics of the group.
        cost: fitted cost of the group.
        prev_policy: ψ_prev (trust-region centre).
        lam: λ_t ``(T, dU)`` or ``None``.
        nu: ν_t ``(T,)``, scalar or ``None``.
        pi_lin: π̃ (needed when ν > 0).
        epsilon: ε > 0, the KL budget summed over t (GPS: kl_step · step_mult · T).
        eta0: starting η (the previous solve's η).
        min_eta, max_eta: initial bracket.
        max_iter: at most this many LQG solves that succeed (GPS: 50).
        tol: relative tolerance on the constraint (GPS: 0.1).
        min_var: floor on the eigenvalues of G_t.
        del0: first increment of η after a PD failure.
        eta_limit: give up when a PD solution needs η ≥ this.
        restrict: optional :class:`StateProjection` (a law that ignores hidden entries).

    Returns:
        ``(policy, eta, info)`` with ``info`` keys ``kl`` (final Σ_t KL), ``kl_t`` ``(T,)``,
        ``epsilon``, ``eta_path``, ``kl_path``, ``iterations``, ``pd_failures``,
        ``converged`` (bool), ``status`` (``"converged"``, ``"inactive"``, ``"max_iter"``,
        ``"bracket"``).

    Raises:
        NotPositiveDefiniteError: no PD solution for any η < ``eta_limit``.
    """
    if not epsilon > 0:
        raise ValueError(f"Invalid epsilon: {epsilon} (must be > 0)")
    if not 0 < min_eta <= max_eta:
        raise ValueError(f"Invalid eta bracket: [{min_eta}, {max_eta}]")
    if max_iter < 1:
        raise ValueError(f"Invalid max_iter: {max_iter} (must be ≥ 1)")
    parts = _AugmentedParts(cost, lam, prev_policy, nu, pi_lin)
    lo, hi = float(min_eta), float(max_eta)
    eta = float(np.clip(eta0, lo, hi))
    info = {"epsilon": float(epsilon), "eta_path": [], "kl_path": [], "pd_failures": 0,
            "iterations": 0, "converged": False, "status": "max_iter"}
    policy = kl = kl_t = None
    eta_used = eta
    for it in range(max_iter):
        # --- LQG at η, raising η until Q_uu is PD
        eta_start, delta = eta, del0
        while True:
            try:
                policy = _backward(dyn, parts.step(eta), eta, parts.nu, min_var, restrict)
                break
            except NotPositiveDefiniteError as e:
                info["pd_failures"] += 1
                lo = max(lo, eta)
                log.debug("Q_uu not PD at t=%d for eta=%.3g; raising eta", e.t, eta)
                eta = eta_start + delta
                delta *= 2.0
                if eta >= eta_limit:
                    raise NotPositiveDefiniteError(
                        e.t, eta, "stays non-positive-definite up to eta_limit (giving up: the "
                        "fitted cost is too non-convex in u, or the dynamics need more "
                        "regularization)") from None
        hi = max(hi, eta)
        eta_used = eta
        mu, sigma = forward_pass(dyn, policy)
        kl, kl_t = traj_kl(policy, prev_policy, mu, sigma)
        info["eta_path"].append(eta)
        info["kl_path"].append(kl)
        info["iterations"] = it + 1
        con = kl - epsilon
        if abs(con) < tol * epsilon:
            info.update(converged=True, status="converged")
            break
        if con < 0:  # KL too small: η too big
            hi = eta
            if eta <= lo * (1 + 1e-12):
                info.update(converged=True, status="inactive")
                break
            eta = max(math.sqrt(lo * hi), 0.1 * hi)
        else:        # KL too large: η too small
            lo = eta
            if eta >= hi * (1 - 1e-12):
                info["status"] = "bracket"
                break
            eta = min(math.sqrt(lo * hi), 10.0 * lo)
    info.update(kl=kl, kl_t=kl_t)
    if not info["converged"]:
        log.warning("KL after DGD on eta did not converge (%s): KL=%.4g, epsilon=%.4g, "
                    "eta=%.3g after %d iterations", info["status"], kl, epsilon, eta_used,
                    info["iterations"])
    return policy, eta_used, info
