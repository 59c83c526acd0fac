# %% [markdown]
# (formulation)=
# # Learning to optimize: the formulation
#
# ## Overview
#
# This chapter sets up the problem that the rest of the book solves. Following
# {cite:t}`li2016learning` and {cite:t}`li2017learning`, it
#
# - writes a generic iterative optimizer as one loop around an *update formula*
#   $\phi$ (Algorithm 1), first as an algorithm box and then as a short Python
#   function that accepts any $\phi$;
# - recasts the choice of $\phi$ as a policy in a partially observed Markov decision
#   process (POMDP), whose cost is the true objective and whose total cost over a run,
#   the *meta-loss*, is the area under the objective curve;
# - reads the hand-engineered optimizers as particular policies: SGD has no memory,
#   momentum and Adam carry a memory that plays the role of the policy's state;
# - measures all of this on the paper's training objective, a 48-48-10 network on
#   randomly projected MNIST: the curves of the seven tuned hand-engineered optimizers
#   and their meta-losses.
#
# The learned optimizer itself, and how guided policy search finds it, come in later
# chapters; how the seven baselines were tuned is the subject of {doc}`02_baselines`.

# %% tags=["parameters"]
seed = 0  # first evaluation seed; the runs use seed, seed + 1, ...
n_seeds = 5  # number of evaluation seeds (x0 and minibatch stream per seed)
horizon = 400  # T, steps per run
dataset = "mnist"  # the training objective of the paper
n_in = 48  # input units (the projected dimension)
n_hidden = 48  # hidden units
batch_size = 64  # minibatch size B
check_steps = 50  # steps of the from-scratch loop compared with the package
workers = 2  # processes for the runs (one torch thread each)
results_dir = "results/grid"  # run cache, relative to the repository root

# %%
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display
from myst_nb import glue

from l2o import data, experiments
from l2o.baselines import BASELINES, OPTIMIZERS, default_hparams
from l2o.experiments import EVAL_SEEDS, TUNING_SEEDS, figure_specs, run_grid
from l2o.plotting import METHOD_STYLE, plot_curves, use_style

use_style()
torch.set_num_threads(1)  # float results depend on the thread count

# %%
seeds = tuple(range(seed, seed + n_seeds))
assert not set(seeds) & set(TUNING_SEEDS), "evaluation seeds must not tune"
# One ExperimentSpec per (optimizer, seed): the typed, validated configuration.
specs = figure_specs(1, seeds=seeds, optimizers=BASELINES, datasets=[dataset],
                     n_in=n_in, n_hidden=n_hidden, batch_size=batch_size,
                     horizon=horizon)
cache = Path(results_dir)
cache = cache if cache.is_absolute() else experiments.ROOT / cache
print(f"{len(specs)} runs: {len(BASELINES)} optimizers x {n_seeds} seeds, "
      f"T = {horizon}")

# %% [markdown]
# ## Algorithm 1: an optimizer is its update formula
#
# Almost every unconstrained iterative optimizer has the same skeleton. Start from a
# random point, and repeatedly add a step that some rule computes from what has been
# seen so far:
#
# :::{admonition} Algorithm 1 (general structure of an optimizer)
# :class: tip
#
# **Input:** an objective $f$, an update formula $\phi$.
#
# 1. Draw $x^{(0)}$ from the initial distribution $\mathcal{D}$.
# 2. For $i = 1, 2, \dots$:
#    1. compute the step $\Delta x \leftarrow \phi\big(f, \{x^{(0)}, \dots, x^{(i-1)}\}\big)$;
#    2. if a stopping condition holds, return $x^{(i-1)}$;
#    3. otherwise move: $x^{(i)} \leftarrow x^{(i-1)} + \Delta x$.
# :::
#
# Only $\phi$ distinguishes one method from another
# ({eq}`eq-update-formula`); in practice $\phi$ sees $f$ only through
# values and gradients, here noisy ones, computed on a fresh minibatch at each step.
#
# ```{math}
# :label: eq-update-formula
# x^{(i)} = x^{(i-1)} + \phi\big(f, \{x^{(0)}, \dots, x^{(i-1)}\}\big),
# \qquad i = 1, \dots, T .
# ```
#
# In code, with a fixed number of steps $T$ as the stopping condition, the whole
# algorithm is a short loop. `grad(i, x)` is the oracle of step $i$: the gradient
# $\nabla \hat f_i(x)$ on that step's minibatch.

