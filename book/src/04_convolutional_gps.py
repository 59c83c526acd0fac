# %% [markdown]
# (conv-gps)=
# # Convolutional GPS and the features
#
# ## Overview
#
# {doc}`03_gps` solved the guided policy search updates for *one* small
# linear-Gaussian problem. Training a neural net is not small: the 48-48-10 net of
# the paper has {glue:text}`cgps_n_params` parameters, and each needs a state of
# its own. This chapter
# shows how {cite:t}`li2017learning` make GPS work at that size, and what the
# state and the observation are:
#
# - why the plain method is out of reach: the LQG backward pass costs time cubic
#   in the state dimension, measured here on growing problems and extrapolated to
#   the full state of the 48-48-10 net;
# - *convolutional GPS*: the block-diagonal, tied structure that splits the
#   problem into one small LQG problem per coordinate group (weight matrix or bias
#   vector), and the four groups of the paper's net;
# - the state features $\Phi$ and observation features $\Psi$, with our reading of
#   the paper's formulas where they are ambiguous, drawn along a momentum-SGD run
#   on MNIST and checked against a literal transcription;
# - the policy $\pi$, one LSTM of 128 cells per group, and its size;
# - a complete, tiny convolutional GPS run on a toy net, with the per-iteration
#   diagnostics of every group.
#
# The meta-training run that produces the learned optimizer of the later chapters
# uses the same code at full size.

# %% tags=["parameters"]
seed = 0  # seed of the momentum run, of the coordinates drawn, of the GPS run
horizon = 400  # T, steps of the momentum-SGD run (the paper's horizon)
dataset = "mnist"  # the training objective of the paper
n_in = 48  # input units (the projected dimension)
n_hidden = 48  # hidden units
batch_size = 64  # minibatch size B
lr = 0.1  # step size of the illustrative momentum-SGD run (and GPS teacher)
momentum = 0.9  # momentum of the illustrative run (and GPS teacher)
n_coords = 3  # W1 coordinates whose features are drawn
check_steps = [137, 399]  # steps at which the tracker is checked (< horizon)
timing_dims = [32, 64, 128, 256, 512, 1024]  # state dimensions timed
timing_steps = 8  # time steps of each timed backward pass
hidden_size = 128  # LSTM cells per group (the paper's 128)
gps_n_in = 8  # input units of the toy net of the GPS run
gps_n_hidden = 8  # hidden units of the toy net
gps_horizon = 100  # T of the GPS run
gps_samples = 5  # trajectories of psi per GPS iteration
gps_iterations = 2  # GPS iterations
gps_coords = 32  # coordinates per group stored per trajectory
gps_cost_subset = 2000  # training examples of the true cost during GPS
gps_policy_steps = 50  # Adam steps on pi per inner round and group
gps_pretrain_steps = 100  # Adam steps imitating psi0, per group

# %%
import time
import timeit

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display
from myst_nb import glue

from l2o import data, lqg
from l2o.features import FeatureConfig, StateTracker, literal_state
from l2o.gps import ConvolutionalGPS, GPSConfig
from l2o.policy import LSTMPolicy, PolicyConfig
from l2o.plotting import METHOD_STYLE, sci, sig, use_style

use_style()
torch.set_num_threads(1)  # float results depend on the thread count

# %%
# The typed configuration of the three parts of the chapter.
features = FeatureConfig()  # the paper's Phi and Psi, our reading (D1)
policy_cfg = PolicyConfig(hidden_size=hidden_size)
gps_cfg = GPSConfig(horizon=gps_horizon, num_samples=gps_samples,
                    num_iterations=gps_iterations, coords_per_group=gps_coords,
                    cost_subset=gps_cost_subset, policy_steps=gps_policy_steps,
                    pretrain_steps=gps_pretrain_steps, policy_batch=32,
                    eval_samples=2, seed=seed)
teacher = {"lr": lr, "momentum": momentum}
assert all(0 <= t < horizon for t in check_steps)
problem = data.make_problem(dataset, n_in, n_hidden, batch_size=batch_size,
                            dtype=torch.float64)
print(f"{problem.name} {problem.architecture}: {problem.dim} parameters, "
      f"state of one coordinate: {features.state_dim} dimensions")

