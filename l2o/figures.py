"""All nine optimizers on one of the paper's figure settings, cached on disk.

The seven tuned baselines come from the experiment grid (:func:`l2o.experiments.run_grid`,
cache ``results/grid``); Predicted Step Descent and L2L are run by :mod:`l2o.learned` on
exactly the same initial iterates and minibatch streams, and cached under
``results/learned`` keyed by the setting, the seed and the sha256 of the policy file,
so a new meta-training run never reuses stale curves.

    python -m l2o.figures --figure 1        # fill the caches for Figure 1
    python -m l2o.figures --all             # every figure and the Figure 5 continuation

Beyond the paper's nine methods, *extra rows* can join a panel: the registry's
line-search baselines (:data:`l2o.baselines.EXTRA_BASELINES`) and a π meta-trained
without GPS (:data:`OUTER_RUNS`, chapter "What limits PSD"); :func:`default_extras`
names them. They are cached like the others and shown apart from the paper's rows.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import functools
import hashlib
import logging
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from l2o import experiments, l2l, parallel, record
from l2o.baselines import BASELINES, EXTRA_BASELINES
from l2o.data import make_problem
from l2o.gps import load_policy
from l2o.learned import PRETRAINED, evaluate_l2l, evaluate_psd

log = logging.getLogger(__name__)

PSD_FILE = experiments.ROOT / PRETRAINED["psd"][0]
L2L_FILE = experiments.ROOT / PRETRAINED["l2l"][0]
LEARNED_DIR = experiments.ROOT / "results" / "learned"

#: Beyond the paper: π meta-trained without GPS (truncated BPTT and ES, chapter "What
#: limits PSD"), by run folder under the repository root.  :func:`outer_policy` picks one
#: of them for the figures' extra row.
OUTER_RUNS = {"pi_bptt": "results/outer/bptt", "pi_es": "results/outer/es"}


def outer_policy(root: str | Path | None = None) -> tuple[str, Path] | None:
    """The π of :data:`OUTER_RUNS` shown as an extra row: ``(name, policy file)``.

    The run whose best snapshot has the lowest validation meta-loss on the training
    objective (``history.json``'s ``best``): chosen on the training objective, as PSD's
    own π is, never on a figure's panels.  None when no run folder is here.
    """
    root = Path(experiments.ROOT if root is None else root)
    best = None
    for name, rel in OUTER_RUNS.items():
        policy = root / rel / f"{name}.pt"
        score = ((record.read_json(root / rel / "history.json") or {}).get("best") or {}) \
            .get("meta_loss")
        if policy.is_file() and isinstance(score, (int, float)) and np.isfinite(score) \
                and (best is None or score < best[0]):
            best = (float(score), name, policy)
    return None if best is None else (best[1], best[2])


def default_extras(root: str | Path | None = None) -> tuple[tuple[str, ...], dict[str, Path]]:
    """The extra rows of the figure chapters: ``(registry baselines, {name: π file})``."""
    pi = outer_policy(root)
    return tuple(EXTRA_BASELINES), ({} if pi is None else {pi[0]: pi[1]})


def _learned_kind(name: str) -> str:
    """``"l2l"`` for the L2L net, ``"psd"`` for PSD and every other learned π."""
    return "l2l" if name == "l2l" else "psd"


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def _learned_paths(name: str, dataset: str, setting: dict, seeds: Sequence[int],
                   policy_file: Path, cache_dir: Path) -> dict[int, Path]:
    key = (f"{dataset}_{setting['n_in']}-{setting['n_hidden']}_b{setting['batch_size']}"
           f"_T{setting['horizon']}_{name}_{_sha(policy_file)}")
    return {s: Path(cache_dir) / f"{key}_seed{s}.json" for s in seeds}


def learned_runs(name: str, dataset: str, setting: dict, seeds: Sequence[int], policy: bytes,
                 policy_name: str, data_dir=None) -> list:
    """PSD (``name="psd"``) or L2L (``"l2l"``) runs on one panel, computed, not saved;
    any other ``name`` is a π file run as PSD and labelled ``name`` (an extra row).

    Takes the policy file's content rather than its path, so that a Dask worker needs
    no copy of ``results/``; runs with one torch thread, as every run of the grid.
    """
    sha = hashlib.sha256(policy).hexdigest()[:12]
    P = make_problem(dataset, setting["n_in"], setting["n_hidden"],
                     batch_size=setting["batch_size"], data_dir=data_dir)
    with tempfile.TemporaryDirectory() as tmp, parallel.one_thread():
        f = Path(tmp) / policy_name
        f.write_bytes(policy)
        if _learned_kind(name) == "psd":
            pol, fcfg, _ = load_policy(f)
            runs = evaluate_psd(P, pol, list(seeds), setting["horizon"], fcfg, label=name)
        else:
            runs = evaluate_l2l(P, l2l.load_l2l(f), list(seeds), setting["horizon"])
    for r in runs:
        r.hparams = {"policy_file": policy_name, "sha256": sha}
    return runs


def learned_results(name: str, dataset: str, setting: dict, seeds: Sequence[int],
                    policy_file: Path, cache_dir: Path = LEARNED_DIR):
    """Runs of a learned optimizer (:func:`learned_runs`) on one dataset, from cache or
    fresh."""
    paths = _learned_paths(name, dataset, setting, seeds, policy_file, cache_dir)
    missing = [s for s in seeds if not paths[s].exists()]
    if missing:
        runs = learned_runs(name, dataset, setting, missing, Path(policy_file).read_bytes(),
                            Path(policy_file).name)
        for s, r in zip(missing, runs):
            r.save(paths[s])
    return [experiments.RunResult.load(paths[s]) for s in seeds]


# ------------------------------------------------------------------- the grid as tasks
#: Where the grid's tasks run (:func:`l2o.parallel.executor`): ``"local"`` (``workers``
#: processes of this machine, or this process for ``workers <= 1``) or ``"dask"`` (Dask
#: distributed: a ``LocalCluster`` of ``workers`` processes, or the scheduler at
#: ``scheduler``).
EXECUTORS = parallel.EXECUTORS

#: Cost model of one task in seconds of one core, for the progress bar's weights: per
#: step and trajectory, ``a + b · M · dim`` (the true objective on the ``M`` training
#: examples at every iterate, and the minibatch gradient) plus ``c · dim`` for the
#: learned optimizers' own step (``c`` = ``psd`` or ``l2l``).  Least-squares fit to the
#: per-step times that ``python -m l2o.figures --all --estimate`` measured for every
#: kind of run on the project's 2-core machine (tqdm's rate rescales the ETA to any
#: other machine).
COST_MODEL = {"a": 7.1e-4, "b": 3.9e-11, "psd": 2.0e-6, "l2l": 4.6e-7}


@dataclasses.dataclass
class GridTask:
    """One unit of the figure grid: computed anywhere, saved into the caches here.

    Attributes:
        label: readable name (cache stem of the first run).
        fn: a module-level function (picklable), ``fn(*args) -> [RunResult, ...]``.
        args: its arguments.
        paths: where each returned run is saved, in order.
        steps: trajectories × horizon, and ``dim``, ``examples``, ``kind`` (``"psd"``,
            ``"l2l"`` or ``"baseline"``): what :meth:`cost` needs.
    """

    label: str
    fn: Callable[..., list]
    args: tuple
    paths: list
    steps: int
    dim: int
    examples: int
    kind: str

    def cost(self, model: Mapping[str, float] = COST_MODEL) -> float:
        """Estimated seconds on one core (:data:`COST_MODEL`)."""
        per = model["a"] + model["b"] * self.examples * self.dim + model.get(self.kind, 0.0) * self.dim
        return self.steps * per

    def save(self, runs: Sequence) -> None:
        if len(runs) != len(self.paths):
            raise RuntimeError(f"task {self.label} returned {len(runs)} runs, "
                               f"expected {len(self.paths)}")
        for r, path in zip(runs, self.paths):
            r.save(path)


def _baseline_tasks(specs: Sequence, results_dir, data_dir=None,
                    seen: set | None = None) -> list[GridTask]:
    """One :class:`GridTask` per baseline run of ``specs`` not yet cached (nor in ``seen``,
    which is updated)."""
    seen = set() if seen is None else seen
    todo = [s for s in experiments.pending_specs(dict.fromkeys(specs), results_dir)
            if s not in seen]
    seen.update(todo)
    tasks = []
    for group in experiments._tasks_for(todo, batch_seeds=False):
        dim, m = _problem_size(group[0].dataset, group[0].n_in, group[0].n_hidden, data_dir)
        tasks.append(GridTask(
            group[0].stem(), experiments.compute_specs, (group, data_dir),
            [experiments.result_path(s, results_dir) for s in group],
            len(group) * group[0].horizon, dim, m, "baseline"))
    return tasks


@functools.lru_cache(maxsize=64)
def _problem_size(dataset: str, n_in: int, n_hidden: int, data_dir=None) -> tuple[int, int]:
    """``(dim, examples)`` of a panel's objective; a guess if the data is not here."""
    from l2o import data

    try:
        prep = data.prepare(dataset, n_in, data_dir=data_dir)
        classes, examples = prep.n_classes, len(prep)
    except Exception:  # noqa: BLE001 - only the progress bar's weights depend on it
        classes, examples = 10, 10_000
    return n_in * n_hidden + n_hidden + n_hidden * classes + classes, examples


def grid_tasks(panels: Sequence[tuple[int, Sequence[str], int | None]],
               seeds: Sequence[int] = experiments.EVAL_SEEDS,
               results_dir=experiments.GRID_DIR, learned_dir=LEARNED_DIR, psd_file=PSD_FILE,
               l2l_file=L2L_FILE, data_dir=None, extras: Sequence[str] = (),
               extra_learned: Mapping[str, Path] | None = None,
               paper_rows: bool = True) -> list[GridTask]:
    """The tasks still to run for ``panels``: ``(figure, datasets, horizon or None)``.

    One task per baseline run (as :func:`l2o.experiments.run_grid` runs them) and one
    per learned optimizer and panel (all its seeds in one batched rollout); results
    already in the caches are skipped.  Costliest first.  ``extras`` (registry names)
    and ``extra_learned`` (``{name: π file}``) add extra rows; ``paper_rows=False``
    leaves out the paper's nine methods (the extra rows only).
    """
    tasks, seen = [], set()
    files = dict({"psd": Path(psd_file), "l2l": Path(l2l_file)} if paper_rows else {})
    files.update({k: Path(v) for k, v in (extra_learned or {}).items()})
    blobs = {name: f.read_bytes() for name, f in files.items()}
    optimizers = (*(BASELINES if paper_rows else ()), *extras)
    for figure, datasets, horizon in panels:
        setting = experiments.setting_of(figure)
        if horizon is not None:
            setting["horizon"] = int(horizon)
        specs = [experiments.ExperimentSpec(d, setting["n_in"], setting["n_hidden"],
                                            setting["batch_size"], setting["horizon"], o, s)
                 for d in datasets for o in optimizers for s in seeds]
        tasks += _baseline_tasks(specs, results_dir, data_dir, seen)
        for d in datasets:
            dim, m = _problem_size(d, setting["n_in"], setting["n_hidden"], data_dir)
            for name in files:
                paths = _learned_paths(name, d, setting, seeds, files[name], learned_dir)
                missing = [s for s in seeds if not paths[s].exists()]
                label = paths[seeds[0]].stem.rsplit("_seed", 1)[0] if seeds else name
                if not missing or label in seen:
                    continue
                seen.add(label)
                tasks.append(GridTask(
                    label, learned_runs,
                    (name, d, setting, missing, blobs[name], files[name].name, data_dir),
                    [paths[s] for s in missing], len(missing) * setting["horizon"], dim, m,
                    _learned_kind(name)))
    tasks.sort(key=lambda t: t.cost(), reverse=True)
    return tasks


#: The grid's executor: :func:`l2o.parallel.executor` (this name kept for callers).
grid_executor = parallel.executor


def run_tasks(tasks: Sequence[GridTask], executor: str = "local", workers: int = 2,
              scheduler: str | None = None, progress: bool = True, data_dir=None) -> None:
    """Run ``tasks`` (:func:`grid_tasks`) and save every result into its cache.

    One progress bar over all tasks, in estimated seconds of one core
    (:meth:`GridTask.cost`), so that its rate and ETA account for how much each task
    costs; the postfix counts tasks.

    Raises:
        RuntimeError: some tasks failed (after all others have finished and been saved).
    """
    if not tasks:
        return
    from tqdm import tqdm

    if executor == "local" and workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        # prepare each dataset once here; forked workers inherit the cache
        from l2o import data

        for d, n_in in dict.fromkeys((t.args[1], t.args[2]["n_in"]) if t.kind != "baseline"
                                     else (t.args[0][0].dataset, t.args[0][0].n_in)
                                     for t in tasks):
            try:
                data.prepare(d, n_in, data_dir=data_dir)
            except Exception as exc:  # noqa: BLE001 - the task will report it
                log.debug("could not prepare %s: %s", d, exc)
    costs = [t.cost() for t in tasks]
    log.info("grid: %d tasks, about %.0f core-seconds (%s executor)", len(tasks), sum(costs),
             executor)
    bar = tqdm(total=round(sum(costs)), desc="grid", unit="core-s", disable=not progress,
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} core-s "
                          "[{elapsed}<{remaining}{postfix}]")
    failures, done = [], 0

    def finish(task, cost, runs=None, exc=None):
        nonlocal done
        if exc is None:
            task.save(runs)
        else:
            log.error("task %s failed: %s: %s", task.label, type(exc).__name__, exc)
            failures.append((task, exc))
        done += 1
        bar.update(cost)
        bar.set_postfix_str(f"{done}/{len(tasks)} tasks", refresh=True)

    try:
        with grid_executor(executor, workers, scheduler) as ex:
            if ex is None:
                for task, cost in zip(tasks, costs):
                    try:
                        runs = task.fn(*task.args)
                    except Exception as exc:  # report after the others have run
                        finish(task, cost, exc=exc)
                        continue
                    finish(task, cost, runs)
            else:
                futures = {ex.submit(t.fn, *t.args): (t, c) for t, c in zip(tasks, costs)}
                for fut in cf.as_completed(futures):
                    task, cost = futures[fut]
                    try:
                        runs = fut.result()
                    except Exception as exc:
                        finish(task, cost, exc=exc)
                        continue
                    finish(task, cost, runs)
    finally:
        bar.close()
    if failures:
        lines = "\n".join(f"  {t.label}: {type(e).__name__}: {e}" for t, e in failures)
        raise RuntimeError(f"{len(failures)} of {len(tasks)} tasks failed:\n{lines}")


