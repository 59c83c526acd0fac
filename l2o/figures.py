"""All nine optimizers on one of the paper's figure settings, cached on disk.

The seven tuned baselines come from the experiment grid (:func:`l2o.experiments.run_grid`,
cache ``results/grid``); Predicted Step Descent and L2L are run by :mod:`l2o.learned` on
exactly the same initial iterates and minibatch streams, and cached under
``results/learned`` keyed by the setting, the seed and the sha256 of the policy file,
so a new meta-training run never reuses stale curves.

    python -m l2o.figures --figure 1        # fill the caches for Figure 1
    python -m l2o.figures --all             # every figure and the Figure 5 continuation
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from l2o import experiments, l2l
from l2o.baselines import BASELINES
from l2o.data import make_problem
from l2o.gps import load_policy
from l2o.learned import PRETRAINED, evaluate_l2l, evaluate_psd

log = logging.getLogger(__name__)

PSD_FILE = experiments.ROOT / PRETRAINED["psd"][0]
L2L_FILE = experiments.ROOT / PRETRAINED["l2l"][0]
LEARNED_DIR = experiments.ROOT / "results" / "learned"


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def learned_results(name: str, dataset: str, setting: dict, seeds: Sequence[int],
                    policy_file: Path, cache_dir: Path = LEARNED_DIR):
    """PSD (``name="psd"``) or L2L (``"l2l"``) runs for one dataset, from cache or fresh."""
    key = (f"{dataset}_{setting['n_in']}-{setting['n_hidden']}_b{setting['batch_size']}"
           f"_T{setting['horizon']}_{name}_{_sha(policy_file)}")
    paths = {s: Path(cache_dir) / f"{key}_seed{s}.json" for s in seeds}
    missing = [s for s in seeds if not paths[s].exists()]
    if missing:
        P = make_problem(dataset, setting["n_in"], setting["n_hidden"],
                         batch_size=setting["batch_size"])
        if name == "psd":
            policy, fcfg, _ = load_policy(policy_file)
            runs = evaluate_psd(P, policy, missing, setting["horizon"], fcfg)
        else:
            runs = evaluate_l2l(P, l2l.load_l2l(policy_file), missing, setting["horizon"])
        for s, r in zip(missing, runs):
            r.hparams = {"policy_file": Path(policy_file).name, "sha256": _sha(policy_file)}
            r.save(paths[s])
    return [experiments.RunResult.load(paths[s]) for s in seeds]


def figure_results(figure: int, seeds: Sequence[int] = experiments.EVAL_SEEDS,
                   datasets: Sequence[str] = experiments.FIGURE_DATASETS,
                   horizon: int | None = None, results_dir=experiments.GRID_DIR,
                   learned_dir=LEARNED_DIR, psd_file=PSD_FILE, l2l_file=L2L_FILE,
                   workers: int = 2, progress: bool = False,
                   extras: Sequence[str] = ()) -> dict[str, list]:
    """``{dataset: [RunResult, ...]}`` of all nine optimizers in the setting of ``figure``.

    ``horizon`` overrides the figure's (smoke runs; Figure 5 beyond 800 steps).
    ``extras`` adds registry optimizers beyond the paper's seven as extra rows (e.g.
    :data:`l2o.baselines.EXTRA_BASELINES`); they then take part in every rank of the
    panel, so the default, none, keeps the nine methods the verdicts are about.
    """
    setting = dict(experiments.FIGURES[figure])
    if horizon is not None:
        setting["horizon"] = int(horizon)
    specs = [experiments.ExperimentSpec(d, setting["n_in"], setting["n_hidden"],
                                        setting["batch_size"], setting["horizon"], o, s)
             for d in datasets for o in (*BASELINES, *extras) for s in seeds]
    base = experiments.run_grid(specs, results_dir, workers=workers, progress=progress)
    out = {d: [r for r, sp in zip(base, specs) if sp.dataset == d] for d in datasets}
    tasks = [(name, d, setting, list(seeds), Path(f), Path(learned_dir))
             for d in datasets for name, f in (("psd", psd_file), ("l2l", l2l_file))]
    if workers > 1 and len(tasks) > 1:
        # one (optimizer, dataset) per task; each writes its own cache files
        with experiments._pool(min(workers, len(tasks))) as pool:
            done = list(pool.map(_learned_task, tasks))
    else:
        done = [_learned_task(t) for t in tasks]
    for (name, d, *_), runs in zip(tasks, done):
        out[d] += runs
    return out


def _learned_task(task) -> list:
    torch.set_num_threads(1)
    return learned_results(*task)


#: Beyond the paper: Figure 5 continued to 2,000 iterations on these datasets only (a
#: Predicted Step Descent rollout on a 100-200 net costs about 0.65 s per step for five
#: seeds on a 2-core CPU, 1.2 s on CIFAR-100; chapter 11 gives the measured costs).
EXTENSION = {"figure": 5, "horizon": 2000, "datasets": ("cifar10",)}


def run_all(seeds: Sequence[int] = experiments.EVAL_SEEDS, workers: int = 2,
            progress: bool = True) -> None:
    """Every figure of the paper and the Figure 5 continuation, into the caches."""
    for figure in sorted(experiments.FIGURES):
        log.info("Figure %d", figure)
        figure_results(figure, seeds, workers=workers, progress=progress)
    log.info("Figure %d continued to %d iterations on %s", EXTENSION["figure"],
             EXTENSION["horizon"], ", ".join(EXTENSION["datasets"]))
    figure_results(EXTENSION["figure"], seeds, EXTENSION["datasets"],
                   horizon=EXTENSION["horizon"], workers=workers, progress=progress)


def main(argv=None) -> int:
    """``python -m l2o.figures {--figure N | --all}``; arguments are checked while parsing
    (one ``error:`` line, exit code 2)."""
    from l2o.cli import nonnegative_int, positive_int

    ap = argparse.ArgumentParser(prog="python -m l2o.figures")
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--figure", type=int, choices=sorted(experiments.FIGURES))
    which.add_argument("--all", action="store_true",
                       help="every figure and the Figure 5 continuation (the whole grid)")
    ap.add_argument("--seeds", type=nonnegative_int, nargs="+",
                    default=list(experiments.EVAL_SEEDS))
    ap.add_argument("--workers", type=positive_int, default=2,
                    help="processes for the baseline runs and the learned optimizers")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    if a.all:
        run_all(a.seeds, a.workers)
        return 0
    res = figure_results(a.figure, a.seeds, workers=a.workers, progress=True)
    for d, runs in res.items():
        print(d)
        print(experiments.format_summary(experiments.summary_table(runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# ------------------------------------------------------------- reading a figure's tables
def rank_of(table: list[dict], method: str) -> int:
    """Rank of ``method`` in one panel's :func:`~l2o.experiments.summary_table`."""
    return next(r["rank"] for r in table if r["optimizer"] == method)