# %% [markdown]
# ## Why the plain method does not scale
#
# In {doc}`03_gps` the state of the LQG problem was the state of one coordinate.
# Taken literally, the state $s_t$ of the optimizer is the state of *all*
# coordinates at once: for a net with $n$ parameters and $d_X$ features per
# coordinate, $s_t \in \mathbb{R}^{n d_X}$ and $a_t \in \mathbb{R}^{n}$. Every step
# of the backward pass {eq}`eq-gps-q-blocks` multiplies matrices of that size, so
#
# ```{math}
# :label: eq-cgps-cubic
# \text{time of one backward pass} \;\propto\; T\, \big(n\,(d_X + 1)\big)^3,
# \qquad
# \text{memory} \;\propto\; \big(n\,(d_X + 1)\big)^2 .
# ```
#
# The timing below runs `l2o.lqg.backward_pass` (one thread) on problems with
# growing state dimension and a scalar action, and measures the time per time
# step. It also times what convolutional GPS actually solves for the paper's net:
# four problems of dimension $d_X + 1 =$ {glue:text}`cgps_dX1`, over the full
# horizon.

# %%
def timing_problem(T, dX):
    """A stable, convex LQG problem of state dimension dX and one action."""
    A = 0.9 * np.broadcast_to(np.eye(dX), (T, dX, dX))
    Fm = np.concatenate([A, np.ones((T, dX, 1)) / np.sqrt(dX)], axis=2)
    dyn = lqg.LinearGaussianDynamics(Fm, np.zeros((T, dX)),
                                     np.zeros((T, dX, dX)), np.zeros(dX),
                                     np.eye(dX))
    C = np.broadcast_to(np.eye(dX + 1), (T, dX + 1, dX + 1))
    return dyn, lqg.QuadraticCost(C, np.zeros((T, dX + 1)))


def seconds_per_step(T, dX, repeat=3):
    """Best of `repeat` timings of one backward pass, divided by T."""
    dyn, cost = timing_problem(T, dX)
    run = lambda: lqg.backward_pass(dyn, cost, 1.0)  # noqa: E731
    return min(timeit.repeat(run, number=1, repeat=repeat)) / T


# %% tags=["nbval-ignore-output"]
dims = np.array(timing_dims)
per_step = np.array([seconds_per_step(timing_steps, d) for d in dims])
n_groups = len(problem.groups)
group_pass = seconds_per_step(horizon, features.state_dim) * horizon * n_groups
# the cubic law, anchored at the largest measured size (n = dX + 1)
n_meas = dims + 1
n_full = problem.dim * (features.state_dim + 1)
full_step = per_step[-1] * (n_full / n_meas[-1]) ** 3
full_pass = full_step * horizon
slope = np.polyfit(np.log(n_meas[-3:]), np.log(per_step[-3:]), 1)[0]

# %% tags=["nbval-ignore-output"]
year = 365.25 * 24 * 3600
glue("cgps_slope", sig(slope, 3), display=False)
glue("cgps_group_pass", sig(group_pass, 2), display=False)
glue("cgps_full_years", sig(full_pass / year, 2), display=False)
glue("cgps_ratio", sci(full_pass / group_pass), display=False)
glue("cgps_largest_step", sig(per_step[-1], 2), display=False)

# %%
glue("cgps_n_full", f"{n_full:,}", display=False)
glue("cgps_n_largest", int(n_meas[-1]), display=False)
glue("cgps_memory_gb", round(n_full**2 * 8 / 1e9), display=False)
glue("cgps_n_params", f"{problem.dim:,}", display=False)
glue("cgps_dX", features.state_dim, display=False)
glue("cgps_dX1", features.state_dim + 1, display=False)
glue("cgps_T", horizon, display=False)

# %% tags=["nbval-ignore-output"] mystnb={"figure": {"caption": "Time per time step of the LQG backward pass (`l2o.lqg.backward_pass`, one thread) against the dimension $n = d_X + 1$ of the state-action vector. Dots: measured; line: the cubic law through the largest measured size, extended to the full state of the 48-48-10 net (star, extrapolated). Square: one time step of convolutional GPS, the four groups of the 48-48-10 net, each of dimension $d_X + 1$.", "name": "fig-cgps-cubic"}}
fig, ax = plt.subplots(figsize=(6.4, 3.8))
grid = np.logspace(np.log10(n_meas[0]), np.log10(n_full), 50)
ax.loglog(grid, per_step[-1] * (grid / n_meas[-1]) ** 3, color="0.6",
          linestyle="--", label=r"cubic law $\propto n^3$")
