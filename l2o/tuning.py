"""Tuning the hand-engineered baselines as the paper says: on the training objective.

A grid search per optimizer (book/design.md, D11): every configuration of its grid runs
from each tuning seed for ``T`` steps through the experiment runner
(:func:`l2o.experiments.train_many`), its score is the meta-loss averaged over the seeds
(``+inf`` if any seed diverged), and the lowest wins.  :func:`tune` writes ``grid.json``,
``chosen.json`` (which :func:`l2o.baselines.make_optimizer` reads as its defaults) and
``provenance.json``; :func:`check_tuning_target` keeps a folder from mixing settings.

    python -m l2o.experiments tune [--dataset NAME] [--update-chosen]
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import os
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from l2o import baselines, record
from l2o.baselines import BASELINES
from l2o.experiments import (TUNING_DIR, TUNING_PROBLEM, TUNING_SEEDS, EVAL_SEEDS,
                             _provenance, describe_problem, train_many)
from l2o.parallel import WORKER, process_pool

logger = logging.getLogger("l2o.experiments")

def _tune_task(name: str, index: int, hparams: dict, seeds: list[int], horizon: int,
               batched: bool, problem=None) -> dict:
    problem = problem if problem is not None else WORKER["problem"]
    runs = train_many(problem, name, horizon, seeds, hparams=hparams, batched=batched)
    return {
        "name": name, "index": index, "seeds": seeds,
        "meta_loss": [r.meta_loss for r in runs],
        "final_loss": [r.final_loss for r in runs],
        "diverged": [r.diverged for r in runs],
        "diverged_at": [r.diverged_at for r in runs],
        "wall_time": runs[0].wall_time,
    }


def _smoke_grid(grid: Sequence[Mapping]) -> list[dict]:
    """Two configurations around the middle of a grid (for smoke tests)."""
    if len(grid) <= 2:
        return [dict(g) for g in grid]
    mid = len(grid) // 2
    return [dict(grid[mid - 1]), dict(grid[mid])]


def _edge_params(grid: Sequence[Mapping], best: Mapping) -> list[str]:
    """Hyperparameters whose chosen value is the smallest or largest in the grid."""
    edges = []
    for key, value in best.items():
        values = sorted({g[key] for g in grid if key in g and isinstance(g[key], (int, float))})
        if len(values) > 1 and value in (values[0], values[-1]):
            edges.append(key)
    return edges


def tune(problem=None, names: Sequence[str] = BASELINES, seeds: Sequence[int] = TUNING_SEEDS,
         horizon: int = 400, grids: Mapping[str, Sequence[Mapping]] | None = None,
         out_dir: str | os.PathLike | None = TUNING_DIR, workers: int = 2, progress: bool = True,
         data_dir=None, smoke: bool = False, command: str | None = None,
         batch_seeds: bool = False, dataset: str = TUNING_PROBLEM["dataset"]) -> dict:
    """Grid-search the baselines' hyperparameters as the paper does (book/design.md, D11).

    Every configuration of every optimizer's grid runs from each tuning seed for
    ``horizon`` steps; its score is the meta-loss averaged over the seeds, ``+inf``
    if any seed diverged.  The lowest score wins (ties: first in grid order); if
    every configuration diverged the registry default is kept and a warning logged.

    Writes into ``out_dir``, merged with the entries of other optimizers already
    there when those were tuned in the same setting (horizon, seeds and objective); a
    run in another setting must re-tune every optimizer of the folder, so that a file
    never mixes settings (checked before any run starts):

    * ``grid.json``: every configuration's mean and per-seed meta-loss, final loss,
      divergence flags and iterates;
    * ``chosen.json``: ``{"hparams": {name: best}, "details": {...}, ...}``, which
      :func:`l2o.baselines.make_optimizer` reads as its defaults;
    * ``provenance.json``: command, git commit, seeds, wall time, machine; after a
      merge, the folder's previous ``provenance.json`` nested under ``previous``.

    Args:
        problem: objective; default the MNIST 48-48-10 net, minibatch 64
            (:data:`TUNING_PROBLEM`, float32), on ``dataset`` instead of MNIST if given.
        names: optimizers to tune (registry names with a grid).
        seeds: tuning seeds (default :data:`TUNING_SEEDS`, disjoint from the
            evaluation seeds).
        horizon: steps per run ``T`` (400 in the paper).
        grids: override of the registry grids, ``{name: [hparams, ...]}``.
        out_dir: folder of the three files; None writes nothing.
        workers: processes (each with one torch thread); ``<= 1`` runs in-process.
        progress: show a tqdm progress bar.
        data_dir: data folder for the default problem.
        smoke: two grid points per optimizer (for tests; combine with a short
            horizon and one seed).
        command: recorded as the command line (default ``sys.argv``).
        batch_seeds: run the seeds of an elementwise optimizer in one tensor
            (module docstring: no gain on a CPU).

    Returns:
        ``{"chosen": {name: hparams}, "grid": {...}, "provenance": {...}}``.

    Raises:
        ValueError: an invalid horizon or seed, an optimizer without a grid, or
            ``out_dir`` holds a tuning of other optimizers in another setting.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"Invalid horizon: {horizon!r} (must be an integer >= 1)")
    if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in seeds):
        raise ValueError(f"Invalid seeds: {list(seeds)!r} (must be integers >= 0)")
    started, git = time.time(), record.git_state()  # the tree as the tuning starts
    t0 = time.perf_counter()
    source = None
    if problem is None:
        from l2o import data as l2o_data

        spec = dict(TUNING_PROBLEM, dataset=dataset)
        problem = l2o_data.make_problem(spec["dataset"], spec["n_in"], spec["n_hidden"],
                                        batch_size=spec["batch_size"], data_dir=data_dir)
        source = l2o_data.prepare(spec["dataset"], spec["n_in"], data_dir=data_dir).describe()
    seeds = [int(s) for s in seeds]
    if out_dir is not None:
        check_tuning_target(out_dir, names, seeds, horizon, describe_problem(problem))
    overlap = sorted(set(seeds) & set(EVAL_SEEDS))
    if overlap:
        logger.warning("tuning seeds %s overlap the evaluation seeds", overlap)
    grids = dict(grids or {})
    table: dict[str, list[dict]] = {}
    tasks = []
    for name in names:
        entry = baselines._entry(name)
        grid = [dict(g) for g in grids.get(name, entry.grid)]
        if smoke and name not in grids:
            grid = _smoke_grid(grid)
        if not grid:
            raise ValueError(f"optimizer {name!r} has no tuning grid")
        table[name] = [{"hparams": g} for g in grid]
        for i, g in enumerate(grid):
            if batch_seeds and entry.elementwise:
                tasks.append((name, i, g, seeds, horizon, True))
            else:
                tasks.extend((name, i, g, [s], horizon, False) for s in seeds)
    # Costly tasks first for a better balance between workers.
    tasks.sort(key=lambda task: -len(task[3]))
    logger.info("tuning %d configurations (%d tasks) of %s over seeds %s, T=%d",
                sum(len(v) for v in table.values()), len(tasks), list(names), seeds, horizon)
    parts: list[dict] = []
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="tune", disable=not progress)
    try:
        if workers <= 1:
            for task in tasks:
                parts.append(_tune_task(*task, problem=problem))
                bar.update(1)
        else:
            with process_pool(workers, (problem,)) as pool:
                futures = [pool.submit(_tune_task, *task) for task in tasks]
                for fut in cf.as_completed(futures):
                    parts.append(fut.result())
                    bar.update(1)
    finally:
        bar.close()
    # Assemble per configuration, seeds in the given order.
    for part in parts:
        row = table[part["name"]][part["index"]]
        for key in ("meta_loss", "final_loss", "diverged", "diverged_at"):
            row.setdefault(key, {})
            for s, v in zip(part["seeds"], part[key]):
                row[key][s] = v
        row["wall_time"] = row.get("wall_time", 0.0) + part["wall_time"]
    chosen, details = {}, {}
    for name, rows in table.items():
        for row in rows:
            for key in ("meta_loss", "final_loss", "diverged", "diverged_at"):
                row[key] = [row[key][s] for s in seeds]
            ml = np.array(row["meta_loss"], dtype=np.float64)
            row["mean_meta_loss"] = float(ml.mean()) if np.all(np.isfinite(ml)) else math.inf
            row["n_diverged"] = int(sum(row["diverged"]))
        scores = [row["mean_meta_loss"] for row in rows]
        best = int(np.argmin(scores))
        grid = [row["hparams"] for row in rows]
        if not math.isfinite(scores[best]):
            logger.warning("every configuration of %r diverged; keeping its registry defaults",
                           name)
            chosen[name] = dict(baselines._entry(name).defaults)
            details[name] = {"mean_meta_loss": None, "all_diverged": True, "at_grid_edge": []}
            continue
        chosen[name] = dict(rows[best]["hparams"])
        edges = _edge_params(grid, chosen[name])
        if edges:
            logger.warning("%s: best %s at the edge of the grid (%s)", name, chosen[name], edges)
        details[name] = {"mean_meta_loss": scores[best], "all_diverged": False,
                         "at_grid_edge": edges, "grid_index": best, "n_configs": len(rows)}
    wall = time.perf_counter() - t0
    objective = describe_problem(problem)
    if source:
        objective["source"] = source
    threads = torch.get_num_threads() if workers <= 1 else 1
    provenance = _provenance(command, started, wall, threads, git, optimizers=list(names),
                             seeds=seeds, horizon=horizon, workers=workers, smoke=smoke,
                             objective=objective,
                             selection="min mean meta-loss sum_{t=1..T} f(x_t) over seeds; "
                                       "a diverged seed scores +inf")
    result = {"chosen": chosen, "grid": table, "details": details, "provenance": provenance}
    if out_dir is not None:
        write_tuning(Path(out_dir), result, objective, seeds, horizon)
    logger.info("tuning done in %.1f s: %s", wall, chosen)
    return result