# %%
def optimize(phi, grad, x0, horizon):
    """Algorithm 1 with T = horizon steps; returns [x0, x1, ..., xT]."""
    xs = [x0]
    for i in range(1, horizon + 1):
        oracle = lambda x, i=i: grad(i, x)  # phi sees f only via this oracle
        xs.append(xs[-1] + phi(oracle, xs))
    return xs


# %% [markdown]
# Two update formulas, written as factories that return $\phi$. SGD looks at the
# gradient at the current iterate only. Heavy-ball momentum keeps a running sum of
# past gradients, a variable `v` that lives between calls: its *memory*.

# %%
def sgd(lr):
    return lambda oracle, xs: -lr * oracle(xs[-1])


def momentum(lr, beta):
    v = None

    def phi(oracle, xs):
        nonlocal v
        g = oracle(xs[-1])
        v = g if v is None else beta * v + g
        return -lr * v

    return phi


# %% [markdown]
# Run on the paper's objective (set up in {ref}`formulation-objective` below), the
# loop with the tuned momentum hyperparameters retraces the package's runs for the
# same seed: same $x^{(0)}$, same minibatches, and the same objective values up to
# floating-point rounding (a hidden cell checks the first
# {glue:text}`check_steps` steps of every evaluation seed against the runs of
# `l2o.experiments`, which drive `torch.optim.SGD`).

# %% [markdown]
# ## Optimization as a partially observed decision process
#
# {cite:t}`li2016learning` observed that running Algorithm 1 is acting in a Markov
# decision process: the update formula is a policy, and learning an optimizer is
# policy search. {cite:t}`li2017learning` use an undiscounted, finite-horizon POMDP
# with continuous states, observations and actions,
# $(\mathcal{S}, \mathcal{O}, \mathcal{A}, p_i, p, p_o, c, T)$. Its parts, for an
# optimizer, are:
#
# ```{math}
# :label: eq-pomdp
# \begin{aligned}
# s_t &= \big(x^{(t)}, \Phi(\cdot)\big)
#   && \text{state: iterate and features of the history of } x,
#      \nabla \hat f, \hat f,\\
# a_t &= \Delta x
#   && \text{action: the step},\\
# o_t &= \big(\Psi(\cdot), h_{t-1}\big)
#   && \text{observation: recent features and the policy's memory},\\
# c(s_t) &= f\big(x^{(t)}\big)
#   && \text{cost: the true objective},\\
# a_t &\sim \pi(a_t \mid o_t, t)
#   && \text{policy: the update formula } \phi .
# \end{aligned}
# ```
#
# The initial density $p_i$ describes how the first iterate, gradient and objective
# value are distributed (so it contains $\mathcal{D}$); the transition density $p$
# says how gradients and objective values change after a step, that is, the local
# geometry of the objectives; $p_o$ produces the observation. None of these is known
# to the learner. The policy is sought to minimize the expected total cost of a
# trajectory,
#
# ```{math}
# :label: eq-policy-search
# \pi^\star = \arg\min_{\pi} \;
#   \mathbb{E}_{s_0, a_0, \dots, s_T}\Big[\sum_{t=0}^{T} c(s_t)\Big].
# ```
#
# **Why partially observed.** The observation $o_t$ leaves out the iterate $x^{(t)}$
# itself and the long history features $\Phi$: it holds only the cheaper features
# $\Psi$ of the last few steps, plus $h_{t-1}$, the previous memory state of the
# recurrent network that implements the policy. Dropping $x^{(t)}$ is deliberate: an
# optimizer must work wherever it starts and on objectives it has never seen, so it
# should not act on *where* it is, only on how the objective behaves nearby. The cost
# is not observed either: the policy sees minibatch values $\hat f$ and gradients
# $\nabla \hat f$, while the cost is the full training loss $f$. The memory
# $h_{t-1}$ is a statistic of past observations that is learned with the policy; it
# replaces what the policy cannot see.
#
# (formulation-meta-loss)=
# ### The meta-loss is the area under the curve
#
# With the cost {eq}`eq-pomdp`, the total cost of one run is the paper's meta-loss,
#
# ```{math}
# :label: eq-meta-loss
# \mathcal{L}\big(f, x^{(1)}, \dots, x^{(T)}\big) = \sum_{t=1}^{T} f\big(x^{(t)}\big),
# ```
#
# the area under the curve of the true objective against the iteration. It rewards
# getting low *early* and *staying* low: a method that reaches the same final value
# later, or oscillates on the way, pays for every step spent above the curve of a
# faster one. The learned optimizer is trained to minimize its expectation over the
# objectives $f \sim \mathcal{F}$ and starting points $x^{(0)} \sim \mathcal{D}$, and
# {doc}`02_baselines` tunes the hand-engineered methods by the same number.
#
# ### Hand-engineered optimizers are particular policies
#
# Each classical method is a deterministic policy, with $g_t = \nabla \hat f(x^{(t)})$
# the minibatch gradient and $\alpha$ the learning rate. Plain stochastic gradient
# descent {cite:p}`robbins1951stochastic` is *memoryless*: its action depends on the
# current observation only,
#
# ```{math}
# :label: eq-policy-sgd
# a_t = -\alpha\, g_t .
# ```
#
# Heavy-ball momentum {cite:p}`polyak1964some` keeps one vector of memory,
# $m_t$, and acts on it:
#
# ```{math}
# :label: eq-policy-momentum
# m_t = \beta\, m_{t-1} + g_t, \qquad a_t = -\alpha\, m_t, \qquad m_{-1} = 0 .
# ```
#
# Adam {cite:p}`kingma2014adam` keeps two, running averages of the gradient and of
# its elementwise square, and a step counter for their bias correction:
#
# ```{math}
# :label: eq-policy-adam
# \begin{aligned}
# m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, &
# v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^{2},\\
# a_t &= -\alpha\, \frac{m_t / (1 - \beta_1^{t+1})}
#         {\sqrt{v_t / (1 - \beta_2^{t+1})} + \epsilon} .
# \end{aligned}
# ```
#
# In POMDP terms the memory $(m_t)$ or $(m_t, v_t, t)$ *is* the policy's internal
# state $h_t$: a hand-designed summary of past gradients, updated by a fixed rule.
# AdaGrad {cite:p}`duchi2011adaptive` and RMSprop {cite:p}`tieleman2012rmsprop` are
# the same with other averages; conjugate gradient {cite:p}`fletcher1964function`
# remembers its last direction and gradient norm, L-BFGS {cite:p}`liu1989limited`
# its last few pairs of steps and gradient changes. The learned optimizer replaces
# both the fixed update rule of the memory and the fixed map from memory to step by
# an LSTM whose weights are learned; $\Psi$ supplies what it reads at each step.

