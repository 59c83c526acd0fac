# %% [markdown]
# (gps)=
# # Guided policy search with Bregman ADMM
#
# ## Overview
#
# {cite:t}`li2017learning` learn their optimizer with guided policy search (GPS)
# {cite:p}`levine2016end`: a simple, time-varying linear-Gaussian policy $\psi$ is
# improved by a closed-form method, and the policy that is actually wanted, the
# LSTM $\pi$, is trained to imitate it, while a Bregman ADMM scheme
# {cite:p}`wang2014bregman` pulls the two policies into agreement. This chapter
# takes the method apart on one coordinate group, where everything can be checked
# exactly:
#
# - the constrained problem that GPS solves, and its relaxation to equal *mean*
#   actions;
# - the three Bregman ADMM updates (the $\psi$-step, the $\theta$-step, the dual
#   step), in this book's notation;
# - the $\psi$-step as a linear-quadratic-Gaussian (LQG) problem under a KL trust
#   region: a derivation of the backward pass, a short numpy version of it
#   checked against `l2o.lqg.backward_pass`, and the dual gradient descent on the
#   trust-region multiplier;
# - the $\theta$-step as weighted regression, with the covariance $\Sigma^\pi$ in
#   closed form, and the dual updates of $\lambda_t$ and $\nu_t$;
# - a complete BADMM loop on a random test problem with a stationary linear $\pi$,
#   showing the two policies converge to each other;
# - the adaptation of the trust-region size, and what happens when the LQG
#   subproblem has no solution ($Q_{aa}$ not positive definite).
#
# The test problem is synthetic: exact linear-Gaussian dynamics and a convex
# quadratic cost of the size of one coordinate group in the paper's setting. How
# the models are fitted to real optimization trajectories, and how the groups of a
# neural net are handled together, is the subject of {doc}`04_convolutional_gps`.
# Choices that the paper leaves open are collected in
# {ref}`gps-gaps` at the end.

# %% tags=["parameters"]
seed = 0  # seed of the random test problem and of the sampled states
horizon = 400  # T, time steps of the test problem (the paper's horizon)
state_dim = 76  # dX, per-coordinate state dimension of the paper's setting
n_samples = 20  # N, state trajectories sampled for the theta- and dual steps
kl_step = 0.2  # KL budget per time step (epsilon is kl_step * step_mult * T)
n_rounds = 15  # BADMM rounds of the complete loop on the test problem
n_eta = 36  # grid points of the KL-versus-eta sweep

# %%
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
from IPython.display import Markdown, display
from myst_nb import glue

from l2o import badmm, lqg
from l2o.gps import GPSConfig
from l2o.plotting import METHOD_STYLE, sci, sig, use_style

use_style()

# %%
# The typed configuration: GPSConfig validates the values and supplies the
# defaults of everything this chapter does not set (eta0, nu0, alpha, ...).
cfg = GPSConfig(horizon=horizon, num_samples=n_samples, kl_step=kl_step,
                num_iterations=n_rounds, seed=seed)
rng = np.random.default_rng(cfg.seed)
T, dX, dU = cfg.horizon, state_dim, 1
print(f"T = {T}, dX = {dX}, dU = {dU}, N = {cfg.num_samples}")

# %% [markdown]
# ## The problem GPS solves
#
# Recall from {doc}`01_formulation` that the optimizer is a policy in a POMDP: the
# state $s_t$ holds the iterate and the history features $\Phi$, the action $a_t$
# is the step, and the cost is the true objective $c(s_t) = f(x^{(t)})$. GPS keeps
# **two** policies:
#
# - $\psi(a_t \mid s_t, t) = \mathcal{N}(K_t s_t + k_t, G_t)$, time-varying and
#   linear-Gaussian in the full state. For this class the best policy under a
#   linear-Gaussian model of the dynamics is available in closed form (LQG), but
#   it is useless at test time: it is tied to one objective, one horizon and the
#   time index.
# - $\pi(a_t \mid o_t; \theta) = \mathcal{N}(\mu^\pi_\omega(o_t), \Sigma^\pi)$,
#   stationary and nonlinear (an LSTM), which sees only the observation $o_t$. This
#   is the learned optimizer, but there is no closed-form way to improve it.
#
# Writing $\pi(a_t \mid s_t; \theta) = \int \pi(a_t \mid o_t; \theta)\,
# p_o(o_t \mid s_t)\, do_t$ for the policy that $\pi$ induces on states, GPS asks
# for the best $\psi$ among those that *are* $\pi$:
#
# ```{math}
# :label: eq-gps-exact
# \min_{\theta,\, \psi} \; \mathbb{E}_{\psi}\Big[\sum_{t=0}^{T} c(s_t)\Big]
# \quad \text{s.t.} \quad
# \psi(a_t \mid s_t, t) = \pi(a_t \mid s_t; \theta)
# \quad \forall\, a_t, s_t, t .
# ```
#
# That is infinitely many constraints. Following {cite:t}`li2017learning`, only the
# *mean* actions are required to agree, at every time step, on average over the
# states that $\psi$ visits:
#
# ```{math}
# :label: eq-gps-relaxed
# \min_{\theta,\, \psi} \; \mathbb{E}_{\psi}\Big[\sum_{t=0}^{T} c(s_t)\Big]
# \quad \text{s.t.} \quad
# \mathbb{E}_{\psi}[a_t] = \mathbb{E}_{\psi}\big[\mathbb{E}_{\pi}[a_t \mid s_t]\big]
# \quad \forall\, t .
# ```
#
# All outer expectations are over trajectories of $\psi$: the states are always
# those that $\psi$ produces, and $\pi$ is only asked what it *would* do there.
# This is what makes the two halves of the method separable.
#
# ## Bregman ADMM: three updates
#
# Ordinary ADMM would attach a Lagrange multiplier $\lambda_t$ to each constraint of
# {eq}`eq-gps-relaxed` and add a quadratic penalty on its violation, then minimize
# over $\psi$ and $\theta$ in turn and take a gradient step on $\lambda$
# {cite:p}`boyd2011distributed`. Bregman ADMM {cite:p}`wang2014bregman` replaces
# the quadratic penalty by a Bregman divergence; for distributions the natural one
# is the KL divergence, and it acts on the *whole* action distributions, not only
# on the means that the constraint compares. Write
#
# ```{math}
# :label: eq-gps-divergences
# D_t(\psi \,\|\, \pi) = \mathbb{E}_{s_t \sim \psi}\Big[
#   D_{\mathrm{KL}}\big(\psi(\cdot \mid s_t, t) \,\|\, \pi(\cdot \mid s_t)\big)\Big],
# \qquad
# D_t(\pi \,\|\, \psi) = \mathbb{E}_{s_t \sim \psi}\Big[
#   D_{\mathrm{KL}}\big(\pi(\cdot \mid s_t) \,\|\, \psi(\cdot \mid s_t, t)\big)\Big]
# ```
#
# (the paper's $D_t(\eta, \theta)$ and $D_t(\theta, \eta)$, with $\eta$ the
# parameters of $\psi$). One BADMM round is then
#
# ```{math}
# :label: eq-gps-badmm
# \begin{aligned}
# \psi &\leftarrow \arg\min_{\psi} \sum_{t} \mathbb{E}_{\psi}\big[c(s_t)
#   - \lambda_t^{\top} a_t\big] + \nu_t\, D_t(\psi \,\|\, \pi)
#   && \text{($\psi$-step)}\\
# \theta &\leftarrow \arg\min_{\theta} \sum_{t} \lambda_t^{\top}
#   \mathbb{E}_{\psi}\big[\mathbb{E}_{\pi}[a_t \mid s_t]\big]
#   + \nu_t\, D_t(\pi \,\|\, \psi)
#   && \text{($\theta$-step)}\\
# \lambda_t &\leftarrow \lambda_t + \alpha\, \nu_t \Big(
#   \mathbb{E}_{\psi}\big[\mathbb{E}_{\pi}[a_t \mid s_t]\big]
#   - \mathbb{E}_{\psi}[a_t]\Big)
#   && \text{(dual step).}
# \end{aligned}
# ```
#
# The multiplier term enters with opposite signs: the $\psi$-step sees
# $-\lambda_t^\top a_t$, the $\theta$-step $+\lambda_t^\top \mu^\pi$, so a positive
# $\lambda_t$ pulls $\psi$'s actions up and $\pi$'s down. $\nu_t > 0$ weighs the
# divergence at step $t$, and $\alpha$ is the dual step size. Each of the three
# updates is now taken in turn.
#
# ## A test problem: one coordinate group with an exact model
#
# In the paper's setting ({doc}`04_convolutional_gps`) each coordinate group is an
# independent problem with a per-coordinate state of dimension
# $d_X = 76$ and a scalar action. The test problem has that shape: random stable
# dynamics $s_{t+1} = A_t s_t + B_t a_t + c_t + \text{noise}$, a random convex
# quadratic cost over $z_t = (s_t, a_t)$, an initial linear-Gaussian $\psi'$ and,
# to start with, a $\pi$ that is stationary and linear-Gaussian in the state.
# Because the model is exact, nothing has to be fitted: this chapter is about the
# optimization only.