#: What must agree for tunings to share one ``chosen.json``.
_SETTING_KEYS = ("name", "architecture", "batch_size", "dim", "n_examples", "dtype")


def _setting(seeds, horizon, objective: Mapping) -> dict:
    return {"horizon": int(horizon), "seeds": [int(s) for s in seeds],
            "objective": {k: objective.get(k) for k in _SETTING_KEYS}}


def check_tuning_target(out_dir: str | os.PathLike, names: Sequence[str], seeds: Sequence[int],
                        horizon: int, objective: Mapping) -> list[str]:
    """Whether a tuning of ``names`` may be written into ``out_dir``.

    A folder holds one setting (horizon, seeds, objective).  A tuning in the folder's
    setting merges with it; one in another setting may only replace it, i.e. it
    must re-tune every optimizer the folder holds.

    Returns:
        The optimizers kept from the folder's ``chosen.json`` (merged).

    Raises:
        ValueError: the folder holds other optimizers tuned in another setting; the
            message names both settings and what to do.
    """
    old = record.read_json(Path(out_dir) / "chosen.json") or {}
    kept = sorted(set(old.get("hparams", {})) - set(names))
    if not kept:
        return []
    have = _setting(old.get("seeds", []), old.get("horizon", -1), old.get("objective", {}))
    want = _setting(seeds, horizon, objective)
    diff = {k: (have[k], want[k]) for k in have if have[k] != want[k]}
    if diff:
        details = "; ".join(f"{k}: {a} there, {b} now" for k, (a, b) in diff.items())
        raise ValueError(
            f"{Path(out_dir) / 'chosen.json'} holds {', '.join(kept)} tuned in another setting "
            f"({details}); one file never mixes settings. Write this tuning to another folder, "
            f"or tune every optimizer of that file ({', '.join(sorted(old['hparams']))}) again")
    return kept