def _shortened(task: GridTask, horizon: int) -> tuple:
    """``task``'s arguments with the horizon cut to ``horizon`` (one seed for baselines)."""
    if task.kind == "baseline":
        specs, data_dir = task.args
        return ([dataclasses.replace(specs[0], horizon=horizon)], data_dir)
    name, d, setting, seeds, *rest = task.args
    return (name, d, dict(setting, horizon=horizon), seeds, *rest)


def measure_tasks(tasks: Sequence[GridTask], steps: tuple[int, int] = (3, 11),
                  progress: bool = True) -> list[float]:
    """Seconds of one core each task takes, from two short runs of each kind of task.

    Every task kind (optimizer, dataset, net, minibatch size; for PSD and L2L also the
    number of seeds) is run here, in this process, for ``steps[0]`` and ``steps[1]``
    steps; the difference gives the seconds per step, the shorter run the set-up.
    Seeds of a baseline share one measurement.  CPU time of this process is measured,
    so other load on the machine inflates the numbers little.  Caveats: a step of CG
    or L-BFGS costs what its line search needs, which varies along a run; diverged
    runs stop early (both make this an upper estimate rather than a prediction).
    """
    import time

    from tqdm import tqdm

    k1, k2 = steps
    per_kind: dict[tuple, tuple[float, float]] = {}

    def kind_of(t: GridTask):
        if t.kind == "baseline":
            s = t.args[0][0]
            return ("baseline", s.dataset, s.n_in, s.n_hidden, s.batch_size, s.optimizer)
        name, d, setting, seeds = t.args[:4]
        return (name, d, setting["n_in"], setting["n_hidden"], setting["batch_size"], len(seeds))

    kinds = {kind_of(t): t for t in tasks}
    for key, t in tqdm(kinds.items(), desc="measuring", disable=not progress):
        times = []
        for k in (k1, k2):
            args = _shortened(t, k)
            start = time.process_time()
            t.fn(*args)
            times.append(time.process_time() - start)
        per_step = max(times[1] - times[0], 0.0) / (k2 - k1)
        per_kind[key] = (max(times[0] - k1 * per_step, 0.0), per_step)
    out = []
    for t in tasks:
        setup, per_step = per_kind[kind_of(t)]
        if t.kind == "baseline":
            n, horizon = len(t.args[0]), t.args[0][0].horizon
            out.append(n * (setup + per_step * horizon))
        else:
            out.append(setup + per_step * t.args[2]["horizon"])
    return out