# %%
def psd(rng, d, scale):
    """A random symmetric positive definite d x d matrix."""
    L = rng.standard_normal((d, d))
    return scale * (L @ L.T / d + 0.05 * np.eye(d))


def random_group_problem(rng, T, dX, dU=1):
    """Stable linear-Gaussian dynamics and a convex quadratic cost."""
    A = 0.8 * np.eye(dX) + 0.1 / np.sqrt(dX) * rng.standard_normal((T, dX, dX))
    B = rng.standard_normal((T, dX, dU)) / np.sqrt(dX)
    noise = np.stack([psd(rng, dX, 0.01) for _ in range(T)])
    dyn = lqg.LinearGaussianDynamics(
        np.concatenate([A, B], axis=2), 0.1 * rng.standard_normal((T, dX)),
        noise, rng.standard_normal(dX), psd(rng, dX, 0.1))
    C = np.stack([psd(rng, dX + dU, 1.0) for _ in range(T)])
    return dyn, lqg.QuadraticCost(C, rng.standard_normal((T, dX + dU)))


# %%
def stationary_policy(T, K, k, cov):
    """N(K s + k, cov) at every step, as a time-varying policy object."""
    dU, dX = np.shape(K)
    return lqg.LinearGaussianPolicy(np.broadcast_to(K, (T, dU, dX)),
                                    np.broadcast_to(k, (T, dU)),
                                    np.broadcast_to(cov, (T, dU, dU)))


dyn, cost = random_group_problem(rng, T, dX, dU)
psi0 = lqg.LinearGaussianPolicy(0.1 * rng.standard_normal((T, dU, dX)),
                                np.zeros((T, dU)), np.ones((T, dU, dU)))
pi0 = stationary_policy(T, np.zeros((dU, dX)), np.zeros(dU), np.eye(dU))