def write_tuning(out: Path, result: dict, objective: dict, seeds, horizon) -> None:
    out.mkdir(parents=True, exist_ok=True)
    kept = check_tuning_target(out, list(result["chosen"]), seeds, horizon, objective)
    old_chosen = (record.read_json(out / "chosen.json") or {}) if kept else {}
    old_grid = (record.read_json(out / "grid.json") or {}) if kept else {}
    chosen = {"hparams": dict(old_chosen.get("hparams", {})),
              "details": dict(old_chosen.get("details", {}))}
    chosen["hparams"].update(result["chosen"])
    chosen["details"].update(result["details"])
    chosen.update(objective=objective, seeds=list(seeds), horizon=horizon,
                  selection=result["provenance"]["selection"])
    grid = {"optimizers": dict(old_grid.get("optimizers", {}))}
    grid["optimizers"].update(result["grid"])
    grid.update(objective=objective, seeds=list(seeds), horizon=horizon,
                note="meta_loss = sum_{t=1..T} f(x_t); null = +inf (diverged)")
    merged = sorted(set(old_chosen.get("hparams", {})) - set(result["chosen"]))
    provenance = dict(result["provenance"], merged_from_previous=merged)
    if merged:  # the kept entries' own record (and, nested, the ones before it)
        provenance["previous"] = record.read_json(out / "provenance.json")
    for fname, payload in (("grid.json", grid), ("chosen.json", chosen),
                           ("provenance.json", provenance)):
        record.atomic_write_json(out / fname, payload, nonfinite="null")