ax.loglog(n_meas, per_step, "o", color="k", label="measured")
ax.loglog([features.state_dim + 1], [group_pass / horizon], "s",
          color=METHOD_STYLE["psd"]["color"],
          label=f"{n_groups} groups, n = {features.state_dim + 1} each "
                "(measured)")
ax.loglog([n_full], [full_step], "*", markersize=14, color="0.3",
          label=f"full state, n = {n_full:,} (extrapolated)")
ax.set_xlabel("state-action dimension $n$")
ax.set_ylabel("seconds per time step")
ax.set_title("LQG backward pass: cost per time step")
ax.legend(loc="upper left")
plt.show()

# %% [markdown]
# Over the largest measured sizes the time grows with exponent
# {glue:text}`cgps_slope` (cubic is 3; small sizes are dominated by
# per-call overhead, which is why the law is anchored at the largest one,
# $n =$ {glue:text}`cgps_n_largest`, at {glue:text}`cgps_largest_step` s per
# step). For the full state of the 48-48-10 net,
# $n =$ {glue:text}`cgps_n_params` $\times$ {glue:text}`cgps_dX1` $=$
# {glue:text}`cgps_n_full`, the cubic law predicts about
# **{glue:text}`cgps_full_years` years for one backward pass** of
# {glue:text}`cgps_T` steps, on one core, and a single $n \times n$ matrix in
# float64 would take {glue:text}`cgps_memory_gb` GB. This is an extrapolation
# over more than two orders of magnitude in $n$, not a measurement, but the
# conclusion does not depend on the constant, and the dual descent needs several
# backward passes per update and several updates per GPS iteration. Convolutional
# GPS solves the same horizon in {glue:text}`cgps_group_pass` s (measured, all
# four groups), a ratio of about {glue:text}`cgps_ratio`.
#
# ## What convolutional GPS ties together
#
# The parameters of a fully connected net can be permuted without changing the
# function: hidden units can be reordered, which permutes the rows of one weight
# matrix and the columns of the next. A good optimizer should therefore treat all
# entries of a weight matrix alike: if two coordinates have seen identical
# histories, it should take identical steps on them. {cite:t}`li2017learning`
# call such a set of coordinates a **coordinate group**: one weight matrix or one
# bias vector. They impose this prior on both policies of GPS.
#
# **Block structure.** Write $s_t^j \in \mathbb{R}^{d_X}$ for the part of the
# state that belongs to coordinate $j$ and $g(j)$ for its group. The fitted models
# are made block-diagonal, one block per coordinate, and the blocks are *tied*
# within a group:
#
# ```{math}
# :label: eq-cgps-blocks
# \begin{aligned}
# \tilde p(s^j_{t+1} \mid s_t, a_t) &= \mathcal{N}\big(A_{t,g(j)}\, s^j_t
#   + B_{t,g(j)}\, a^j_t + c_{t,g(j)},\; F_{t,g(j)}\big),\\
# \tilde c(s_t) &= \sum_j \tfrac12\, {s^j_t}^{\top} C_{t,g(j)}\, s^j_t
#   + d_{t,g(j)}^{\top} s^j_t,\\
# \tilde\pi(a^j_t \mid s_t) &= \mathcal{N}\big(\tilde K_{t,g(j)}\, s^j_t
#   + \tilde k_{t,g(j)},\; \tilde S_{t,g(j)}\big).
# \end{aligned}
# ```
#
# The multipliers $\lambda_{t,g}$ are tied within a group, and the Bregman weight
# becomes one $\nu_{t,g}$ per group. Then the $\psi$-step's Lagrangian
# {eq}`eq-gps-lagrangian` is a sum over coordinates of identical terms within a
# group, and its solution is block-diagonal with tied blocks:
#
# ```{math}
# :label: eq-cgps-psi
# \psi(a^j_t \mid s_t, t) = \mathcal{N}\big(K_{t,g(j)}\, s^j_t + k_{t,g(j)},\;
#   G_{t,g(j)}\big).
# ```
#
# One LQG problem of dimension $d_X + 1$ per group, whatever the size of the
# group, replaces the problem of dimension $n(d_X + 1)$. Within a group the
# coordinates are exchangeable samples of the same per-coordinate model, so the
# fits pool them (`l2o.dynamics`; GPS stores a random subset of each large group
# per trajectory). On the $\pi$ side, $\mu^\pi$ shares its parameters across the
# coordinates of a group and $\Sigma^\pi$ is block-diagonal with one tied value
# per group. The paper's net has four groups:

# %%
rows = ["| group | role | shape | coordinates | state dims if untied |",
        "|---|---|---|---|---|"]
for g in problem.groups:
    shape = " × ".join(map(str, g.shape))
    rows.append(f"| {g.name} | {g.role} | {shape} | {g.size:,} "
                f"| {g.size * features.state_dim:,} |")
rows.append(f"| all | | | {problem.dim:,} "
            f"| {problem.dim * features.state_dim:,} |")
display(Markdown("\n".join(rows)))

# %%
sizes = {g.name: g.size for g in problem.groups}
glue("cgps_W1", f"{sizes['W1']:,}", display=False)
glue("cgps_b2", sizes["b2"], display=False)

# %% [markdown]
# The groups are very unequal: {glue:text}`cgps_W1` coordinates in $W_1$,
# {glue:text}`cgps_b2` in $b_2$. Tying makes each of them one LQG problem of the
# same size, but the small groups also give few samples per time step for the
# fits, which is why the fitted dynamics use a prior (method notes §1.4).
#
# (cgps-features)=
# ## The features $\Phi$ and $\Psi$
#
# A coordinate's state is built from the history of iterates $x^{(i)}$, noisy
# objective values $\hat f(x^{(i)})$ and noisy gradients $\nabla \hat f(x^{(i)})$.
# Because single values are noisy, the state features use *average recent*
# values, means over the last (at most) three steps, for
# $v \in \{x, \nabla \hat f, \hat f\}$:
#
# ```{math}
# :label: eq-cgps-average
# \bar v(i) = \frac{1}{\min(i + 1, 3)} \sum_{k = \max(i - 2, 0)}^{i} v(k).
# ```
#
# With a stride of 5 steps and $i = 0, \dots, 24$, the three families of state
# features at step $t$ are, element-wise in the coordinates,
#
# ```{math}
# :label: eq-cgps-phi
# \begin{aligned}
# F_i(t) &= \frac{\bar f(t - 5i) - \bar f(t - 5(i+1))}{\bar f(t - 5(i+1))}
#   && \text{relative change of the objective},\\
# G_i^j(t) &= \frac{\bar g_j(t - 5i)}
#   {\big|\bar g_j\big(\max(t - 5(i+1),\, t \bmod 5)\big)\big| + 1}
#   && \text{normalized gradient},\\
# R_i^j(t) &= \frac{\big|\bar x_j\big(\max(t - 5(i+1),\, t \bmod 5 + 5)\big)
#   - \bar x_j\big(\max(t - 5(i+2),\, t \bmod 5)\big)\big|}
#   {\big|\bar x_j(t - 5i) - \bar x_j(t - 5(i+1))\big| + 0.1}
#   && \text{earlier over current change of } x,
# \end{aligned}
# ```
#
# where $\bar f = \overline{\hat f}$, $\bar g_j$ is coordinate $j$ of
# $\overline{\nabla \hat f}$, and $\bar x_j$ of $\bar x$. A term whose time index
# would be negative is zero. The state of coordinate $j$ collects them with the
# iterate itself:
#
# ```{math}
# :label: eq-cgps-state
# s_t^j = \big(x_j^{(t)},\; F_0, \dots, F_{24},\; G_0^j, \dots, G_{24}^j,\;
#   R_0^j, \dots, R_{24}^j\big) \in \mathbb{R}^{76} .
# ```
#
# $\Phi$ is used only during meta-training, by $\psi$ and the fitted models. The
# learned optimizer sees the cheaper observation features $\Psi$, built from the
# last three raw values only:
#
# ```{math}
# :label: eq-cgps-psi-features
# \Psi^j(t) = \bigg(\frac{\hat f(t) - \hat f(t-1)}{\hat f(t-1)},\;\;
#   \frac{\nabla_j \hat f(t)}{|\nabla_j \hat f(\max(t-1, 0))| + 1},\;\;
#   \frac{|x_j(\max(t-1, 1)) - x_j(\max(t-2, 0))|}{|x_j(t) - x_j(t-1)| + 0.1}\bigg),
# ```
#
# zero where $t - 1 < 0$, plus the LSTM's memory. Neither $\Phi$ nor $\Psi$
# contains the iterate's value as an input to $\pi$: the policy must work from
# any starting point.
#
# :::{admonition} Our reading of the feature formulas (method notes D1, D2)
# :class: note
#
# - **25 or 26 gradient terms.** The paper writes the gradient family with
#   $i = 0, \dots, 25$ and the other two with $i = 0, \dots, 24$. We read 25 as a
#   typo and use 25 terms, so $d_X = 1 + 3 \times 25 = 76$;
#   `FeatureConfig(n_grad_terms=26)` gives the literal reading ($d_X = 77$).
# - **Bars on both objective terms.** One copy of the paper averages only the
#   second term of $F_i$; another copy, and the paper's words "relative change in
#   the average recent objective value", average both. We average both;
#   `objective_form="first_raw"` is the other reading.
# - **Zero rule.** "Whenever a feature becomes undefined (i.e. when the time step
#   index becomes negative)": we zero a term when any time index that is *not*
#   protected by a $\max(\cdot)$ is negative. The $\max$ clamps keep the look-back
#   inside the history at the same phase modulo 5.
# - **Global features in every block.** $F_i$ does not depend on the coordinate,
#   yet each coordinate's block must be self-contained for the block-diagonal
#   models; the same values are copied into every $s_t^j$, and the fitted blocks
#   absorb the coupling (an approximation).
# - **The iterate $x_j^{(t)}$** is part of the state (the paper's state contains
#   $x^{(t)}$) so that the cost can be modelled; it is not part of $\Psi$.
# :::
#
# ### The features along a momentum-SGD run
#
# To see what these features look like, run momentum SGD (step size
# {glue:text}`cgps_lr`, momentum {glue:text}`cgps_momentum`: reasonable values,
# chosen for illustration, not tuned) on the paper's training objective for
# {glue:text}`cgps_T` steps, and feed the iterates, minibatch losses and
# minibatch gradients to `l2o.features.StateTracker`, which computes $\Phi$ and
# $\Psi$ incrementally from ring buffers of the averages. A few coordinates of
# $W_1$ are recorded.