# %% [markdown]
# (gps-psi-step)=
# ## The $\psi$-step is a maximum-entropy LQG problem
#
# The true dynamics and cost are unknown, so the $\psi$-step is solved, as in
# {cite:t}`levine2014learning`, on local models fitted to samples of $\psi$:
# linear-Gaussian dynamics
# $\tilde p(s_{t+1} \mid s_t, a_t) = \mathcal{N}(A_t s_t + B_t a_t + c_t, F_t)$
# and a quadratic cost, which we write over $z_t = (s_t, a_t)$ as
# $\tilde c_t(z_t) = \tfrac12 z_t^\top C_t z_t + d_t^\top z_t$. The models are
# only good near the trajectories they were fitted on, so the step is limited by
# a trust region around the previous policy $\psi'$, and $\pi$ enters through
# $\tilde\pi$, a linear-Gaussian fit of its actions as a function of the state
# (the paper's footnote 2):
#
# ```{math}
# :label: eq-gps-psi-problem
# \min_{\psi} \sum_{t} \mathbb{E}_{\tilde\psi}\big[\tilde c_t(z_t)
#   - \lambda_t^{\top} a_t\big] + \nu_t\, D_t(\psi \,\|\, \tilde\pi)
# \quad \text{s.t.} \quad
# \sum_{t} D_t(\psi \,\|\, \psi') \le \epsilon ,
# ```
#
# where $\mathbb{E}_{\tilde\psi}$ runs $\psi$ through the fitted dynamics.
#
# :::{note}
# The paper calls the parameters $(K_t, k_t, G_t)$ of $\psi$ "$\eta$". From here
# on $\eta$ means what it means in the GPS code and in `l2o.lqg`: the Lagrange
# multiplier of the trust-region constraint.
# :::
#
# ### The Lagrangian is an LQG cost with an entropy bonus
#
# With the multiplier $\eta \ge 0$ the Lagrangian of {eq}`eq-gps-psi-problem` is
#
# ```{math}
# :label: eq-gps-lagrangian
# \mathcal{L}(\psi, \eta) = \sum_t \mathbb{E}\big[\tilde c_t(z_t)
#   - \lambda_t^{\top} a_t\big]
#   + \nu_t\, D_t(\psi \,\|\, \tilde\pi)
#   + \eta \Big(\sum_t D_t(\psi \,\|\, \psi') - \epsilon\Big).
# ```
#
# Each KL term splits into a cross-entropy and an entropy,
# $D_{\mathrm{KL}}(\psi_t \,\|\, q) = \mathbb{E}_{\psi_t}[-\log q] - \mathcal{H}(\psi_t)$,
# and for a linear-Gaussian $q(a \mid s) = \mathcal{N}(\bar K s + \bar k, \bar S)$
# with precision $P = \bar S^{-1}$ the cross-entropy is a quadratic in $z$:
#
# ```{math}
# :label: eq-gps-kl-quadratic
# -\log q(a \mid s) = \tfrac12 z^{\top} M z + m^{\top} z + \text{const},
# \qquad
# M = \begin{bmatrix} \bar K^{\top} P \bar K & -\bar K^{\top} P \\
#                     -P \bar K & P \end{bmatrix},
# \quad
# m = \begin{bmatrix} \bar K^{\top} P \bar k \\ -P \bar k \end{bmatrix}
# ```
#
# (expand $\tfrac12 (a - \bar K s - \bar k)^\top P (a - \bar K s - \bar k)$). Let
# $(M^{\pi}_t, m^{\pi}_t)$ be this quadratic for $\tilde\pi$ and
# $(M'_t, m'_t)$ for $\psi'$, and let $w_t = \eta + \nu_t$. Collecting terms,
#
# ```{math}
# :label: eq-gps-augmented-cost
# \mathcal{L}(\psi, \eta) = \sum_t w_t \Big(\mathbb{E}\big[\ell_t(z_t)\big]
#   - \mathcal{H}(\psi_t)\Big) - \eta\,\epsilon + \text{const},
# \qquad
# \ell_t(z) = \tfrac12 z^{\top} \bar C_t z + \bar d_t^{\top} z ,
# ```
# ```{math}
# :label: eq-gps-augmented-terms
# \bar C_t = \frac{C_t + \nu_t M^{\pi}_t + \eta M'_t}{\eta + \nu_t},
# \qquad
# \bar d_t = \frac{d_t - (0, \lambda_t) + \nu_t m^{\pi}_t + \eta m'_t}{\eta + \nu_t},
# ```
#
# where $(0, \lambda_t)$ puts $\lambda_t$ in the action rows and
# $\mathcal{H}(\psi_t)$ is the entropy of $\psi(\cdot \mid s_t, t)$, averaged over
# $s_t$. This is `l2o.lqg.augmented_cost`. So, for fixed $\eta$, minimizing
# $\mathcal{L}$ over $\psi$ is a linear-quadratic problem in which every step
# also *rewards* the entropy of the policy, with weight $w_t$. Without the KL
# terms (pure LQG) the best policy would be deterministic; here it is not.
#
# ### The backward pass
#
# Dynamic programming runs backwards in time. Divide the cost-to-go from step $t$
# by $w_t$ and call the optimum $V_t(s)$, with $V_T \equiv 0$. The
# state-action function of step $t$ is then
#
# ```{math}
# :label: eq-gps-q-function
# Q_t(s, a) = \ell_t(s, a) + \frac{\eta + \nu_{t+1}}{\eta + \nu_t}\,
#   \mathbb{E}_{s' \sim \tilde p(\cdot \mid s, a)}\big[V_{t+1}(s')\big],
# \qquad
# V_t(s) = \min_{\psi_t} \; \mathbb{E}_{a \sim \psi_t(\cdot \mid s)}
#   \big[Q_t(s, a)\big] - \mathcal{H}\big(\psi_t(\cdot \mid s)\big).
# ```
#
# The ratio $(\eta + \nu_{t+1}) / (\eta + \nu_t)$ appears because step $t+1$'s
# terms carry weight $w_{t+1}$ while we divided by $w_t$; it is 1 when $\nu$ is
# constant over time. The inner minimization has a closed form: for any density
# $q$, $\mathbb{E}_q[Q] - \mathcal{H}(q) = D_{\mathrm{KL}}(q \,\|\, e^{-Q}/Z) - \log Z$
# with $Z = \int e^{-Q(s, a)} da$, so
#
# ```{math}
# :label: eq-gps-gibbs
# \psi_t(a \mid s) \propto \exp\big(-Q_t(s, a)\big),
# \qquad
# V_t(s) = -\log \int \exp\big(-Q_t(s, a)\big)\, da .
# ```
#
# Suppose $V_{t+1}(s) = \tfrac12 s^\top V_{t+1} s + v_{t+1}^\top s + \text{const}$
# (true for $V_T = 0$). Substituting $s' = A_t s + B_t a + c_t + \text{noise}$ makes
# $Q_t$ a quadratic with blocks, writing $\rho_t$ for the ratio of weights,
#
# ```{math}
# :label: eq-gps-q-blocks
# \begin{aligned}
# Q_{ss} &= \bar C_{ss} + \rho_t A_t^{\top} V_{t+1} A_t, &
# q_s &= \bar d_s + \rho_t A_t^{\top} (v_{t+1} + V_{t+1} c_t),\\
# Q_{as} &= \bar C_{as} + \rho_t B_t^{\top} V_{t+1} A_t, &
# q_a &= \bar d_a + \rho_t B_t^{\top} (v_{t+1} + V_{t+1} c_t),\\
# Q_{aa} &= \bar C_{aa} + \rho_t B_t^{\top} V_{t+1} B_t ,
# \end{aligned}
# ```
#
# so that $Q_t(s, a) = \tfrac12 z^\top Q z + q^\top z + \text{const}$. The noise
# covariance $F_t$ only adds the constant $\tfrac12\operatorname{tr}(V_{t+1} F_t)$:
# it does not change the policy. Completing the square in $a$,
#
# ```{math}
# :label: eq-gps-complete-square
# Q_t(s, a) = \tfrac12 (a - K_t s - k_t)^{\top} Q_{aa} (a - K_t s - k_t)
#   + \tfrac12 s^{\top} V_t s + v_t^{\top} s + \text{const},
# ```
#
# with
#
# ```{math}
# :label: eq-gps-backward-solution
# K_t = -Q_{aa}^{-1} Q_{as}, \quad k_t = -Q_{aa}^{-1} q_a, \quad
# G_t = Q_{aa}^{-1}, \qquad
# V_t = Q_{ss} + Q_{as}^{\top} K_t, \quad v_t = q_s + Q_{as}^{\top} k_t .
# ```
#
# By {eq}`eq-gps-gibbs` the new policy is the Gaussian
# $\psi_t(a \mid s) = \mathcal{N}(K_t s + k_t, G_t)$, and since the Gaussian
# integral over $a$ only adds a constant, $V_t$ is again quadratic with the
# matrices of {eq}`eq-gps-backward-solution`: the induction closes. Three remarks:
#
# - **Maximum entropy.** The covariance $G_t = Q_{aa}^{-1}$ is what the entropy
#   bonus buys: $\psi$ is broad where the cost-to-go is flat in $a$ and narrow
#   where it is curved. This is why GPS can use $\psi$ to *explore* when it samples
#   new trajectories.
# - **$\eta$ interpolates.** As $\eta \to \infty$, $\bar C_t \to M'_t$ and
#   $\bar d_t \to m'_t$: the solution returns $\psi'$ itself. As $\eta \to 0$ the
#   fitted cost dominates and the step is as large as the models allow.
# - **$Q_{aa}$ must be positive definite**, or $e^{-Q}$ is not normalizable and
#   there is no solution. The fitted cost need not be convex in $a$, but $\eta M'_t$
#   contributes $\eta\, G'^{-1}_t \succ 0$ to $Q_{aa}$, so a large enough $\eta$
#   always restores it ({ref}`gps-non-pd`).
#
# ### From scratch, then the package
#
# The whole recursion {eq}`eq-gps-q-blocks`-{eq}`eq-gps-backward-solution` in
# numpy, for an augmented cost $(\bar C_t, \bar d_t)$ and weights $w_t$:

# %%
def backward(Fm, fv, Cbar, dbar, w):
    """Maximum-entropy LQR; Fm[t] = [A_t B_t], fv[t] = c_t, w = eta + nu."""
    T, dX, n = Fm.shape
    K, k, G = np.zeros((T, n - dX, dX)), np.zeros((T, n - dX)), []
    V, v = np.zeros((dX, dX)), np.zeros(dX)
    for t in reversed(range(T)):
        rho = w[t + 1] / w[t] if t < T - 1 else 0.0
        Q = Cbar[t] + rho * Fm[t].T @ V @ Fm[t]
        q = dbar[t] + rho * Fm[t].T @ (v + V @ fv[t])
        Q_as, Q_aa = Q[dX:, :dX], Q[dX:, dX:]
        np.linalg.cholesky(Q_aa)  # raises unless Q_aa is positive definite
        G.append(np.linalg.inv(Q_aa))
        K[t], k[t] = -G[-1] @ Q_as, -G[-1] @ q[dX:]
        V = Q[:dX, :dX] + Q_as.T @ K[t]
        V, v = (V + V.T) / 2, q[:dX] + Q_as.T @ k[t]
    return K, k, np.array(G[::-1])


# %% [markdown]
# The package's `backward_pass` computes the same thing with a cheaper scalar path
# for $d_U = 1$, a typed error for a failed factorization (it names the step) and
# an optional variance floor. A hidden cell checks that both agree to round-off,
# on the test problem and on a small problem with a two-dimensional action,
# non-zero $\lambda_t$ and a $\nu_t$ that changes over time.

# %% tags=["remove-cell"]
def check_backward(dyn, cost, prev, lam, nu, pi, eta):
    fcost = lqg.augmented_cost(cost, lam, eta, prev, nu, pi)
    ref = lqg.backward_pass(dyn, fcost, eta, nu)
    K, k, G = backward(dyn.Fm, dyn.fv, fcost.C, fcost.c, eta + nu)
    for ours, theirs in ((K, ref.K), (k, ref.k), (G, ref.cov)):
        assert np.allclose(ours, theirs, rtol=1e-9, atol=1e-12)


check_backward(dyn, cost, psi0, np.zeros((T, dU)), np.full(T, cfg.init_nu),
               pi0, cfg.init_eta)
small = np.random.default_rng(cfg.seed + 1)
sdyn, scost = random_group_problem(small, 12, 5, 2)
sprev = lqg.LinearGaussianPolicy(small.standard_normal((12, 2, 5)),
                                 small.standard_normal((12, 2)),
                                 np.stack([psd(small, 2, 1.0)] * 12))
spi = stationary_policy(12, small.standard_normal((2, 5)), np.ones(2),
                       np.eye(2))
check_backward(sdyn, scost, sprev, small.standard_normal((12, 2)),
               small.uniform(0.01, 1.0, 12), spi, 0.3)

# %% [markdown]
# ## Dual gradient descent on $\eta$
#
# For fixed $\eta$ the backward pass gives the minimizer $\psi_\eta$ of the
# Lagrangian. The dual function $g(\eta) = \mathcal{L}(\psi_\eta, \eta)$ is concave,
# and by the envelope theorem its derivative is the constraint's slack:
#
# ```{math}
# :label: eq-gps-dual-derivative
# g'(\eta) = \sum_t D_t(\psi_\eta \,\|\, \psi') - \epsilon .
# ```
#
# The KL divergence of the solution falls as $\eta$ grows, so the dual problem is
# a one-dimensional root search: raise $\eta$ while the step is too large, lower
# it while it is too small. The paper only says that the dual variable is
# "incremented until the constraint is satisfied"; `l2o.lqg.solve_kl_constrained`
# follows the GPS code. It keeps a bracket $[\eta_{lo}, \eta_{hi}]$, starts from
# the previous solve's $\eta$ and, after each LQG solve and a forward pass that
# gives the trajectory marginals and the KL divergence in closed form,
#
# - if $\mathrm{KL} > \epsilon$: $\eta_{lo} \leftarrow \eta$,
#   $\eta \leftarrow \min(\sqrt{\eta_{lo}\eta_{hi}},\, 10\,\eta_{lo})$;
# - if $\mathrm{KL} < \epsilon$: $\eta_{hi} \leftarrow \eta$,
#   $\eta \leftarrow \max(\sqrt{\eta_{lo}\eta_{hi}},\, \eta_{hi}/10)$;
#
# and stops when $|\mathrm{KL} - \epsilon| < 0.1\,\epsilon$, or when the constraint
# is slack at the lower end of the bracket (then $\eta \to 0$ is optimal). The
# steps are geometric because $\eta$ ranges over many orders of magnitude.
# The trust region is $\epsilon = \text{kl\_step} \cdot \text{step\_mult} \cdot T$,
# here with $\text{step\_mult} = 1$.

