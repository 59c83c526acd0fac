# %% [markdown]
# (baselines)=
# # The hand-engineered baselines and their tuning
#
# ## Overview
#
# {cite:t}`li2017learning` compare their learned optimizer with seven hand-engineered
# ones: stochastic gradient descent, momentum, conjugate gradient, L-BFGS, Adam,
# AdaGrad and RMSprop, "tuned on the training objective function". This chapter
#
# - states which variant of each method the reproduction runs, and flags the two
#   whose reading is ours (conjugate gradient and L-BFGS without line search);
# - describes the tuning protocol: a grid search on the training objective (MNIST,
#   48-48-10 net), scored by the meta-loss of {doc}`01_formulation`, done once and
#   then frozen for every other experiment;
# - shows the whole grid, the chosen values and the provenance of the tuning run;
# - runs the tuned baselines on the training objective and on the three test
#   datasets of the paper's first figure (faces, CIFAR-10, CIFAR-100) with the same
#   48-48 net, minibatch 64 and horizon, and tabulates their meta-losses.
#
# These are the reference curves that the learned optimizers of later chapters are
# compared with; the runs are stored in the experiment cache and reused there.

# %% tags=["parameters"]
seed = 0  # first evaluation seed; the runs use seed, seed + 1, ...
n_seeds = 5  # number of evaluation seeds
horizon = 400  # T, steps per run
datasets = ["mnist", "faces", "cifar10", "cifar100"]  # MNIST first (training)
n_in = 48  # input units (the projected dimension)
n_hidden = 48  # hidden units
batch_size = 64  # minibatch size B
workers = 2  # processes for the runs (one torch thread each)
results_dir = "results/grid"  # run cache, relative to the repository root

# %%
import itertools
import json
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display
from matplotlib.lines import Line2D
from myst_nb import glue

# %%
from l2o import baselines, data, experiments
from l2o.baselines import BASELINES, default_hparams
from l2o.experiments import TUNING_SEEDS, figure_specs, run_grid, summary_table
from l2o.plotting import METHOD_STYLE, figure_panels, use_style

use_style()
torch.set_num_threads(1)  # float results depend on the thread count

# %%
seeds = tuple(range(seed, seed + n_seeds))
assert not set(seeds) & set(TUNING_SEEDS), "evaluation seeds must not tune"
# One ExperimentSpec per (dataset, optimizer, seed): typed, validated settings.
specs = figure_specs(1, seeds=seeds, optimizers=BASELINES, datasets=datasets,
                     n_in=n_in, n_hidden=n_hidden, batch_size=batch_size,
                     horizon=horizon)
cache = Path(results_dir)
cache = cache if cache.is_absolute() else experiments.ROOT / cache
# The tuning files are the ones whose chosen.json the package reads.
chosen_path = Path(os.environ.get(baselines.ENV_TUNED)
                   or baselines.TUNED_HPARAMS_PATH)
tuning_dir = chosen_path.parent
print(f"{len(specs)} runs: {len(datasets)} datasets x {len(BASELINES)} "
      f"optimizers x {n_seeds} seeds, T = {horizon}")