# %%
gen = torch.Generator().manual_seed(seed)
coords = torch.randperm(problem.groups[0].size, generator=gen)[:n_coords]
coords, _ = torch.sort(coords + problem.groups[0].start)
tracker = StateTracker(1, problem.dim, features)
x, v = problem.init(gen, 1), torch.zeros(1, problem.dim, dtype=problem.dtype)
history = {"x": [], "f": [], "g": []}
states, observations = [], []
for t in range(horizon):
    batch = problem.sample_indices(gen, 1)
    f_hat, grad = problem.minibatch_loss_and_grad(x, batch)
    tracker.update(x, f_hat, grad)
    states.append(tracker.state()[0, coords].numpy().copy())
    observations.append(tracker.observation()[0, coords].numpy().copy())
    for key, val in zip("xfg", (x[0], f_hat[0], grad[0])):
        history[key].append(val.numpy().copy())
    v = momentum * v - grad  # the teacher of l2o.gps: a = lr * v
    x = x + lr * v
states, observations = np.array(states), np.array(observations)

# %% tags=["remove-cell"]
# The incremental tracker equals the literal, loop-by-loop transcription of the
# formulas (l2o.features.literal_state) at the chosen steps.
for t in check_steps:
    literal = literal_state(history["x"], history["f"], history["g"], t,
                            features)
    assert np.allclose(states[t], literal[coords.numpy()], rtol=1e-10,
                       atol=1e-12), t

# %%
with torch.no_grad():
    f_first = problem.true_loss(torch.as_tensor(history["x"][0])[None]).item()
    f_last = problem.true_loss(x).item()
glue("cgps_lr", lr, display=False)
glue("cgps_momentum", momentum, display=False)
glue("cgps_f_first", sig(f_first), display=False)
glue("cgps_f_last", sig(f_last), display=False)
glue("cgps_check_steps", ", ".join(map(str, check_steps)), display=False)
print(f"true objective: {f_first:.4f} at t = 0, {f_last:.4f} at t = {horizon}")

# %% mystnb={"figure": {"caption": "The state features $\\Phi$ along one momentum-SGD run (settings in the text) on MNIST 48-48-10, minibatch 64. (a) Three of the 25 global objective features $F_i$; each is zero until its look-back $5(i+1)$ is available. (b) The first gradient feature $G_0^j$ and (c) the first iterate feature $R_0^j$ for three coordinates $j$ of $W_1$. (d) The two per-coordinate observation features of $\\Psi^j$ (normalized gradient and step ratio) for the first of these coordinates.", "name": "fig-cgps-features"}}
lay, t_axis = features.layout, np.arange(horizon)
fig, axes = plt.subplots(2, 2, figsize=(8.0, 5.6), sharex=True)
(a, b), (c, d) = axes
for i in (0, 4, 24):
    a.plot(t_axis, states[:, 0, lay["objective"].start + i],
           label=f"$F_{{{i}}}$")