# %%
eps = cfg.kl_step * 1.0 * T
lam0, nu0 = np.zeros((T, dU)), np.full(T, cfg.init_nu)


def kl_at(eta):
    """KL(psi_eta || psi0), summed over the trajectory, at a fixed eta."""
    fcost = lqg.augmented_cost(cost, lam0, eta, psi0, nu0, pi0)
    new = lqg.backward_pass(dyn, fcost, eta, nu0)
    return lqg.traj_kl(new, psi0, *lqg.forward_pass(dyn, new))[0]


etas = np.logspace(-3, 4, n_eta)
kls = np.array([kl_at(e) for e in etas])
psi1, eta1, info = lqg.solve_kl_constrained(
    dyn, cost, psi0, lam0, nu0, pi0, eps, cfg.init_eta)

# %% mystnb={"figure": {"caption": "Dual gradient descent on the trust-region multiplier $\\eta$ for the first $\\psi$-step of the test problem. Grey: the KL divergence $\\sum_t D_t(\\psi_\\eta \\,\\|\\, \\psi')$ of the LQG solution as a function of $\\eta$. Numbered points: the iterates of `solve_kl_constrained`, which stops within 10% of the target $\\epsilon$ (dashed).", "name": "fig-gps-dgd"}}
fig, ax = plt.subplots(figsize=(6.4, 3.8))
ax.loglog(etas, kls, color="0.5", label=r"KL of the LQG solution $\psi_\eta$")
ax.axhline(eps, color="k", linestyle="--", linewidth=1,
           label=rf"target $\epsilon = {eps:g}$")
ax.plot(info["eta_path"], info["kl_path"], "o-",
        color=METHOD_STYLE["psd"]["color"], label="dual gradient descent")
for i, (e, k) in enumerate(zip(info["eta_path"], info["kl_path"]), start=1):
    ax.annotate(str(i), (e, k), textcoords="offset points", xytext=(6, 4))
ax.set_xlabel(r"trust-region multiplier $\eta$")
ax.set_ylabel(r"KL$(\psi_\eta \,\|\, \psi')$, summed over $t$")
ax.set_title("The KL divergence of the step falls with $\\eta$")
ax.legend()
plt.show()

# %%
glue("gps_T", T, display=False)
glue("gps_dX", dX, display=False)
glue("gps_eps", sig(eps), display=False)
glue("gps_kl_step", cfg.kl_step, display=False)
glue("gps_dgd_iters", info["iterations"], display=False)
glue("gps_dgd_status", info["status"], display=False)
glue("gps_dgd_eta", sig(eta1, 4), display=False)
glue("gps_dgd_kl", sig(info["kl"]), display=False)
glue("gps_kl_low", sig(kls[0], 4), display=False)
glue("gps_kl_high", sci(kls[-1]), display=False)
print(f"DGD: {info['iterations']} LQG solves, status {info['status']}, "
      f"eta = {eta1:.4g}, KL = {info['kl']:.3f} (epsilon = {eps:g})")

# %% [markdown]
# On the test problem ($T =$ {glue:text}`gps_T`, $d_X =$ {glue:text}`gps_dX`)
# the KL divergence of the LQG solution spans from
# {glue:text}`gps_kl_low:.4g` at $\eta = 10^{-3}$ down to {glue:text}`gps_kl_high` at
# $\eta = 10^{4}$ ({numref}`fig-gps-dgd`). With
# $\epsilon =$ {glue:text}`gps_eps:g` (that is,
# {glue:text}`gps_kl_step` nats per step) the dual descent needed
# {glue:text}`gps_dgd_iters` LQG solves (status "{glue:text}`gps_dgd_status`")
# and stopped at $\eta =$ {glue:text}`gps_dgd_eta` with a KL divergence of
# {glue:text}`gps_dgd_kl`.
#
# ## The $\theta$-step is weighted regression
#
# Both policies are Gaussian, so the $\theta$-step's divergence is available in
# closed form. With $\Sigma^\pi$ held fixed while the mean network is trained, as
# in the paper, and $m_t(s) = K_t s + k_t$ the mean action of $\psi$, the
# $\theta$-step minimizes
#
# ```{math}
# :label: eq-gps-theta-problem
# \mathbb{E}_{\psi}\Big[\sum_t \lambda_t^{\top} \mu^\pi(o_t)
#   + \frac{\nu_t}{2}\Big(\operatorname{tr}(G_t^{-1} \Sigma^\pi)
#   - \log|\Sigma^\pi|\Big)
#   + \frac{\nu_t}{2} \big(\mu^\pi(o_t) - m_t(s_t)\big)^{\top} G_t^{-1}
#     \big(\mu^\pi(o_t) - m_t(s_t)\big)\Big].
# ```
#
# The first and last terms combine into a single square: since
# $\frac{\nu}{2}(\mu - y)^\top G^{-1} (\mu - y)$ with $y = m - G\lambda/\nu$ expands to
# $\frac{\nu}{2}(\mu - m)^\top G^{-1}(\mu - m) + \lambda^\top (\mu - m)$ plus a
# constant,
#
# ```{math}
# :label: eq-gps-theta-regression
# \min_{\omega}\; \mathbb{E}_{\psi}\Big[\sum_t \frac{\nu_t}{2}
#   \big(\mu^\pi_\omega(o_t) - y_t\big)^{\top} G_t^{-1}
#   \big(\mu^\pi_\omega(o_t) - y_t\big)\Big],
# \qquad
# y_t = K_t s_t + k_t - \frac{G_t \lambda_t}{\nu_t} .
# ```
#
# This is supervised regression of the network's output onto targets computed
# from $\psi$, at the states $\psi$ visited, with weight $\nu_t / G_t$ for a
# scalar action: steps where $\psi$ is confident (small $G_t$) count more. The
# targets are $\psi$'s means, shifted by the multiplier. The covariance terms do
# not involve $\omega$; setting their derivative
# $\sum_t \frac{\nu_t}{2}(G_t^{-1} - \Sigma^{-1})$ to zero gives
#
# ```{math}
# :label: eq-gps-pi-cov
# \Sigma^\pi = \Big(\frac{\sum_t \nu_t\, G_t^{-1}}{\sum_t \nu_t}\Big)^{-1},
# ```
#
# the $\nu$-weighted harmonic mean of $\psi$'s covariances. In code, for a scalar
# action and states `X` of shape $(N, T, d_X)$ sampled along $\psi$:

# %%
def pi_targets(psi, X, lam, nu):
    """Targets y_t and weights nu_t / G_t of the theta-step (scalar action)."""
    G = psi.cov[:, 0, 0]
    y = np.einsum("tx,ntx->nt", psi.K[:, 0], X) + psi.k[:, 0]
    return y - G * lam[:, 0] / nu, nu / G


def pi_cov(psi, nu):
    """Sigma^pi: the nu-weighted harmonic mean of G_t."""
    return nu.sum() / np.sum(nu / psi.cov[:, 0, 0])


# %%
def sample_states(dyn, psi, n, rng):
    """n state trajectories (n, T, dX) from psi's marginals under the model."""
    mu, sigma = lqg.forward_pass(dyn, psi)
    dX = dyn.dX
    L = np.linalg.cholesky(sigma[:, :dX, :dX])
    eps_ = rng.standard_normal((n,) + mu[:, :dX].shape)
    return mu[:, :dX] + np.einsum("tij,ntj->nti", L, eps_)


X1 = sample_states(dyn, psi1, cfg.num_samples, rng)
lam_demo = 0.1 * rng.standard_normal((T, dU))  # any multiplier will do here
y1, w1 = pi_targets(psi1, X1, lam_demo, nu0)

# %% tags=["remove-cell"]
ref = badmm.pi_targets(psi1, X1, lam_demo, nu0)
assert np.allclose(y1, ref.mean[..., 0], rtol=1e-10, atol=1e-12)
assert np.allclose(w1, ref.weight * ref.precision[:, 0, 0], rtol=1e-12)
nu_var = rng.uniform(0.01, 1.0, T)
assert np.isclose(pi_cov(psi1, nu_var),
                  badmm.closed_form_pi_cov(psi1, nu_var).item(), rtol=1e-12)
# the closed form minimizes the covariance terms of the theta-objective
grid = pi_cov(psi1, nu_var) * np.linspace(0.5, 1.5, 201)
obj = [np.sum(nu_var * (s / psi1.cov[:, 0, 0] - np.log(s))) for s in grid]
assert abs(int(np.argmin(obj)) - 100) <= 1

# %% [markdown]
# The package's `l2o.badmm.pi_targets` and `closed_form_pi_cov` give the same
# numbers (checked in a hidden cell, also for a $\nu_t$ that varies over time).
# In the learned optimizer $\mu^\pi$ is an LSTM trained on this loss by
# backpropagation through time ({doc}`04_convolutional_gps`); the weights are
# first normalized as in the GPS code (`badmm.normalize_weights`: mean one,
# clipped at twice the median).
#
# ## The dual updates
#
# **$\lambda_t$.** The paper's update is {eq}`eq-gps-badmm` (third line). We use
# the variant of the GPS code, which multiplies the mean-action gap by $G_t^{-1}$:
#
# ```{math}
# :label: eq-gps-lambda
# \lambda_t \leftarrow \lambda_t + \alpha\, \nu_t\, G_t^{-1}\,
#   \frac1N \sum_{n} \big(\mu^\pi(o_{n,t}) - m_t(s_{n,t})\big),
#   \qquad \alpha = 0.1 .
# ```
#
# The preconditioner has a simple meaning. $\lambda_t$ enters the $\psi$-step as a
# cost per unit action and shifts $\pi$'s target by $-G_t \lambda_t / \nu_t$
# ({eq}`eq-gps-theta-regression`). With the factor $G_t^{-1}$ one dual step moves
# that target by exactly $\alpha$ times the current mean gap, whatever the scale
# of the actions or the value of $\nu_t$; without it the effect of $\alpha$ would
# depend on both.
#
# **$\nu_t$.** The weights of the divergence are adapted from the divergence
# itself. With $\mathrm{KL}_t = D_t(\tilde\pi \,\|\, \psi)$ and $\bar m$, $\bar\sigma$
# their mean and standard deviation over $t$, the rule of the GPS examples is
#
# ```{math}
# :label: eq-gps-nu
# \nu_t \leftarrow \begin{cases}
#   \nu_t / 2 & \text{if } \mathrm{KL}_t < \bar m - 1.0\,\bar\sigma,\\
#   2\,\nu_t & \text{if } \mathrm{KL}_t \ge \bar m + 0.5\,\bar\sigma,\\
#   \nu_t & \text{otherwise,}
# \end{cases}
# ```
#
# which moves weight towards the steps where $\pi$ and $\psi$ disagree most
# (`badmm.update_nu`; in convolutional GPS it runs once per GPS iteration, on the
# last inner BADMM round).
#
# ## The complete loop on the test problem
#
# With a stationary linear-Gaussian $\pi(a \mid s) = \mathcal{N}(K^\pi s + k^\pi,
# \Sigma^\pi)$ the $\theta$-step {eq}`eq-gps-theta-regression` is an ordinary
# weighted least-squares problem, so a complete BADMM loop fits in a few lines.
# The question it answers: can a *stationary* policy be brought into agreement
# with the *time-varying* $\psi$, and what does that cost? Each round takes one
# $\psi$-step (LQG with dual descent, trust region around the previous $\psi$),
# samples states from the new $\psi$, and takes one $\theta$-step and one dual
# step.