# %% [markdown]
# ## The seven methods
#
# All seven see the same thing at step $t$: the minibatch gradient
# $g_t = \nabla \hat f(x^{(t)})$ (and the minibatch loss). Their updates, with the
# hyperparameters that the tuning searches over in bold:
#
# | method | step $\Delta x = x^{(t+1)} - x^{(t)}$ | memory (policy state) |
# |---|---|---|
# | SGD {cite:p}`robbins1951stochastic` | $-\boldsymbol{\alpha}\, g_t$ | none |
# | momentum {cite:p}`polyak1964some` | $-\boldsymbol{\alpha}\, m_t$, $\ m_t = \boldsymbol{\beta} m_{t-1} + g_t$ | $m_t$ |
# | conjugate gradient {cite:p}`fletcher1964function` | $\boldsymbol{\alpha}\, d_t$, $\ d_t = -g_t + \frac{\lVert g_t\rVert^2}{\lVert g_{t-1}\rVert^2} d_{t-1}$ | $d_{t-1}$, $\lVert g_{t-1}\rVert^2$ |
# | L-BFGS {cite:p}`liu1989limited` | $-\boldsymbol{\alpha}\, H_t g_t$ | last 10 pairs $(s_k, y_k)$ |
# | Adam {cite:p}`kingma2014adam` | $-\boldsymbol{\alpha}\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)$ | $m_t, v_t, t$ |
# | AdaGrad {cite:p}`duchi2011adaptive` | $-\boldsymbol{\alpha}\, g_t / (\sqrt{G_t} + \epsilon)$, $\ G_t = \sum_{k \le t} g_k^2$ | $G_t$ |
# | RMSprop {cite:p}`tieleman2012rmsprop` | $-\boldsymbol{\alpha}\, g_t / (\sqrt{r_t} + \epsilon)$, $\ r_t = \rho r_{t-1} + (1 - \rho) g_t^2$ | $r_t$ |
#
# Squares and square roots act elementwise. SGD, momentum, Adam, AdaGrad and
# RMSprop are `torch.optim` classes with their default constants
# ($\beta_1, \beta_2 = 0.9, 0.999$ for Adam, $\rho = 0.99$ for RMSprop,
# $\epsilon = 10^{-8}$ or $10^{-10}$); only the learning rate $\alpha$, and for
# momentum also $\beta$, are tuned. In L-BFGS, $H_t$ is the inverse-Hessian
# estimate of the two-loop recursion over the stored pairs
# $s_k = x^{(k)} - x^{(k-1)}$, $y_k = g_k - g_{k-1}$ (a pair is dropped unless
# $y_k^\top s_k > 0$), started from $\gamma I$ with
# $\gamma = s^\top y / y^\top y$ of the newest pair.
#
# :::{admonition} The reproduction's reading: CG and L-BFGS without line search
# :class: warning
#
# The paper names "conjugate gradient" and "L-BFGS" without saying how they choose
# their step length. Both are usually run with a line search, which needs repeated
# evaluations of one fixed objective; here every step sees a new minibatch. The
# reproduction therefore runs both with a **fixed, tuned step** $\alpha$ and **no
# line search** (method-notes D11): for CG this is the Fletcher–Reeves variant with
# a fixed step that the authors compared against in {cite:t}`li2016learning`; for
# L-BFGS (history 10) it is our own, inferred choice. A line search on the same minibatch is the
# obvious alternative; it is not what is run here. Without exact line searches the
# CG directions are not conjugate, and with minibatch gradients, whose norms do not
# shrink, the Fletcher–Reeves recursion lets the effective step grow: fixed-step CG
# only survives $T$ steps with a small $\alpha$ (the grid below shows where it
# stops).
# :::

# %% [markdown]
# ## Tuning protocol
#
# Every configuration $h$ of an optimizer's grid $\mathcal{H}$ is run from each
# tuning seed $s \in S$ for $T$ steps on the training objective and scored by its
# meta-loss averaged over the seeds,
#
# ```{math}
# :label: eq-tuning-score
# J(h) = \frac{1}{|S|} \sum_{s \in S} \sum_{t=1}^{T} f\big(x^{(t)}_{h,s}\big),
# \qquad h^\star = \arg\min_{h \in \mathcal{H}} J(h),
# ```
#
# where a configuration with any diverged seed scores $J(h) = +\infty$ (divergence:
# a non-finite value, or $f$ above a thousand times $f(x^{(0)})$; ties go to the
# first configuration in grid order). The tuning seeds are not the evaluation seeds
# used for every figure, so no plotted run took part in choosing its own
# hyperparameters. Following the paper, the tuning is done **once**, on MNIST with
# the 48-48-10 net, minibatch 64 and $T = 400$, and the chosen values are then
# **frozen**: every other dataset, architecture, minibatch size and horizon in the
# book uses them unchanged, just as the learned optimizers are meta-trained on this
# single objective and then only tested elsewhere. The command is
# `python -m l2o.experiments tune`; it writes the grid, the chosen values and a
# provenance record to `results/tuning/`.

# %%
def read_json(name):
    with open(tuning_dir / name) as f:
        return json.load(f)


grid, chosen, prov = (read_json(f"{n}.json")
                      for n in ("grid", "chosen", "provenance"))