def row_of(table: list[dict], method: str) -> dict:
    """The row of ``method`` in one panel's summary table."""
    return next(r for r in table if r["optimizer"] == method)


def best_method(table: list[dict]) -> str:
    """The method ranked first in one panel."""
    return min(table, key=lambda r: r["rank"])["optimizer"]


def hand_engineered_order(table: list[dict]) -> list[str]:
    """The seven hand-engineered methods of one panel, best first."""
    return [r["optimizer"] for r in sorted(table, key=lambda r: r["rank"])
            if r["optimizer"] not in ("psd", "l2l")]


def verdict(n_hold: int, n_panels: int) -> str:
    """'reproduced' / 'partly reproduced' / 'not reproduced' from panels where a claim holds."""
    return ("reproduced" if n_hold == n_panels
            else "partly reproduced" if n_hold else "not reproduced")


# ------------------------------------------------------------------ figure chapters
@dataclasses.dataclass
class FigureData:
    """Everything a figure chapter shows: setting, runs and per-panel tables."""

    figure: int
    setting: dict
    seeds: list
    datasets: list
    names: dict        # dataset -> display name (says which faces dataset was used)
    results: dict      # dataset -> [RunResult, ...] of all nine optimizers
    tables: dict       # dataset -> summary_table rows


def load_figure(figure: int, n_seeds: int = 5, horizon: int = 0,
                results_dir: str = "results/grid", learned_dir: str = "results/learned",
                workers: int = 2, datasets: Sequence[str] | None = None) -> FigureData:
    """Run (or read from the caches) all nine optimizers for one figure of the paper.

    ``horizon = 0`` keeps the figure's horizon; relative folders are taken from the
    repository root. ``datasets`` picks a subset of the panels (default: all of
    :data:`l2o.experiments.FIGURE_DATASETS`, in that order), e.g. to continue a figure
    beyond its horizon on fewer datasets.
    """
    from l2o import data

    root = experiments.ROOT
    setting = dict(experiments.FIGURES[figure])
    if horizon:
        setting["horizon"] = int(horizon)
    seeds = list(range(n_seeds))
    datasets = list(experiments.FIGURE_DATASETS if datasets is None else datasets)
    names = {d: data.prepare(d, setting["n_in"]).display_name for d in datasets}
    res = figure_results(figure, seeds, datasets, horizon=setting["horizon"],
                         results_dir=root / results_dir, learned_dir=root / learned_dir,
                         workers=workers)
    tables = {d: experiments.summary_table(runs) for d, runs in res.items()}
    return FigureData(figure, setting, seeds, datasets, names, res, tables)


