"""All nine optimizers on one of the paper's figure settings, cached on disk.

The seven tuned baselines come from the experiment grid (:func:`l2o.experiments.run_grid`,
cache ``results/grid``); Predicted Step Descent and L2L are run by :mod:`l2o.learned` on
exactly the same initial iterates and minibatch streams, and cached under
``results/learned`` keyed by the setting, the seed and the sha256 of the policy file,
so a new meta-training run never reuses stale curves.

    python -m l2o.figures --figure 1        # fill the caches for Figure 1
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Sequence

import torch

from l2o import experiments, l2l
from l2o.baselines import BASELINES
from l2o.data import make_problem
from l2o.gps import load_policy
from l2o.learned import evaluate_l2l, evaluate_psd

log = logging.getLogger(__name__)

PSD_FILE = experiments.ROOT / "results" / "psd" / "psd_mnist48.pt"
L2L_FILE = experiments.ROOT / "results" / "l2l" / "l2l_mnist48.pt"
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
                   workers: int = 2, progress: bool = False) -> dict[str, list]:
    """``{dataset: [RunResult, ...]}`` of all nine optimizers in the setting of ``figure``.

    ``horizon`` overrides the figure's (smoke runs; Figure 5 beyond 800 steps).
    """
    setting = dict(experiments.FIGURES[figure])
    if horizon is not None:
        setting["horizon"] = int(horizon)
    specs = [experiments.ExperimentSpec(d, setting["n_in"], setting["n_hidden"],
                                        setting["batch_size"], setting["horizon"], o, s)
             for d in datasets for o in BASELINES for s in seeds]
    base = experiments.run_grid(specs, results_dir, workers=workers, progress=progress)
    out = {d: [r for r, sp in zip(base, specs) if sp.dataset == d] for d in datasets}
    for d in datasets:
        out[d] += learned_results("psd", d, setting, seeds, Path(psd_file), Path(learned_dir))
        out[d] += learned_results("l2l", d, setting, seeds, Path(l2l_file), Path(learned_dir))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m l2o.figures")
    ap.add_argument("--figure", type=int, required=True, choices=sorted(experiments.FIGURES))
    ap.add_argument("--seeds", type=int, nargs="+", default=list(experiments.EVAL_SEEDS))
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
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
                workers: int = 2) -> FigureData:
    """Run (or read from the caches) all nine optimizers for one figure of the paper.

    ``horizon = 0`` keeps the figure's horizon; relative folders are taken from the
    repository root.
    """
    from l2o import data

    root = experiments.ROOT
    setting = dict(experiments.FIGURES[figure])
    if horizon:
        setting["horizon"] = int(horizon)
    seeds = list(range(n_seeds))
    datasets = list(experiments.FIGURE_DATASETS)
    names = {d: data.prepare(d, setting["n_in"]).display_name for d in datasets}
    res = figure_results(figure, seeds, datasets, horizon=setting["horizon"],
                         results_dir=root / results_dir, learned_dir=root / learned_dir,
                         workers=workers)
    tables = {d: experiments.summary_table(runs) for d, runs in res.items()}
    return FigureData(figure, setting, seeds, datasets, names, res, tables)


def plot_figure(fd: FigureData):
    """The paper's three-panel layout for ``fd``; returns ``(fig, axes, summaries)``."""
    from l2o.plotting import figure_panels

    curves = {d: {} for d in fd.datasets}
    for d, runs in fd.results.items():
        for r in runs:
            curves[d].setdefault(r.optimizer, []).append(r)
    titles = [f"({chr(97 + i)}) {fd.names[d]}" for i, d in enumerate(fd.datasets)]
    return figure_panels(curves, titles=titles)


def tables_markdown(fd: FigureData) -> str:
    """One summary table per panel, as Markdown."""
    return "\n\n".join(f"**{fd.names[d]}**\n\n" + experiments.format_summary(fd.tables[d])
                       for d in fd.datasets)