def makespan(seconds: Sequence[float], workers: int) -> float:
    """Wall time of ``seconds``-long tasks on ``workers`` cores, longest task first."""
    loads = [0.0] * max(1, workers)
    for s in sorted(seconds, reverse=True):
        loads[loads.index(min(loads))] += s
    return max(loads)


def estimate_grid(seeds: Sequence[int] = experiments.EVAL_SEEDS, workers: int = 2,
                  steps: tuple[int, int] = (3, 11), progress: bool = True,
                  panels: Sequence | None = None, extras: bool = True) -> dict:
    """Estimate of ``--all`` from empty caches, from measured per-step times.

    Returns ``{"tasks", "seconds" (per task), "core_seconds", "by_kind", "wall_seconds"
    (on ``workers`` cores, :func:`makespan`), "model_seconds"}``; nothing is written
    to the caches.
    """
    with tempfile.TemporaryDirectory() as tmp:
        tasks = (all_tasks(seeds, extras, Path(tmp) / "grid", Path(tmp) / "learned")
                 if panels is None else
                 grid_tasks(panels, seeds, Path(tmp) / "grid", Path(tmp) / "learned"))
        seconds = measure_tasks(tasks, steps, progress)
    by_kind: dict[str, float] = {}
    for t, sec in zip(tasks, seconds):
        by_kind[t.kind] = by_kind.get(t.kind, 0.0) + sec
    return {"tasks": tasks, "seconds": seconds, "core_seconds": sum(seconds),
            "by_kind": by_kind, "wall_seconds": makespan(seconds, workers),
            "model_seconds": sum(t.cost() for t in tasks)}