# %% [markdown]
# (formulation-objective)=
# ## The training objective: MNIST, 48-48-10
#
# The paper meta-trains on a single objective, and every method in the comparison
# is tuned on it: the training loss of a two-layer network on MNIST
# {cite:p}`lecun1998gradient`, with inputs reduced by a random projection.

# %%
prepared = data.prepare(dataset, n_in)
problem = data.make_problem(dataset, n_in, n_hidden, batch_size=batch_size)
print(prepared.describe())
print(problem)

# %% [markdown]
# Concretely (method-notes D9, D10):
#
# - **Inputs.** Each image is scaled to $[0, 1]$, flattened, multiplied by a fixed
#   Gaussian random matrix down to {glue:text}`n_in` dimensions and standardised so
#   that every dimension has zero mean and unit variance over the training set. The
#   line printed above records exactly which data were used.
# - **Objective.** The parameters $x \in \mathbb{R}^{n}$, $n =$
#   {glue:text}`n_params`, are the four blocks $W_1, b_1, W_2, b_2$ of a network with
#   {glue:text}`n_hidden` ReLU hidden units and {glue:text}`n_classes` outputs. The
#   true objective $f(x)$ is the mean softmax cross-entropy over all
#   {glue:text}`n_examples` training examples; an optimizer only sees $\hat f$ and
#   $\nabla \hat f$ on minibatches of {glue:text}`batch_size` examples drawn uniformly
#   with replacement, a fresh one per step.
# - **Initial iterates** $x^{(0)} \sim \mathcal{D}$ (method-notes D8): weights
#   independent $\mathcal{N}(0, \sigma^2)$ with $\sigma =$ {glue:text}`init_std`,
#   biases zero. The outputs then start close to uniform, so $f(x^{(0)})$ is close to
#   $\ln c =$ {glue:text}`log_classes:.3f` for $c$ classes (measured median over the
#   seeds: {glue:text}`f0_median:.3f`).
# - **Seeds.** A seed fixes both $x^{(0)}$ and the stream of minibatches, and all
#   optimizers share them. The runs below use the {glue:text}`n_seeds` evaluation
#   seeds, which are disjoint from the seeds used for tuning
#   ({glue:text}`tuning_seeds`).