for k, j in enumerate(coords.tolist()):
    b.plot(t_axis, states[:, k, lay["gradient"].start], label=f"j = {j}")
    c.plot(t_axis, states[:, k, lay["iterate"].start], label=f"j = {j}")
for m, name in ((1, "normalized gradient"), (2, "step ratio")):
    d.plot(t_axis, observations[:, 0, m], label=name, linewidth=1.0)
titles = ["(a) objective $F_i$", "(b) gradient $G_0^j$", "(c) iterate $R_0^j$",
          rf"(d) observation $\Psi^j$, j = {coords[0].item()}"]
for ax, title in zip(axes.flat, titles):
    ax.set_title(title)
    ax.legend(fontsize=8)
for ax in (c, d):
    ax.set_xlabel("iteration $t$")
plt.show()

# %% [markdown]
# The run lowers the true objective from {glue:text}`cgps_f_first` to
# {glue:text}`cgps_f_last` ({numref}`fig-cgps-features`). Four things stand out.
# First, the zero rule: each $F_i$ switches on only once its look-back of
# $5(i+1)$ steps exists, so early in a run most of the state is zero. Second, the
# objective features are dominated by minibatch noise: even averaged over three
# minibatches, the loss changes by tens of percent between windows five steps
# apart (they are flat at first only because the net starts on the plateau of its
# small initialization). Third, the gradient features keep the sign of the
# averaged gradient, while the iterate features compare the size of an earlier
# change with the current one and carry no sign: any memory of direction beyond
# what the gradients show must live in the LSTM's state. Fourth, because of the
# offsets 1 and 0.1 in the denominators the features are not scale-invariant:
# with gradients and steps much smaller than those offsets, the normalized
# gradient is nearly the raw gradient and the step ratio is nearly ten times the
# previous step's size (panel d). Inputs, loss scaling and initialization must
# therefore be the same at meta-training and test time. {doc}`05_does_gps_learn`
# finds this the main obstacle to learning on a small objective and tests a
# deviation, gradient features divided by a running RMS of each coordinate's
# gradient (`FeatureConfig(grad_scale="rms")`); this chapter and the figure
# chapters use the paper's features. A hidden
# cell checks the tracker against `l2o.features.literal_state`, a slow
# transcription of {eq}`eq-cgps-phi` with plain loops over the whole history, at
# steps {glue:text}`cgps_check_steps`.
#
# ## The policy $\pi$: one LSTM per group
#
# The mean of $\pi$ is "a recurrent neural net fragment that corresponds to a
# single time step"; the paper's experiments use one layer of 128 LSTM cells
# {cite:p}`hochreiter1997long`. Applied coordinate-wise with parameters shared
# within a group $g$:
#
# ```{math}
# :label: eq-cgps-lstm
# z^j_t = \frac{\Psi^j(t) - m_g}{\sigma_g},
# \qquad
# (h^j_t, c^j_t) = \mathrm{LSTM}_g\big(z^j_t, (h^j_{t-1}, c^j_{t-1})\big),
# \qquad
# \mu^\pi(o^j_t) = \beta_g \big(w_g^{\top} h^j_t + b_g\big),
# ```
#
# with zero memory at $t = 0$. The standardization $(m_g, \sigma_g)$ is computed
# once, from the observations of the initial (teacher) rollouts, and then frozen;
# the output scale $\beta_g$ is the root-mean-square step of the teacher in that
# group, so that the network's raw output is of order one (method notes D5). We
# give each group its own LSTM and head (D4: the paper shares parameters *within*
# a group; matching groups by role, hidden weight, hidden bias, output weight,
# output bias, lets the same policy drive nets of other sizes).

# %%
def lstm_policy_parameters(n_inputs, hidden, n_groups):
    """Weights and biases of one LSTM layer and a linear head, per group."""
    lstm = 4 * hidden * (n_inputs + hidden) + 2 * 4 * hidden
    head = hidden + 1
    return n_groups * (lstm + head)


policy = LSTMPolicy(policy_cfg, generator=torch.Generator().manual_seed(seed))
n_policy = lstm_policy_parameters(policy_cfg.n_inputs, hidden_size,
                                  policy_cfg.n_groups)