for name in BASELINES:  # the runs below use exactly the chosen values
    assert default_hparams(name) == {**baselines.OPTIMIZERS[name].defaults,
                                     **chosen["hparams"][name]}, name
n_configs = {m: len(grid["optimizers"][m]) for m in BASELINES}
obj = grid["objective"]
print(f"tuned on {obj['name']} {obj['architecture']}, B = {obj['batch_size']}, "
      f"T = {grid['horizon']}, seeds {grid['seeds']}: "
      f"{sum(n_configs.values())} configurations")

# %%
def divergence_text(name):
    """Where in its grid an optimizer diverged, as a phrase for the prose."""
    lrs = [r["hparams"]["lr"] for r in grid["optimizers"][name]
           if r["n_diverged"] > 0]
    if not lrs:
        return "did not diverge at any step size of its grid"
    return f"diverged at α = {', '.join(f'{v:g}' for v in sorted(lrs))}"


edges = [f"{m} ({', '.join(chosen['details'][m]['at_grid_edge'])})"
         for m in BASELINES if chosen["details"][m].get("at_grid_edge")]
n_div_configs = sum(r["n_diverged"] > 0 for m in BASELINES
                    for r in grid["optimizers"][m])
f0_tune = math.log(grid["objective"]["n_classes"])  # f(x0) is close to ln c

# %%
glue("n_configs", sum(n_configs.values()), display=False)
glue("n_tuning_seeds", len(grid["seeds"]), display=False)
glue("n_tuning_runs", sum(n_configs.values()) * len(grid["seeds"]),
     display=False)
glue("tuning_seeds", ", ".join(map(str, grid["seeds"])), display=False)
glue("tuning_horizon", grid["horizon"], display=False)
glue("n_div_configs", n_div_configs, display=False)
glue("edges", "; ".join(edges) if edges else "none", display=False)
glue("cg_lr", f"{chosen['hparams']['cg']['lr']:g}", display=False)
glue("cg_div", divergence_text("cg"), display=False)
glue("lbfgs_div", divergence_text("lbfgs"), display=False)
glue("lbfgs_lr", f"{chosen['hparams']['lbfgs']['lr']:g}", display=False)
glue("no_progress", round(grid["horizon"] * f0_tune, 1), display=False)
cg_pct = 100 * chosen["details"]["cg"]["mean_meta_loss"] / (
    grid["horizon"] * f0_tune)
glue("cg_pct", round(cg_pct, 1), display=False)

# %% [markdown]
# ## The whole grid
#
# {numref}`fig-baselines-grid` shows every configuration that was tried: the mean
# meta-loss over the {glue:text}`n_tuning_seeds` tuning seeds
# ({glue:text}`tuning_seeds`) against the learning rate, one panel per method. For
# momentum the grid is two-dimensional, learning rate × $\beta$, drawn as one line
# per $\beta$. A configuration in which some seed diverged has no finite score; it
# is marked with a cross at the top of its panel. The circled point is the chosen
# one. The dotted line is the meta-loss of not moving at all, $T \ln c =$
# {glue:text}`no_progress`: anything above it did worse than standing still.

# %%
def grid_panel(ax, name, rows, y_div):
    color = METHOD_STYLE[name]["color"]
    betas = sorted({r["hparams"].get("momentum", 0.0) for r in rows})
    for beta, ls in zip(betas, itertools.cycle(["-", "--", "-.", ":"])):
        sub = [r for r in rows if r["hparams"].get("momentum", 0.0) == beta]
        lr = np.array([r["hparams"]["lr"] for r in sub])
        ml = np.array([r["mean_meta_loss"] or np.nan for r in sub])  # null: inf
        div = np.array([r["n_diverged"] > 0 for r in sub])
        lab = f"momentum β = {beta:g}" if len(betas) > 1 else None
        ax.plot(lr[~div], ml[~div], marker="o", ms=4, ls=ls, color=color,
                label=lab)
        ax.plot(lr[div], np.full(div.sum(), y_div), "x", ms=8, mew=2,
                color=color)
    ax.set(xscale="log", yscale="log", title=METHOD_STYLE[name]["label"])