def plot_figure(fd: FigureData, **panel_kw):
    """The paper's three-panel layout for ``fd``; returns ``(fig, axes, summaries)``.

    ``panel_kw`` goes to :func:`l2o.plotting.figure_panels` (e.g. ``figsize`` for a
    figure with fewer panels).
    """
    from l2o.plotting import figure_panels

    curves = {d: {} for d in fd.datasets}
    for d, runs in fd.results.items():
        for r in runs:
            curves[d].setdefault(r.optimizer, []).append(r)
    titles = [f"({chr(97 + i)}) {fd.names[d]}" for i, d in enumerate(fd.datasets)]
    return figure_panels(curves, titles=titles, **panel_kw)


def tables_markdown(fd: FigureData) -> str:
    """One summary table per panel, as Markdown."""
    return "\n\n".join(f"**{fd.names[d]}**\n\n" + experiments.format_summary(fd.tables[d])
                       for d in fd.datasets)


# --------------------------------------------------------- reading a figure's curves
# The figure runs evaluate the true objective at every iterate (``eval_every = 1``), so
# a curve's index is its iteration t = 0..T.
def curves_of(fd: FigureData, dataset: str, method: str) -> np.ndarray:
    """``(n_seeds, T+1)`` true-objective curves of one method on one panel.

    A diverged seed is NaN from its divergence on, as :func:`l2o.experiments.train`
    records it.
    """
    rows = [np.asarray(r.true_loss, dtype=np.float64) for r in fd.results[dataset]
            if r.optimizer == method]
    if not rows:
        raise KeyError(f"no runs of {method!r} on {dataset!r}")
    return np.vstack(rows)


def median_curves(fd: FigureData) -> dict[str, dict[str, np.ndarray]]:
    """``{dataset: {method: (T+1,) median over seeds}}``, the lines of :func:`plot_figure`.

    Diverged seeds count as ``+inf`` (:func:`l2o.plotting.summarize_curves`), so a
    median is infinite once more than half of the seeds have diverged.
    """
    from l2o.plotting import summarize_curves

    methods = {d: dict.fromkeys(r.optimizer for r in fd.results[d]) for d in fd.datasets}
    return {d: {m: summarize_curves(curves_of(fd, d, m)).median for m in methods[d]}
            for d in fd.datasets}


def _window(curve, start: int, stop: int | None) -> np.ndarray:
    curve = np.asarray(curve, dtype=np.float64)
    return curve[..., start:None if stop is None else stop + 1]


def oscillation(curves, start: int = 0, stop: int | None = None) -> float:
    """How far a curve climbs back per iteration, on average, over ``start..stop``.

    For one curve ``f_0..f_T``: the mean over ``start <= t < stop`` of the rises
    ``max(f_{t+1} - f_t, 0)``, in units of the objective per iteration. A steady
    descent scores 0; a curve that jitters scores the mean height of its upward
    jumps, so the measure grows with the amplitude of the oscillation (unlike the
    share of steps that go up, which sits near one half for any noisy curve that
    has stopped making progress). Compare values within one panel (one objective):
    different datasets have different objective scales. Steps touching a
    non-finite value (a diverged run) are left out.

    Args:
        curves: ``(T+1,)`` one curve, or ``(n_seeds, T+1)``.
        start, stop: first and last iteration of the window (``stop=None``: to the end).

    Returns:
        The mean rise of one curve; for several, the median over the seeds. NaN
        when the window has no finite step.
    """
    window = np.atleast_2d(_window(curves, start, stop))
    rises = []
    for row in window:
        step = np.diff(row)
        step = step[np.isfinite(step)]
        rises.append(np.clip(step, 0.0, None).mean() if step.size else np.nan)
    rises = np.asarray(rises)
    if np.all(np.isnan(rises)):
        return float("nan")
    return float(np.nanmedian(rises))