# %%
def theta_step(psi, X, lam, nu):
    """Exact theta-step for a stationary linear pi: weighted least squares."""
    y, w = pi_targets(psi, X, lam, nu)
    w = badmm.normalize_weights(w)
    Z = np.concatenate([X, np.ones(X.shape[:2] + (1,))], axis=2)
    Zw = Z * w[:, None]
    H = np.einsum("ntx,nty->xy", Zw, Z) + 1e-9 * np.eye(Z.shape[2])
    coef = np.linalg.solve(H, np.einsum("ntx,nt->x", Zw, y))
    return stationary_policy(len(nu), coef[None, :-1], coef[-1:],
                             np.full((1, 1), pi_cov(psi, nu)))


def expected_total_cost(policy):
    """E[sum_t c(z_t)] of a policy under the exact model."""
    return lqg.expected_cost(cost, *lqg.forward_pass(dyn, policy)).sum()


# %%
psi, pi, eta = psi0, pi0, cfg.init_eta
lam, nu = lam0.copy(), nu0.copy()
history = []
for r in range(n_rounds):
    psi, eta, _ = lqg.solve_kl_constrained(dyn, cost, psi, lam, nu, pi, eps,
                                           eta)
    X = sample_states(dyn, psi, cfg.num_samples, rng)
    pi = theta_step(psi, X, lam, nu)
    u_pi = pi.mean(X)
    gap = np.abs((u_pi - psi.mean(X)).mean(axis=0)).mean()
    lam = badmm.dual_update_lambda(lam, nu, psi, X, u_pi, cfg.dual_rate)
    kl_t = badmm.kl_pi_psi_per_t(pi, psi, X)
    nu = badmm.update_nu(nu, kl_t, lower=cfg.nu_lower, upper=cfg.nu_upper)
    history.append(dict(psi=expected_total_cost(psi), gap=gap, eta=eta,
                        pi=expected_total_cost(pi), nu=nu.mean()))

# %% mystnb={"figure": {"caption": "BADMM on the test problem with a stationary linear-Gaussian $\\pi$. Left: expected total cost of the time-varying $\\psi$ and of the stationary $\\pi$ under the exact model. Right: mean over $t$ of the gap between their mean actions, averaged over the sampled states, after each round.", "name": "fig-gps-badmm"}}
rounds = np.arange(1, n_rounds + 1)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.0, 3.4))
ax1.plot(rounds, [h["psi"] for h in history], "o-", color="0.45",
         label=r"$\psi$ (time-varying)")
ax1.plot(rounds, [h["pi"] for h in history], "s-",
         color=METHOD_STYLE["psd"]["color"], label=r"$\pi$ (stationary)")
ax1.set_xlabel("BADMM round")
ax1.set_ylabel("expected total cost")
ax1.legend()
ax2.semilogy(rounds, [h["gap"] for h in history], "o-", color="k")
ax2.set_xlabel("BADMM round")
for ax in (ax1, ax2):
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
ax2.set_ylabel(r"mean $|\mathbb{E}[\mu^\pi] - \mathbb{E}[m_t]|$")
fig.suptitle(r"$\psi$ and $\pi$ converge to each other")
plt.show()

# %%
first, last = history[0], history[-1]
best_psi = min(h["psi"] for h in history)
glue("gps_rounds", n_rounds, display=False)
glue("gps_psi_first", round(float(first["psi"]), 1), display=False)
glue("gps_psi_best", round(float(best_psi), 1), display=False)
glue("gps_psi_last", round(float(last["psi"]), 1), display=False)
glue("gps_pi_first", round(float(first["pi"]), 1), display=False)
glue("gps_pi_last", round(float(last["pi"]), 1), display=False)
glue("gps_gap_first", sig(first['gap'], 3), display=False)
glue("gps_gap_last", sig(last['gap'], 3), display=False)
glue("gps_gap_max", sig(max(h["gap"] for h in history), 3), display=False)
glue("gps_nu_last", sig(last['nu'], 3), display=False)
print(f"round 1: psi {first['psi']:.1f}, pi {first['pi']:.1f}, "
      f"gap {first['gap']:.3g}")
print(f"round {n_rounds}: psi {last['psi']:.1f}, pi {last['pi']:.1f}, "
      f"gap {last['gap']:.3g}")

# %% [markdown]
# {numref}`fig-gps-badmm` shows the mechanism. At first $\psi$ improves quickly
# (expected cost {glue:text}`gps_psi_first:.1f` after the first round, lowest
# {glue:text}`gps_psi_best:.1f`): nothing yet ties it to $\pi$ but a small $\nu_t$.
# As the multipliers $\lambda_t$ and weights $\nu_t$ grow (mean $\nu_t$ after the
# last round: {glue:text}`gps_nu_last`), $\psi$ is pulled back towards what a
# stationary policy can do, and its cost rises to {glue:text}`gps_psi_last:.1f`,
# while the cost of $\pi$ falls from {glue:text}`gps_pi_first:.1f` to
# {glue:text}`gps_pi_last:.1f`. The gap between their mean actions, which first grows
# while $\psi$ runs ahead (from {glue:text}`gps_gap_first` to at most
# {glue:text}`gps_gap_max`), is down to {glue:text}`gps_gap_last` after
# {glue:text}`gps_rounds` rounds. The difference between the best $\psi$ and the
# final $\pi$ is the price of stationarity on this problem: $\psi$ may use the
# time index, $\pi$ may not. In the learned optimizer $\pi$ has an LSTM memory
# instead, which can carry some of that information.
#
# ## Adapting the size of the trust region
#
# The KL bound $\epsilon$ limits the step because the models are local. Whether
# the last step was too bold shows up when the models are refitted to the new
# samples. Let $\hat L(\psi; \tilde p)$ be the expected cost (plus the
# $\nu$-weighted divergence from $\tilde\pi$) predicted by LQG for $\psi$ under
# dynamics $\tilde p$. After an iteration that replaced $\psi'$ by $\psi$:
#
# ```{math}
# :label: eq-gps-step-adjust
# \begin{aligned}
# \text{predicted} &= \hat L(\psi'; \tilde p_{\text{old}})
#   - \hat L(\psi; \tilde p_{\text{old}}), \qquad
# \text{actual} = \hat L(\psi'; \tilde p_{\text{old}})
#   - \hat L(\psi; \tilde p_{\text{new}}),\\
# \text{step\_mult} &\leftarrow \operatorname{clip}\Big(
#   \operatorname{clip}\Big(\frac{\text{predicted}}
#   {2\max(10^{-4}, \text{predicted} - \text{actual})}, 0.1, 5\Big)
#   \cdot \text{step\_mult},\; 0.01,\; 10\Big).
# \end{aligned}
# ```
#
# If the new models confirm the predicted improvement, the step may grow up to
# fivefold; if they show half of it, it stays; if they show none or a loss, it
# shrinks. The factor for a predicted improvement of 10 (`badmm.step_adjust`,
# starting from $\text{step\_mult} = 1$):