def figure_results(figure: int, seeds: Sequence[int] = experiments.EVAL_SEEDS,
                   datasets: Sequence[str] = experiments.FIGURE_DATASETS,
                   horizon: int | None = None, results_dir=experiments.GRID_DIR,
                   learned_dir=LEARNED_DIR, psd_file=PSD_FILE, l2l_file=L2L_FILE,
                   workers: int = 2, progress: bool = False, executor: str = "local",
                   scheduler: str | None = None, extras: Sequence[str] = (),
                   extra_learned: Mapping[str, Path] | None = None) -> dict[str, list]:
    """``{dataset: [RunResult, ...]}`` of all nine optimizers in the setting of ``figure``.

    ``horizon`` overrides the figure's (smoke runs; Figure 5 beyond 800 steps).  Missing
    runs are computed with ``executor`` (:func:`run_tasks`) and cached.
    ``extras`` adds registry optimizers beyond the paper's seven as extra rows (e.g.
    :data:`l2o.baselines.EXTRA_BASELINES`), ``extra_learned`` π files run as PSD under
    their own names (``{name: file}``, e.g. :func:`outer_policy`); extra rows take part
    in every rank of the panel, so the default, none, keeps the nine methods the
    verdicts are about.
    """
    setting = experiments.setting_of(figure)
    if horizon is not None:
        setting["horizon"] = int(horizon)
    extra_learned = dict(extra_learned or {})
    tasks = grid_tasks([(figure, datasets, setting["horizon"])], seeds, results_dir,
                       learned_dir, psd_file, l2l_file, extras=extras,
                       extra_learned=extra_learned)
    run_tasks(tasks, executor, workers, scheduler, progress)
    learned = {"psd": psd_file, "l2l": l2l_file, **extra_learned}
    out = {}
    for d in datasets:
        specs = [experiments.ExperimentSpec(d, setting["n_in"], setting["n_hidden"],
                                            setting["batch_size"], setting["horizon"], o, s)
                 for o in (*BASELINES, *extras) for s in seeds]
        out[d] = experiments.run_grid(specs, results_dir, workers=1, progress=False)
        for name, f in learned.items():
            out[d] += learned_results(name, d, setting, list(seeds), Path(f), Path(learned_dir))
    return out