# %%
def legend_panel(ax, momentum_ax):
    handles, labels = momentum_ax.get_legend_handles_labels()
    marks = [Line2D([], [], ls="none", marker="x", ms=8, mew=2, color="0.3"),
             Line2D([], [], ls="none", marker="o", ms=12, mfc="none",
                    mec="black"),
             Line2D([], [], ls=":", color="0.4")]
    ax.legend(handles + marks, labels + ["a tuning seed diverged", "chosen",
                                         r"standing still, $T \ln c$"],
              loc="center")
    ax.axis("off")

# %% mystnb={"figure": {"caption": "The tuning grid on MNIST 48-48-10 (minibatch 64): mean meta-loss over the tuning seeds against the learning rate (log-log). Crosses at the top: a tuning seed diverged. Circle: the chosen configuration. Dotted: the meta-loss of standing still. Momentum: one line per momentum coefficient.", "name": "fig-baselines-grid"}}
finite = [r["mean_meta_loss"] for m in BASELINES for r in grid["optimizers"][m]
          if r["mean_meta_loss"] is not None]
y_div = max(finite) * 2  # where the crosses of diverged configurations go
fig, axes = plt.subplots(2, 4, figsize=(11, 5.6), sharey=True)
for ax, name in zip(axes.flat, BASELINES):
    grid_panel(ax, name, grid["optimizers"][name], y_div)
    pick = (chosen["hparams"][name]["lr"],
            chosen["details"][name]["mean_meta_loss"])
    ax.plot(*pick, "o", ms=12, mfc="none", mec="black", mew=1.2)
    ax.axhline(grid["horizon"] * f0_tune, color="0.4", ls=":", lw=1)
    ax.set_ylim(min(finite) / 1.3, y_div * 1.6)
legend_panel(axes.flat[-1], axes.flat[1])
for ax in axes[1]:
    ax.set_xlabel("learning rate α")
axes[0, 0].set_ylabel("mean meta-loss")
axes[1, 0].set_ylabel("mean meta-loss")
plt.show()

# %% [markdown]
# In all, {glue:text}`n_configs` configurations were tried
# ({glue:text}`n_tuning_runs` runs of $T =$ {glue:text}`tuning_horizon` steps);
# {glue:text}`n_div_configs` of them had a diverging seed. Fixed-step conjugate
# gradient {glue:text}`cg_div` and settled on $\alpha =$ {glue:text}`cg_lr`;
# L-BFGS {glue:text}`lbfgs_div` and chose $\alpha =$ {glue:text}`lbfgs_lr`.
# Choices at the edge of their grid (a sign that the grid might be too narrow):
# {glue:text}`edges`.
#
# ## The chosen values
#
# The table lists the chosen hyperparameters, the lowest mean meta-loss
# {eq}`eq-tuning-score` over the tuning seeds on MNIST 48-48-10, minibatch 64,
# $T =$ {glue:text}`tuning_horizon`, and the size of each grid. Every other chapter
# uses these values through `l2o.baselines.default_hparams`; hyperparameters that
# are not in a grid keep their defaults (L-BFGS's history of 10 pairs, for
# example).

# %%
def fmt_hparams(hparams):
    def one(k, v):
        return f"{k} = {v:g}" if isinstance(v, (int, float)) else f"{k} = {v}"

    return ", ".join(one(k, v) for k, v in hparams.items())


# %% mystnb={"markdown_format": "myst"}
lines = ["| optimizer | chosen | mean meta-loss (tuning) | configurations |",
         "|---|---|---|---|"]
for m in BASELINES:
    d = chosen["details"][m]
    score = ("all diverged" if d.get("all_diverged")
             else f"{d['mean_meta_loss']:.2f}")
    hp = fmt_hparams(default_hparams(m))
    lines.append(f"| {METHOD_STYLE[m]['label']} | {hp} | {score} "
                 f"| {n_configs[m]} |")
display(Markdown("\n".join(lines)))

# %%
machine = prov["machine"]
glue("tune_command", prov["command"], display=False)
glue("tune_commit", (prov["git_commit"] or "unknown")[:12], display=False)
glue("tune_dirty", "with uncommitted changes" if prov.get("git_dirty")
     else "clean", display=False)
glue("tune_date", prov["started_utc"][:10], display=False)
glue("tune_minutes", round(prov["wall_time_s"] / 60, 1), display=False)
glue("tune_workers", prov["workers"], display=False)
glue("tune_cpus", machine["cpu_count"], display=False)
glue("tune_torch", machine["torch"], display=False)