def trend(curve, start: int = 0, stop: int | None = None) -> float:
    """Least-squares slope of one curve over iterations ``start..stop`` (per iteration).

    Positive: the objective drifts upward over the window (a slow divergence);
    negative: it still descends. Non-finite values are left out; NaN with fewer than
    two finite points.
    """
    y = _window(curve, start, stop)
    t = np.arange(start, start + y.size, dtype=np.float64)
    keep = np.isfinite(y)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(t[keep], y[keep], 1)[0])


def lead_from(medians: Mapping[str, np.ndarray], method: str) -> int | None:
    """First iteration from which ``method``'s curve is the lowest of all, to the end.

    ``medians`` maps each method to one curve over the same iterations (e.g. a panel of
    :func:`median_curves`); ties count as leading, non-finite values as ``+inf``.
    Returns None when ``method`` is not the lowest at the last iteration.
    """
    own = np.asarray(medians[method], dtype=np.float64)
    others = [np.asarray(c, dtype=np.float64) for m, c in medians.items() if m != method]
    if not others:
        return 0
    own = np.where(np.isfinite(own), own, np.inf)
    best_other = np.min([np.where(np.isfinite(c), c, np.inf) for c in others], axis=0)
    leads = own <= best_other
    if not leads[-1]:
        return None
    behind = np.flatnonzero(~leads)
    return int(behind[-1] + 1) if behind.size else 0


def rank_at(medians: Mapping[str, np.ndarray], method: str, step: int) -> int:
    """Place (1 = lowest) of ``method``'s curve among all curves at iteration ``step``.

    Non-finite values count as ``+inf``; ties share the better place.
    """
    def value(c):
        v = float(np.asarray(c, dtype=np.float64)[step])
        return v if np.isfinite(v) else np.inf

    own = value(medians[method])
    return 1 + sum(value(c) < own for m, c in medians.items() if m != method)


def margin_over(table: list[dict], method: str = "psd", key: str = "final_mean",
                others: Sequence[str] | None = None) -> float:
    """How far ``method`` is below the best of ``others`` in one panel's summary table.

    ``best(others)[key] - method[key]``: positive when ``method`` is at or below every
    other (lower objective is better), negative by how much it trails the best one.
    ``others`` defaults to every other method of the table; pass
    :func:`hand_engineered_order` of the table to compare with the seven
    hand-engineered methods only. Methods whose value is NaN (every seed diverged) are
    skipped among the others; NaN if ``method``'s own value is NaN or no other remains.
    """
    names = [r["optimizer"] for r in table if r["optimizer"] != method] \
        if others is None else [m for m in others if m != method]
    values = [row_of(table, m)[key] for m in names]
    values = [v for v in values if np.isfinite(v)]
    own = row_of(table, method)[key]
    if not values or not np.isfinite(own):
        return float("nan")
    return float(min(values) - own)


def seconds_per_step(fd: FigureData, dataset: str, method: str | None = None) -> float:
    """Measured wall time per iteration of one panel's runs (all seeds together).

    Sums ``wall_time / batched`` over the runs of ``method`` (all nine optimizers when
    None), so seeds run together in one call are counted once, and divides by the
    horizon. The times are those stored with the cached runs, i.e. of the machine and
    load under which they were produced.
    """
    runs = [r for r in fd.results[dataset] if method is None or r.optimizer == method]
    if not runs:
        raise KeyError(f"no runs of {method!r} on {dataset!r}")
    total = sum(r.wall_time / max(1, r.batched) for r in runs)
    return float(total / max(1, fd.setting["horizon"]))