#: Beyond the paper: Figure 5 continued to 2,000 iterations, on every panel (book/11_figure5
#: shows the panels its ``extension_datasets`` parameter names).
EXTENSION = {"figure": 5, "horizon": 2000, "datasets": experiments.FIGURE_DATASETS}


def all_panels() -> list[tuple[int, Sequence[str], int | None]]:
    """Every figure of the paper on every panel, and the Figure 5 continuation."""
    return ([(f, experiments.FIGURE_DATASETS, None) for f in sorted(experiments.FIGURES)]
            + [(EXTENSION["figure"], EXTENSION["datasets"], EXTENSION["horizon"])])


def all_tasks(seeds: Sequence[int] = experiments.EVAL_SEEDS, extras: bool = True,
              results_dir=experiments.GRID_DIR, learned_dir=LEARNED_DIR) -> list[GridTask]:
    """The tasks of ``--all`` still to run: every panel of :func:`all_panels` with the
    paper's nine methods, Figure 1's baselines tuned per dataset where that tuning is
    here (:func:`tuning_specs`) and, with ``extras``, the extra rows of
    :func:`default_extras` on the paper's own panels (not on the continuation).
    Costliest first."""
    tasks = grid_tasks(all_panels(), seeds, results_dir, learned_dir)
    tasks += _baseline_tasks(tuning_specs(seeds), results_dir)
    if extras:
        names, pis = default_extras()
        native = [(f, experiments.FIGURE_DATASETS, None) for f in sorted(experiments.FIGURES)]
        tasks += grid_tasks(native, seeds, results_dir, learned_dir, extras=names,
                            extra_learned=pis, paper_rows=False)
        tasks.sort(key=lambda t: t.cost(), reverse=True)
    return tasks


def run_all(seeds: Sequence[int] = experiments.EVAL_SEEDS, workers: int = 2,
            progress: bool = True, executor: str = "local", scheduler: str | None = None,
            extras: bool = True) -> None:
    """Every figure of the paper and the Figure 5 continuation, into the caches (with
    ``extras``, the extra rows too: :func:`all_tasks`)."""
    tasks = all_tasks(seeds, extras)
    log.info("the whole grid: %d tasks to run", len(tasks))
    run_tasks(tasks, executor, workers, scheduler, progress)


#: Held-out seeds of the comparison on the training objective (never used in tuning,
#: meta-training or choosing π).
TRAINING_SEEDS = tuple(range(10))
COMPARISON_FILE = experiments.ROOT / "results" / "psd" / "comparison.json"


def training_comparison(seeds: Sequence[int] = TRAINING_SEEDS, horizon: int | None = None,
                        psd_file=PSD_FILE, l2l_file=L2L_FILE, workers: int = 2,
                        progress: bool = False, executor: str = "local",
                        scheduler: str | None = None, results_dir=experiments.GRID_DIR,
                        learned_dir=LEARNED_DIR) -> list:
    """Every method on the training objective (MNIST 48-48-10, batch 64, T = 400): the
    setting ``"training"`` of :func:`figure_results`, with the same caches and tasks."""
    return figure_results("training", seeds, ("mnist",), horizon, results_dir, learned_dir,
                          psd_file, l2l_file, workers, progress, executor,
                          scheduler)["mnist"]


def write_comparison(path, runs: Sequence, seeds: Sequence[int], horizon: int, psd_file,
                     l2l_file, command: str, git: Mapping, wall: float) -> dict:
    """``comparison.json``: the summary rows of :func:`training_comparison`'s runs, the
    policy files and their metadata, and the run's provenance (read by chapter 6 and the
    report)."""
    _, _, meta = load_policy(psd_file)
    out = {"rows": experiments.summary_table(runs), "seeds": [int(s) for s in seeds],
           "horizon": int(horizon), "psd_file": str(psd_file), "psd_meta": meta,
           "l2l_file": str(l2l_file),
           **record.provenance(command, round(wall, 3), git)}
    record.atomic_write_json(path, out, nonfinite="keep")   # the form of the earlier files
    return out