# %% [markdown]
# **Provenance.** The tuning files come from one run of
# {glue:text}`tune_command`, started on {glue:text}`tune_date` at commit
# {glue:text}`tune_commit` (working tree {glue:text}`tune_dirty`), on a
# {glue:text}`tune_cpus`-core machine with {glue:text}`tune_workers` worker
# process(es) of one torch thread each (torch {glue:text}`tune_torch`); it took
# {glue:text}`tune_minutes` minutes. `provenance.json` next to the grid holds the
# complete record (platform, library versions, seeds, selection rule).

# %% [markdown]
# ## The tuned baselines on four datasets
#
# With the hyperparameters frozen, the seven methods now run on the training
# objective and on the three test datasets of the paper's first figure, all with the
# 48-48 net (the output layer has one unit per class), minibatch 64 and the same
# horizon, from the evaluation seeds. The inputs are prepared exactly as for MNIST:
# random projection to {glue:text}`n_in` dimensions, then standardisation.

# %%
prepared = {d: data.prepare(d, n_in) for d in datasets}
for d in datasets:
    print(prepared[d].describe())

# %% [markdown]
# Two of the paper's datasets are replaced or reduced here (see the data
# manifest, `MANIFEST.md`, next to the data files):
#
# - **Faces.** The Toronto Faces Dataset {cite:p}`susskind2010toronto` is
#   licence-restricted. Unless a user supplies `tfd.npz`, the faces panel uses
#   {glue:text}`faces_name`: {glue:text}`faces_n` FER2013 training images
#   {cite:p}`goodfellow2013challenges`, 48×48 grey faces with the same seven
#   expressions, class-balanced and about the size of TFD's training set.
# - **CIFAR** {cite:p}`krizhevsky2009learning`. CIFAR-10 uses a class-balanced
#   subset of {glue:text}`cifar10_n` of its {glue:text}`cifar10_full` training
#   images, CIFAR-100 one of {glue:text}`cifar100_n` of
#   {glue:text}`cifar100_full`. The objective is the average loss over the images
#   that are used, so a subset defines a slightly different objective of the same
#   kind.

# %%
full = {d: data.FULL_SIZES.get(d, (None,))[0] for d in datasets}
for d in datasets:
    glue(f"{d}_n", len(prepared[d]), display=False)
    glue(f"{d}_full", full[d] if full[d] else len(prepared[d]), display=False)
    glue(f"{d}_name", prepared[d].display_name, display=False)
glue("n_in", n_in, display=False)

# %%
runs = run_grid(specs, cache, workers=workers, progress=False)
by_dataset = {d: {m: [r for r in runs if r.config["dataset"] == d
                      and r.optimizer == m] for m in BASELINES}
              for d in datasets}
print(f"{len(runs)} runs, {sum(r.diverged for r in runs)} diverged")

# %% mystnb={"figure": {"caption": "The seven tuned hand-engineered optimizers on the training objective (MNIST) and the three test datasets, 48-48 net, minibatch 64: true objective (full training loss), median over the evaluation seeds with interquartile band. A cross marks a median that diverged.", "name": "fig-baselines-curves"}}
titles = [f"({chr(97 + i)}) {prepared[d].display_name}"
          for i, d in enumerate(datasets)]
fig, axes, summaries = figure_panels(
    by_dataset, steps=runs[0].evaluated_steps, titles=titles,
    figsize=(3.3 * len(datasets), 3.9))
plt.show()

# %% [markdown]
# {numref}`fig-baselines-curves` shows the runs. Below is one table per dataset:
# each method's meta-loss (mean ± standard deviation over those of the
# {glue:text}`n_seeds` evaluation seeds that did not diverge), its final objective
# $f(x^{(T)})$ over the same seeds, the number of diverged seeds, and its rank on
# that dataset (1 = lowest mean meta-loss over all seeds, a diverged seed counting
# $+\infty$).