# %%
cases = [("all of it", 10.0), ("three quarters", 7.5), ("half", 5.0),
         ("a fifth", 2.0), ("none", 0.0), ("a loss as large", -10.0)]
rows = ["| actual improvement | actual | new step_mult |", "|---|---|---|"]
for name, actual in cases:
    new = badmm.step_adjust(prev_pred=10.0, new_pred=0.0,
                            new_actual=10.0 - actual, step_mult=1.0)
    rows.append(f"| {name} | {actual:g} | {new:.3g} |")
display(Markdown("\n".join(rows)))

# %% [markdown]
# (gps-non-pd)=
# ## When $Q_{aa}$ is not positive definite
#
# Fitted costs are not always convex in the action, and then the backward pass
# can meet a $Q_{aa}$ that is not positive definite: {eq}`eq-gps-gibbs` has no
# normalizable solution. The GPS code treats this as an expected event, not an
# error, and so does `solve_kl_constrained`: $\eta$ is raised by $\delta$,
# starting at $\delta = 10^{-4}$ and doubling with each failure, until the
# factorization succeeds; the failing $\eta$ becomes the lower end of the DGD
# bracket. Only beyond $\eta = 10^{16}$ does it give up. We force the case by
# subtracting 3 from the action-action entry of the test cost, which makes it
# concave in $a$, and start the dual descent at a small $\eta$:

# %%
C_bad = np.array(cost.C)
C_bad[:, dX:, dX:] -= 3.0  # concave in the action
bad_cost = lqg.QuadraticCost(C_bad, cost.c)
try:
    lqg.backward_pass(dyn, lqg.augmented_cost(bad_cost, None, 1e-2, psi0), 1e-2)
except lqg.NotPositiveDefiniteError as err:
    print("backward_pass:", err)
psi_r, eta_r, info_r = lqg.solve_kl_constrained(
    dyn, bad_cost, psi0, None, None, None, eps, eta0=1e-2)
print(f"solve_kl_constrained: {info_r['pd_failures']} failed factorizations, "
      f"then {info_r['status']} at eta = {eta_r:.4g}, KL = {info_r['kl']:.3f}")

# %%
glue("gps_pd_failures", info_r["pd_failures"], display=False)
glue("gps_pd_eta", sig(eta_r, 4), display=False)
glue("gps_pd_status", info_r["status"], display=False)

# %% [markdown]
# The first factorization fails at the last step of the horizon, where the
# backward pass starts. {glue:text}`gps_pd_failures` failed factorizations later
# $\eta$ is large enough for the trust-region term $\eta\, G'^{-1}_t$ to outweigh
# the negative curvature, and the dual descent proceeds from there (status
# "{glue:text}`gps_pd_status`", $\eta =$ {glue:text}`gps_pd_eta`). The count is
# reported per group and iteration in the diagnostics of the convolutional GPS
# loop (`pd_failures`, {doc}`04_convolutional_gps`). When even the largest
# $\eta$ cannot keep the step inside twice the trust region (a badly fitted model),
# `l2o.gps` rejects the update, keeps the previous $\psi$ and halves the step
# multiplier.
#
# (gps-gaps)=
# ## Where this book fills a gap
#
# :::{admonition} Choices the paper does not make, and where ours come from
# :class: important
#
# {cite:t}`li2017learning` specify the BADMM updates, the LQG subproblem with its
# trust region and the regression form of the $\theta$-step. Everything else
# below is ours; most of it follows the public GPS code (the tags refer to the
# project's method notes).
#
# - **$\eta$.** The paper's name for $\psi$'s parameters; here and in the code it
#   is the trust-region multiplier.
# - **Trust-region size.** $\epsilon = \text{kl\_step} \cdot \text{step\_mult}
#   \cdot T$ with $\text{kl\_step} = 0.2$ and the step adjustment
#   {eq}`eq-gps-step-adjust`, from the GPS code. Because our cost model has no
#   constant term (it is fitted by gradient matching, method notes D6), the three
#   costs of {eq}`eq-gps-step-adjust` are all evaluated under the newly fitted
#   cost.
# - **Dual descent.** Bracketing with geometric steps, 10% tolerance, at most 50
#   solves, starting at the previous $\eta$ (initially 1); the paper says only
#   that the dual variable is incremented until the constraint holds.
# - **Non-positive-definite $Q_{aa}$.** Raise $\eta$ by a doubling $\delta$ from
#   $10^{-4}$ (GPS code); reject a step whose KL exceeds $2\epsilon$ (ours).
# - **Per-step normalization** of the augmented cost by $\eta + \nu_t$ and the
#   resulting ratio in the backward pass (GPS code).
# - **$\lambda_t$ update** preconditioned by $G_t^{-1}$ {eq}`eq-gps-lambda`
#   (GPS code), $\alpha = 0.1$; `dual_update_lambda(precondition=False)` gives the
#   paper's formula.
# - **$\nu_t$**: initial 0.01, adapted by rule {eq}`eq-gps-nu` on the last inner
#   round (GPS code, "fixed_lg_step = 3"); the paper only calls it a weight.
# - **$\Sigma^\pi$** in closed form {eq}`eq-gps-pi-cov`, derived from the paper's
#   $\theta$-objective (method notes §6); the GPS code uses an unweighted variant
#   (`closed_form_pi_cov(variant="gps")`), which agrees when $\nu_t$ is constant.
# - **Regression weights** normalized as in the GPS code.
# - **$\tilde\pi$**, the linear-Gaussian stand-in for $\pi$ (paper footnote 2),
#   fitted by conditioning a joint Gaussian of states and $\pi$'s mean actions;
#   its covariance is the regression residual plus $\Sigma^\pi$ (GPS code).
# - **The loop around the updates**, four inner BADMM rounds per GPS iteration,
#   a pre-training of $\pi$ on the initial $\psi$, and the models of the dynamics
#   and cost: {doc}`04_convolutional_gps` (method notes §1.3-§1.4, D3, D6, D7).
# :::