print(f"pi: {policy_cfg.n_groups} LSTMs of {hidden_size} cells, "
      f"{n_policy:,} parameters")


# %% tags=["remove-cell"]
# the count from the formula is the package's count
assert n_policy == sum(p.numel() for p in policy.parameters())

# %%
macs = 4 * hidden_size * (policy_cfg.n_inputs + hidden_size) + hidden_size
glue("cgps_hidden", hidden_size, display=False)
glue("cgps_n_policy", f"{n_policy:,}", display=False)
glue("cgps_policy_ratio", round(n_policy / problem.dim), display=False)
glue("cgps_macs", f"{macs:,}", display=False)
glue("cgps_macs_step", sci(macs * problem.dim), display=False)

# %% [markdown]
# With {glue:text}`cgps_hidden` cells the policy has {glue:text}`cgps_n_policy`
# trainable parameters, {glue:text}`cgps_policy_ratio` times as many as the net it
# optimizes ({glue:text}`cgps_n_params`); each step costs about {glue:text}`cgps_macs`
# multiply-adds per coordinate, {glue:text}`cgps_macs_step` for the whole net.
#
# ## A tiny convolutional GPS run
#
# `l2o.gps.ConvolutionalGPS` puts the pieces of {doc}`03_gps` and this chapter
# together. One GPS iteration, for each group independently:
#
# 1. **sample** trajectories of $\psi$ on the training objective and record the
#    states, actions and observations of a random subset of each group's
#    coordinates, plus the true objective's gradient;
# 2. **fit** the dynamics (pooled over the group, a Normal-inverse-Wishart prior
#    from the neighbouring time steps, the exactly known row
#    $x_j^{(t+1)} = x_j^{(t)} + a_t^j$ imposed), the quadratic cost (by matching
#    its derivative in $x_j$ to the true gradient) and the linearization
#    $\tilde\pi$;
# 3. **adjust** the trust region {eq}`eq-gps-step-adjust`;
# 4. four **BADMM rounds**: $\theta$-step (Adam on
#    {eq}`eq-gps-theta-regression` by backpropagation through time), dual steps
#    {eq}`eq-gps-lambda` and {eq}`eq-gps-nu`, $\psi$-step (LQG with dual descent).
#
# Before the first iteration, $\psi_0$ is fitted to rollouts of a momentum-SGD
# teacher (here the run above's settings) and $\pi$ is pre-trained to imitate it.
# The toy problem below is a
# {glue:text}`cgps_toy_arch` net on the same data, with a short horizon and few
# samples, so that two iterations take well under a minute.

# %%
toy = data.make_problem(dataset, gps_n_in, gps_n_hidden, batch_size=batch_size)
gps = ConvolutionalGPS(toy, gps_cfg, features, policy_cfg, teacher)
start = time.perf_counter()
gps_history = gps.run()
gps_wall = time.perf_counter() - start
glue("cgps_toy_arch", toy.architecture, display=False)
glue("cgps_toy_dim", toy.dim, display=False)

# %% tags=["nbval-ignore-output"]
glue("cgps_gps_wall", round(gps_wall), display=False)

# %%
head = ("| it. | group | $\\psi$ cost | $\\pi$ cost | $\\eta$ | mean $\\nu$ "
        "| KL step / $\\epsilon$ | $D(\\tilde\\pi \\,\\|\\, \\psi)$ "
        "| step mult. | PD fail. |")
rows = [head, "|" + "---|" * 10]
for d in gps_history:
    for name, gd in d["groups"].items():
        rows.append(
            f"| {d['iteration']} | {name} | {d['psi_cost']:.4g} "
            f"| {d['pi_cost']:.4g} | {gd['eta']:.3g} | {gd['nu_mean']:.3g} "
            f"| {gd['kl_reached']:.3g} / {gd['kl_target']:.3g} "
            f"| {gd['kl_pi_psi']:.3g} | {gd['step_mult']:.3g} "
            f"| {gd['pd_failures']} |")
display(Markdown("\n".join(rows)))

# %%
teacher_cost = gps.init_info["teacher_cost"]
glue("cgps_teacher_cost", round(float(teacher_cost), 1), display=False)
glue("cgps_psi_cost", round(gps_history[-1]["psi_cost"], 1), display=False)
glue("cgps_pi_cost", round(gps_history[-1]["pi_cost"], 1), display=False)
glue("cgps_gps_T", gps_cfg.horizon, display=False)
glue("cgps_gps_N", gps_cfg.num_samples, display=False)
per_group = [gd for d in gps_history for gd in d["groups"].values()]
on_budget = [abs(gd["kl_reached"] - gd["kl_target"]) < 0.1 * gd["kl_target"]
             for gd in per_group]