def main(argv=None) -> int:
    """``python -m l2o.figures {--figure N | --all | --training}``; arguments are checked
    while parsing (one ``error:`` line, exit code 2)."""
    from l2o.cli import nonnegative_int, positive_int

    ap = argparse.ArgumentParser(prog="python -m l2o.figures")
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--figure", type=int, choices=sorted(experiments.FIGURES))
    which.add_argument("--all", action="store_true",
                       help="every figure and the Figure 5 continuation (the whole grid)")
    which.add_argument("--training", action="store_true",
                       help="every method on the training objective (MNIST 48-48-10, batch "
                            "64, T = 400), written to --out")
    ap.add_argument("--seeds", type=nonnegative_int, nargs="+", default=None,
                    help=f"default {list(experiments.EVAL_SEEDS)} "
                         f"({list(TRAINING_SEEDS)} with --training)")
    ap.add_argument("--psd", default=None, metavar="FILE",
                    help=f"with --figure or --training: the π file (default {PSD_FILE})")
    ap.add_argument("--l2l", default=None, metavar="FILE",
                    help=f"with --figure or --training: the L2L file (default {L2L_FILE})")
    ap.add_argument("--horizon", type=positive_int, default=None,
                    help="with --figure or --training: steps per run (default the setting's)")
    ap.add_argument("--out", default=None, metavar="FILE",
                    help=f"with --training: the comparison file (default {COMPARISON_FILE})")
    ap.add_argument("--workers", type=positive_int, default=2,
                    help="processes (local or Dask LocalCluster) running the grid's tasks")
    ap.add_argument("--executor", choices=EXECUTORS, default="local",
                    help="local: processes of this machine; dask: Dask distributed")
    ap.add_argument("--scheduler", default=None, metavar="ADDRESS",
                    help="Dask scheduler to use, e.g. tcp://10.0.0.5:8786 (default: a "
                         "LocalCluster of --workers processes)")
    ap.add_argument("--estimate", action="store_true",
                    help="with --all: estimate the time of the whole grid from empty caches "
                         "by timing a few steps of every kind of run; runs nothing else")
    ap.add_argument("--paper-only", action="store_true",
                    help="with --all: the paper's nine methods only, without the extra rows "
                         "(line-search baselines, a π meta-trained without GPS)")
    a = ap.parse_args(argv)
    if a.scheduler is not None and a.executor != "dask":
        ap.error("--scheduler needs --executor dask")
    if a.estimate and not a.all:
        ap.error("--estimate needs --all")
    if a.all and (a.psd or a.l2l or a.horizon):
        ap.error("--psd, --l2l and --horizon apply to --figure and --training")
    if a.out is not None and not a.training:
        ap.error("--out needs --training")
    for opt in ("psd", "l2l"):
        if getattr(a, opt) is not None and not Path(getattr(a, opt)).is_file():
            ap.error(f"--{opt}: no file {getattr(a, opt)}")
    seeds = a.seeds if a.seeds is not None else list(
        TRAINING_SEEDS if a.training else experiments.EVAL_SEEDS)
    files = dict(psd_file=Path(a.psd or PSD_FILE), l2l_file=Path(a.l2l or L2L_FILE))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    if a.estimate:
        est = estimate_grid(seeds, a.workers, extras=not a.paper_only)
        kinds = ", ".join(f"{k} {v / 60:.0f} min" for k, v in sorted(est["by_kind"].items()))
        print(f"{len(est['tasks'])} tasks, {est['core_seconds'] / 60:.0f} core-minutes "
              f"({kinds}); on {a.workers} workers about {est['wall_seconds'] / 60:.0f} min "
              f"(the progress bar's model says {est['model_seconds'] / 60:.0f} core-minutes)")
        return 0
    if a.all:
        run_all(seeds, a.workers, executor=a.executor, scheduler=a.scheduler,
                extras=not a.paper_only)
        return 0
    if a.training:
        git, t0 = record.git_state(), time.perf_counter()
        runs = training_comparison(seeds, a.horizon, workers=a.workers, progress=True,
                                   executor=a.executor, scheduler=a.scheduler, **files)
        out = Path(a.out) if a.out else COMPARISON_FILE
        command = " ".join(["python -m l2o.figures", *(sys.argv[1:] if argv is None else argv)])
        comp = write_comparison(out, runs, seeds, a.horizon or experiments.TRAINING["horizon"],
                                files["psd_file"], files["l2l_file"], command, git,
                                time.perf_counter() - t0)
        print(experiments.format_summary(comp["rows"]))
        print(f"wrote {out}")
        return 0
    res = figure_results(a.figure, seeds, horizon=a.horizon, workers=a.workers, progress=True,
                         executor=a.executor, scheduler=a.scheduler, **files)
    for d, runs in res.items():
        print(d)
        print(experiments.format_summary(experiments.summary_table(runs)))
    return 0


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
    """The hand-engineered methods of one panel (the paper's seven, and any extra
    baseline rows), best first."""
    learned = {"psd", "l2l", *OUTER_RUNS}
    return [r["optimizer"] for r in sorted(table, key=lambda r: r["rank"])
            if r["optimizer"] not in learned]


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
                workers: int = 2, datasets: Sequence[str] | None = None,
                extras: bool = False, psd_file: str | None = None) -> FigureData:
    """Run (or read from the caches) all nine optimizers for one figure of the paper.

    ``horizon = 0`` keeps the figure's horizon; relative folders are taken from the
    repository root. ``datasets`` picks a subset of the panels (default: all of
    :data:`l2o.experiments.FIGURE_DATASETS`, in that order), e.g. to continue a figure
    beyond its horizon on fewer datasets.  ``extras`` adds the extra rows of
    :func:`default_extras` (they then take part in the panels' ranks).  ``psd_file``
    replaces the shipped policy (e.g. an earlier one, to compare verdicts).
    """
    from l2o import data

    root = experiments.ROOT
    setting = dict(experiments.FIGURES[figure])
    if horizon:
        setting["horizon"] = int(horizon)
    seeds = list(range(n_seeds))
    datasets = list(experiments.FIGURE_DATASETS if datasets is None else datasets)
    names = {d: data.prepare(d, setting["n_in"]).display_name for d in datasets}
    names_x, pis = default_extras() if extras else ((), {})
    res = figure_results(figure, seeds, datasets, horizon=setting["horizon"],
                         results_dir=root / results_dir, learned_dir=root / learned_dir,
                         workers=workers, extras=names_x, extra_learned=pis,
                         psd_file=PSD_FILE if psd_file is None else root / psd_file)
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
    """One summary table per panel, as Markdown: a heading with the panel's dataset and
    setting, then the compact table of :func:`l2o.experiments.format_summary`."""
    st = fd.setting
    setting = (f"{st['n_in']}-{st['n_hidden']} net, minibatch {st['batch_size']}, "
               f"T = {st['horizon']}")
    return "\n\n".join(f"**{fd.names[d]}**, {setting}\n\n"
                       + experiments.format_summary(fd.tables[d], compact=True)
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


# ------------------------------------------------------------- tuning sensitivity
@dataclasses.dataclass
class TuningSensitivity:
    """Figure 1's panels with the baselines tuned on MNIST (the paper) and on each panel's
    own objective (as much of the learned-optimizer literature tunes).

    Attributes:
        fd: the figure as the paper runs it (baselines tuned on MNIST).
        own: dataset -> RunResults of the baselines tuned on that dataset, with PSD and
            L2L (the same runs as in ``fd``).
        tables: dataset -> summary table of ``own``.
        hparams: dataset -> ``{baseline: {"mnist": hparams, "own": hparams}}``.
        tuning: dataset -> the per-dataset tuning's provenance.
    """

    fd: FigureData
    own: dict
    tables: dict
    hparams: dict
    tuning: dict

    def psd_ranks(self) -> dict[str, tuple[int, int]]:
        """dataset -> PSD's rank with the baselines tuned on MNIST, and on the dataset."""
        return {d: (rank_of(self.fd.tables[d], "psd"), rank_of(self.tables[d], "psd"))
                for d in self.fd.datasets}


def _under_root(path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else experiments.ROOT / path


def _per_dataset_tuning(tuning_dir: str | Path, dataset: str) -> dict:
    """``{baseline: hparams}`` of the tuning on ``dataset`` in ``tuning_dir`` ({} if none)."""
    chosen = record.read_json(_under_root(tuning_dir) / dataset / "chosen.json") or {}
    return dict(chosen.get("hparams", {}))


def _tuned_specs(dataset: str, tuned: Mapping, setting: Mapping, seeds: Sequence[int]) -> list:
    """The baselines of ``tuned`` on ``dataset`` in ``setting``, with those hyperparameters."""
    return [experiments.ExperimentSpec(dataset, setting["n_in"], setting["n_hidden"],
                                       setting["batch_size"], setting["horizon"], o, s,
                                       hparams=tuned[o])
            for o in BASELINES if o in tuned for s in seeds]


def tuning_specs(seeds: Sequence[int] = experiments.EVAL_SEEDS,
                 tuning_dir: str | Path = experiments.PER_DATASET_TUNING_DIR,
                 figure: int = 1) -> list:
    """The runs of :func:`tuning_sensitivity`: ``figure``'s baselines with the
    hyperparameters tuned on each dataset, for the datasets whose tuning is here."""
    return [spec for d in experiments.FIGURE_DATASETS
            for spec in _tuned_specs(d, _per_dataset_tuning(tuning_dir, d),
                                     experiments.FIGURES[figure], seeds)]


def tuning_sensitivity(fd: FigureData, tuning_dir: str | Path = "results/tuning_per_dataset",
                       results_dir: str | Path = "results/grid", workers: int = 2,
                       ) -> TuningSensitivity:
    """Re-run ``fd``'s baselines with hyperparameters tuned on each panel's own objective.

    ``fd`` is a figure with minibatch 64 on the 48-48 net (Figure 1's setting, the one
    ``python -m l2o.experiments tune --dataset NAME`` tunes on); ``tuning_dir`` holds one
    folder per dataset with that tuning's ``chosen.json``.  Relative folders are taken
    from the repository root; runs are cached in ``results_dir`` like every other.

    Raises:
        FileNotFoundError: a dataset has no tuning there (the message gives the command).
        ValueError: ``fd``'s setting is not the one the per-dataset tuning uses.
    """
    tdir = _under_root(tuning_dir)
    st, wanted = fd.setting, experiments.TUNING_PROBLEM
    if (st["n_in"], st["n_hidden"], st["batch_size"]) != \
            (wanted["n_in"], wanted["n_hidden"], wanted["batch_size"]):
        raise ValueError(f"the per-dataset tuning is for the {wanted['n_in']}-"
                         f"{wanted['n_hidden']} net at minibatch {wanted['batch_size']} "
                         f"(Figure 1); got {st}")
    own, tables, hparams, tuning = {}, {}, {}, {}
    for d in fd.datasets:
        tuned = _per_dataset_tuning(tdir, d)
        if not tuned:
            raise FileNotFoundError(
                f"no tuning of the baselines on {d!r} in {tdir / d}: run `python -m "
                f"l2o.experiments tune --dataset {d}` (about 1-15 min on 2 cores)")
        missing = [o for o in BASELINES if o not in tuned]
        if missing:
            raise FileNotFoundError(f"{tdir / d / 'chosen.json'} has no tuning of "
                                    f"{', '.join(missing)}: re-run the command with them")
        runs = experiments.run_grid(_tuned_specs(d, tuned, st, fd.seeds),
                                    _under_root(results_dir), workers=workers, progress=False)
        own[d] = runs + [r for r in fd.results[d] if r.optimizer not in BASELINES]
        tables[d] = experiments.summary_table(own[d])
        hparams[d] = {o: {"mnist": experiments.default_hparams(o), "own": dict(tuned[o])}
                      for o in BASELINES}
        tuning[d] = record.read_json(tdir / d / "provenance.json") or {}
    return TuningSensitivity(fd, own, tables, hparams, tuning)


def plot_tuning_sensitivity(ts: TuningSensitivity, figsize=(8.4, 3.6)):
    """One panel per dataset: each method's mean meta-loss with the baselines tuned on
    MNIST (open markers) and on the dataset itself (filled; an arrow where the tuned
    values differ), PSD's as a vertical line.

    Returns ``(fig, axes)``.
    """
    import matplotlib.pyplot as plt

    from l2o.plotting import method_style

    fd = ts.fd
    fig, axes = plt.subplots(1, len(fd.datasets), figsize=figsize, sharey=True,
                             layout="constrained")
    axes = np.atleast_1d(axes)
    methods = [*BASELINES, "l2l"]
    for ax, d in zip(axes, fd.datasets):
        a = {r["optimizer"]: r["meta_loss_mean"] for r in fd.tables[d]}
        b = {r["optimizer"]: r["meta_loss_mean"] for r in ts.tables[d]}
        for i, m in enumerate(methods):
            style = method_style(m)
            ax.plot([a[m]], [i], marker=style["marker"], color=style["color"],
                    markerfacecolor="white", linestyle="none", markersize=7)
            ax.plot([b[m]], [i], marker=style["marker"], color=style["color"],
                    linestyle="none", markersize=7)
            moved = m in ts.hparams[d] and ts.hparams[d][m]["own"] != ts.hparams[d][m]["mnist"]
            if moved and np.isfinite(a[m]) and np.isfinite(b[m]):
                ax.annotate("", (b[m], i), (a[m], i),
                            arrowprops=dict(arrowstyle="->", color="0.5", lw=0.8,
                                            shrinkA=4, shrinkB=4))
        ax.axvline(a["psd"], color=method_style("psd")["color"], lw=2, label="PSD")
        ax.set_title(fd.names[d], loc="left")
        ax.grid(axis="y", visible=False)
    axes[len(axes) // 2].set_xlabel("mean meta-loss over the seeds (lower is better)")
    axes[0].set_yticks(range(len(methods)), [method_style(m)["label"] for m in methods])
    axes[0].invert_yaxis()
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", color="0.3", markerfacecolor="white",
                      linestyle="none", label="tuned on MNIST (the paper)"),
               Line2D([], [], marker="o", color="0.3", linestyle="none",
                      label="tuned on this dataset"),
               Line2D([], [], color=method_style("psd")["color"], lw=2,
                      label="Predicted Step Descent")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    return fig, axes


if __name__ == "__main__":
    raise SystemExit(main())