# %%
def summary_markdown(rows):
    out = ["| rank | optimizer | meta-loss | final $f$ | diverged |",
           "|---|---|---|---|---|"]
    for r in rows:
        ok = math.isfinite(r["meta_loss_mean"])
        ml = (f"{r['meta_loss_mean']:.2f} ± {r['meta_loss_std']:.2f}"
              if ok else "–")
        fin = f"{r['final_mean']:.4f}" if ok else "–"
        out.append(f"| {r['rank']} | {METHOD_STYLE[r['optimizer']]['label']} | "
                   f"{ml} | {fin} | {r['n_diverged']}/{r['n_seeds']} |")
    return "\n".join(out)


tables = {d: summary_table([r for rs in by_dataset[d].values() for r in rs])
          for d in datasets}

# %% mystnb={"markdown_format": "myst"}
for i, d in enumerate(datasets):
    head = (f"**({chr(97 + i)}) {prepared[d].display_name}**, "
            f"{tables[d][0]['architecture']}, B = {batch_size}, T = {horizon}")
    display(Markdown(head + "\n\n" + summary_markdown(tables[d])))

# %%
winners = {d: tables[d][0]["optimizer"] for d in datasets}
label = {m: METHOD_STYLE[m]["label"] for m in BASELINES}
order = {d: [r["optimizer"] for r in tables[d]] for d in datasets}
for d in datasets:
    glue(f"{d}_best", label[winners[d]], display=False)
    best_ml = round(tables[d][0]["meta_loss_mean"], 2)
    glue(f"{d}_best_ml", best_ml, display=False)
    glue(f"{d}_order", ", ".join(label[m] for m in order[d]), display=False)
first = datasets[0]  # the training objective
ranks = [order[d].index(winners[first]) + 1 for d in datasets[1:]]
glue("first_best_ranks", ", ".join(map(str, ranks)), display=False)
glue("n_same_order", sum(order[d] == order[first] for d in datasets[1:]),
     display=False)

# %%
k = len(set(winners.values()))
glue("winners_text", "the same method is best on all of them" if k == 1
     else f"{k} different methods are best on them", display=False)
div = {m: sum(r.diverged for r in runs if r.optimizer == m) for m in BASELINES}
glue("diverged_text", "; ".join(f"{label[m]} {n}" for m, n in div.items()
                               if n) or "none", display=False)
glue("n_runs_diverged", sum(div.values()), display=False)
glue("n_runs", len(runs), display=False)
glue("n_seeds", n_seeds, display=False)

# %% [markdown]
# ## What the baselines show
#
# On the training objective the best of the seven is {glue:text}`mnist_best`
# (meta-loss {glue:text}`mnist_best_ml:.2f`). On the test datasets the best are
# {glue:text}`faces_best` on faces ({glue:text}`faces_best_ml:.2f`),
# {glue:text}`cifar10_best` on CIFAR-10 ({glue:text}`cifar10_best_ml:.2f`) and
# {glue:text}`cifar100_best` on CIFAR-100 ({glue:text}`cifar100_best_ml:.2f`):
# {glue:text}`winners_text`, and the method that is best on MNIST ranks
# {glue:text}`first_best_ranks` on the three test datasets. The complete orders,
# best first, are
#
# - MNIST: {glue:text}`mnist_order`;
# - faces: {glue:text}`faces_order`;
# - CIFAR-10: {glue:text}`cifar10_order`;
# - CIFAR-100: {glue:text}`cifar100_order`;
#
# and the number of test datasets on which the order is exactly MNIST's is
# {glue:text}`n_same_order`. {cite:t}`li2017learning` report that the relative ranking of the
# hand-engineered methods varies by dataset in their comparison; these orders are
# the reproduction's counterpart, with TFD replaced by FER2013 and the CIFAR sets
# reduced as described above.
#
# Runs that diverged, out of {glue:text}`n_runs`: {glue:text}`n_runs_diverged`
# (by method: {glue:text}`diverged_text`). Divergence on an evaluation seed is
# possible even where no tuning seed diverged, because the tuning only looked at
# {glue:text}`n_tuning_seeds` seeds on MNIST: a method whose best step lies close
# to its stability limit (compare the L-BFGS panel of
# {numref}`fig-baselines-grid`) is fragile on other seeds and other data. Fixed-step conjugate gradient, at the other extreme, is stable only with
# a step so small that it hardly moves: its tuning meta-loss is
# {glue:text}`cg_pct:.1f` % of that of standing still.