# %%
with torch.no_grad():
    f0 = problem.true_loss(torch.stack(
        [experiments.initial_iterate(problem, s) for s in seeds]))
glue("n_in", n_in, display=False)
glue("n_hidden", n_hidden, display=False)
glue("n_params", problem.dim, display=False)
glue("n_classes", problem.n_classes, display=False)
glue("n_examples", prepared.x.shape[0], display=False)
glue("batch_size", batch_size, display=False)
glue("init_std", problem.init_std, display=False)
glue("log_classes", round(math.log(problem.n_classes), 4), display=False)
glue("f0_median", round(float(f0.median()), 4), display=False)
glue("n_seeds", n_seeds, display=False)
glue("tuning_seeds", ", ".join(map(str, TUNING_SEEDS)), display=False)
glue("check_steps", min(check_steps, horizon), display=False)

# %% [markdown]
# ## The seven tuned baselines on the training objective
#
# The runs come from the experiment cache of `l2o.experiments.run_grid`: a run that
# is already stored for the same configuration (including the tuned hyperparameters)
# is loaded, anything else is computed now. Later chapters read the same cache.

# %%
runs = run_grid(specs, cache, workers=workers, progress=False)
by_method = {m: [r for r in runs if r.optimizer == m] for m in BASELINES}
steps = runs[0].evaluated_steps
print(f"{len(runs)} runs, {sum(r.diverged for r in runs)} diverged")

# %% tags=["remove-cell"]
# Algorithm 1 written from scratch (above) retraces the package's momentum runs.
hp = default_hparams("momentum")
k = min(check_steps, horizon)
for r in by_method["momentum"]:
    stream = experiments.minibatch_stream(problem, r.seed, k)
    grad = lambda i, x: problem.minibatch_loss_and_grad(x, stream[i - 1])[1]
    x0 = experiments.initial_iterate(problem, r.seed)
    xs = optimize(momentum(hp["lr"], hp["momentum"]), grad, x0, k)
    with torch.no_grad():
        ours = problem.true_loss(torch.stack(xs)).double().numpy()
    assert np.allclose(ours, r.true_loss[: k + 1], rtol=1e-4, atol=1e-6), r.seed

# %% [markdown]
# {numref}`fig-formulation-curves` shows the true objective along the runs of the
# seven optimizers, each with the hyperparameters chosen by the tuning of
# {doc}`02_baselines`.

# %% mystnb={"figure": {"caption": "True objective $f(x^{(t)})$ (full training loss) of the seven tuned hand-engineered optimizers on MNIST, 48-48-10 net, minibatch 64, over the evaluation seeds: median (line) and interquartile band.", "name": "fig-formulation-curves"}}
fig, ax = plt.subplots(figsize=(6.4, 4.0))
summaries = plot_curves(ax, by_method, steps=steps)
ax.set_title(f"{prepared.display_name}, {problem.architecture}, "
             f"B = {batch_size}")
plt.show()

# %% [markdown]
# The meta-loss {eq}`eq-meta-loss` turns each curve into one number.
# {numref}`fig-formulation-area` shades it for the best and the worst of the seven
# (by mean meta-loss; the worst among those that never diverged), on their median
# curves: the value $f(x^{(t)})$ fills the column between iterations $t - 1$ and
# $t$, so the shaded area is exactly the sum {eq}`eq-meta-loss`.

# %%
rows = experiments.summary_table(runs)
finite = [r for r in rows if r["n_diverged"] == 0]
best, worst = rows[0], finite[-1]  # worst: among the runs without divergence
label = {m: METHOD_STYLE[m]["label"] for m in BASELINES}


def fmt_hparams(hparams):
    def one(k, v):
        return f"{k} = {v:g}" if isinstance(v, (int, float)) else f"{k} = {v}"

    return ", ".join(one(k, v) for k, v in hparams.items())