glue("cgps_on_budget", int(sum(on_budget)), display=False)
glue("cgps_n_steps", len(per_group), display=False)
glue("cgps_pd_total", sum(gd["pd_failures"] for gd in per_group), display=False)
glue("cgps_rejected_total", sum(gd.get("rejected", 0) for gd in per_group),
     display=False)
print(f"teacher {teacher_cost:.4g}, last iteration: psi "
      f"{gps_history[-1]['psi_cost']:.4g}, pi {gps_history[-1]['pi_cost']:.4g}")

# %% [markdown]
# The table lists, for each iteration and group, the meta-loss
# $\sum_t f(x^{(t)})$ of the sampled $\psi$ trajectories and of deterministic
# rollouts of $\pi$ (both per iteration, so repeated over the groups), the
# trust-region multiplier $\eta$ found by dual descent, the mean Bregman weight
# $\nu_{t,g}$, the KL divergence of the last $\psi$-step against its budget
# $\epsilon$, the divergence between $\tilde\pi$ and $\psi$ that drives $\nu$, the
# step multiplier and the number of failed factorizations of $Q_{aa}$. On this
# toy problem ({glue:text}`cgps_toy_dim` parameters, $T =$
# {glue:text}`cgps_gps_T`, {glue:text}`cgps_gps_N` trajectories per iteration)
# the teacher's meta-loss is {glue:text}`cgps_teacher_cost:.1f`; after the last
# iteration $\psi$ scores {glue:text}`cgps_psi_cost:.1f` and $\pi$
# {glue:text}`cgps_pi_cost:.1f`. The run took {glue:text}`cgps_gps_wall` s. Two
# iterations show the machinery, not a learned optimizer: the numbers that matter
# are that the steps meet their budgets (the KL divergence is within 10% of
# $\epsilon$ in {glue:text}`cgps_on_budget` of {glue:text}`cgps_n_steps`
# group-iterations), that the step multiplier reacts to how well the refitted
# models confirm the predicted improvement, and how often the safeguards acted
# ({glue:text}`cgps_pd_total` failed factorizations of $Q_{aa}$,
# {glue:text}`cgps_rejected_total` rejected $\psi$-steps). The full meta-training run uses the same code with the
# paper's net, $T = 400$ and more samples and iterations.
#
# (cgps-gaps)=
# ## Where this book fills a gap
#
# :::{admonition} Choices the paper does not make, and where ours come from
# :class: important
#
# The paper fixes the block-diagonal, tied structure, the coordinate groups, the
# feature formulas (up to the ambiguities above) and the LSTM of 128 cells. The
# rest is ours (tags refer to the project's method notes):
#
# - **Features (D1, D2):** 25 gradient terms, averages on both objective terms,
#   the zero rule as stated above, global features copied into every block, the
#   iterate in the state ($d_X = 76$).
# - **Known dynamics row (D3):** $x_j^{(t+1)} = x_j^{(t)} + a^j_t$ is imposed
#   exactly, not fitted.
# - **Dynamics prior:** a Normal-inverse-Wishart prior built from the pooled
#   samples of the neighbouring time steps (`prior="window"`); a Gaussian mixture
#   prior as in {cite:t}`li2016learning` is available (`prior="gmm"`).
# - **Subsampling:** at most `coords_per_group` coordinates of each group are
#   stored per trajectory for the fits, and the true cost during GPS is computed
#   on a fixed subset of the training set (`cost_subset`).
# - **Cost model (D6):** the quadratic cost is fitted by matching its derivative
#   in $x_j$ to the true gradient, pooled over the group; an averaged Taylor
#   expansion would average gradients of random sign to nothing under tying.
# - **Policy (D4, D5):** one LSTM and head per group, matched by role; inputs
#   standardized with statistics frozen from the teacher's rollouts; output scaled
#   by the teacher's RMS step.
# - **Initialization (D7):** $\psi_0$ fitted to momentum-SGD rollouts with its
#   variance floored at $(0.3 \times \text{RMS step})^2$; $\pi$ pre-trained on
#   $\psi_0$ before the first BADMM round.
# - **Per-group trust regions:** $\eta$, $\epsilon$ and the step multiplier are
#   kept per group, like $\nu$; the groups are independent subproblems.
# :::