print(f"best: {best['optimizer']} ({best['meta_loss_mean']:.2f}), "
      f"worst: {worst['optimizer']} ({worst['meta_loss_mean']:.2f})")

# %% mystnb={"figure": {"caption": "The meta-loss is the area under the curve of the true objective: shaded here for the best of the seven tuned optimizers and for the worst of those without a diverged run (median curves over the evaluation seeds).", "name": "fig-formulation-area"}}
fig, ax = plt.subplots(figsize=(6.4, 3.6))
for row in (worst, best):
    m, s = row["optimizer"], summaries[row["optimizer"]]
    t, f = s.steps[1:], s.median[1:]  # f(x_t) fills the column (t - 1, t]
    ax.plot(t, f, drawstyle="steps-pre", color=METHOD_STYLE[m]["color"],
            label=f"{label[m]}: area {f.sum():.1f}")
    ax.fill_between(t, 0, f, step="pre", alpha=0.2, linewidth=0,
                    color=METHOD_STYLE[m]["color"])
ax.set_xlabel("iteration")
ax.set_ylabel("true objective $f(x)$")
ax.set_ylim(0, None)
ax.legend()
plt.show()

# %% [markdown]
# The table lists every optimizer's meta-loss on MNIST 48-48-10 (minibatch
# {glue:text}`batch_size`, $T =$ {glue:text}`horizon`): mean and sample standard
# deviation over the {glue:text}`n_seeds` evaluation seeds, with the final
# objective value $f(x^{(T)})$. A run that diverges has meta-loss $+\infty$ (the
# rule is in `l2o.experiments`: a non-finite value, or $f$ above a thousand times
# $f(x^{(0)})$); the rank counts it so, while the mean and final value are taken
# over the seeds that did not diverge, and the last column counts the divergences.

# %% mystnb={"markdown_format": "myst"}
lines = ["| rank | optimizer | tuned hyperparameters | meta-loss | final $f$ "
         "| diverged |", "|---|---|---|---|---|---|"]
for r in rows:
    m = r["optimizer"]
    ml = (f"{r['meta_loss_mean']:.2f} ± {r['meta_loss_std']:.2f}"
          if math.isfinite(r["meta_loss_mean"]) else "diverged")
    fin = f"{r['final_mean']:.4f}" if math.isfinite(r["final_mean"]) else "–"
    hp = fmt_hparams(by_method[m][0].hparams)
    lines.append(f"| {r['rank']} | {label[m]} | {hp} | {ml} | {fin} "
                 f"| {r['n_diverged']}/{r['n_seeds']} |")
display(Markdown("\n".join(lines)))

# %%
glue("horizon", horizon, display=False)
glue("best_label", label[best["optimizer"]], display=False)
glue("best_meta_loss", round(best["meta_loss_mean"], 2), display=False)
glue("best_final", round(best["final_mean"], 4), display=False)
glue("worst_label", label[worst["optimizer"]], display=False)
glue("worst_meta_loss", round(worst["meta_loss_mean"], 2), display=False)
still = horizon * float(f0.median())  # the meta-loss of never moving
glue("no_progress", round(still, 1), display=False)
worst_pct = 100 * worst["meta_loss_mean"] / still
glue("worst_pct", round(worst_pct, 1), display=False)
n_div = {m: sum(r.diverged for r in by_method[m]) for m in BASELINES}
glue("diverged_text", ", ".join(f"{label[m]} on {k} of {n_seeds} seeds"
                                for m, k in n_div.items() if k) or "none",
     display=False)

# %% [markdown]
# On this objective the best of the seven is **{glue:text}`best_label`**, with a
# meta-loss of {glue:text}`best_meta_loss:.2f` over $T =$ {glue:text}`horizon` steps
# (final objective {glue:text}`best_final:.3f`); the worst of those that never
# diverged is {glue:text}`worst_label`, at {glue:text}`worst_meta_loss:.2f`, which is
# {glue:text}`worst_pct:.1f` % of the meta-loss of a method that never moves,
# $T f(x^{(0)}) \approx$ {glue:text}`no_progress:.1f`.
# Divergences: {glue:text}`diverged_text`. Because every method was tuned on
# exactly this objective,
# these are the numbers a learned optimizer has to beat on its own training task;
# the later chapters ask what remains of the ranking on other datasets and
# architectures.
