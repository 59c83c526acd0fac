"""Running optimizers on the paper's objectives: runner, experiment grid, cache.

The tuning of the baselines, which runs through this runner, lives in
:mod:`l2o.tuning` (``tune`` and ``check_tuning_target`` here call it).

One runner, :func:`train`, serves every optimizer, hand-engineered or learned: it
takes a registry name (:data:`l2o.baselines.OPTIMIZERS`) or a factory
``factory(params) -> torch.optim.Optimizer`` and records the *true objective*
``f(x_t)`` (mean loss over the whole training set, book/design.md, D9) at every
iterate ``t = 0..T`` while the optimizer sees minibatch gradients.

Randomness (book/design.md, D12)
    A run is determined by its ``seed``: ``x_0 ~ D`` is drawn with a
    ``torch.Generator`` seeded from ``SeedSequence(seed, spawn_key=(0,))`` and the
    minibatch indices with a separate generator seeded from
    ``SeedSequence(seed, spawn_key=(1,))``.  So, for a given seed, every optimizer
    starts from the same ``x_0`` and sees the same sequence of minibatches.
    Tuning uses :data:`TUNING_SEEDS` (1000, 1001, 1002); figures use
    :data:`EVAL_SEEDS` (0..4), so the tuned hyperparameters are never scored on the
    runs that are plotted.

Divergence
    A run *diverges* at the first iterate ``t`` whose true objective is NaN/Inf or
    exceeds ``divergence_factor * f(x_0)`` (default :data:`DIVERGENCE_FACTOR`
    ``= 1e3``, i.e. about 2300 nats for 10 classes), or whose minibatch loss or
    gradient is not finite.  The run then stops; ``diverged_at = t`` and every
    entry of both curves from ``t`` on is NaN.  :func:`train` never raises because
    of divergence.  The meta-loss of a diverged run is ``+inf``.

Meta-loss
    ``sum_{t=1..T} f(x_t)`` (:func:`meta_loss`), the paper's objective for the
    optimizer, also used to tune the baselines (book/design.md, D11).

Batching seeds
    For elementwise optimizers (SGD, momentum, Adam, AdaGrad, RMSprop) several
    seeds run in one pass: the iterates are stacked as rows of one ``(N, dim)``
    tensor for the objective, and the optimizer receives one ``(dim,)`` parameter
    per seed, so every row is updated by the same kernels as in a run on its own.
    The results are bitwise equal to sequential runs (tested in float64).
    CG and L-BFGS (whose inner products couple all coordinates) always run one
    seed at a time.  Batching is opt-in (``batched=True``, ``batch_seeds=True``):
    on a CPU the per-step evaluation of the true objective on the whole training
    set dominates the cost (about 15 ms per iterate for MNIST 48-48-10 on one
    thread, against under 1 ms for the minibatch step), and it costs as much per
    row in a batch as alone, so batching saves nothing there (it is ~25 % slower
    in float32); it pays off on a GPU or with ``eval_every > 1``.

Command line::

    python -m l2o.experiments tune [--smoke] [--update-chosen]
    python -m l2o.experiments grid --figure 1 [--seeds 0 1 2 3 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import functools
import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from l2o import baselines, record, rollout
from l2o.parallel import one_thread, process_pool
from l2o.baselines import BASELINES, OPTIMIZERS, default_hparams, make_optimizer

logger = logging.getLogger(__name__)

__all__ = [
    "DIVERGENCE_FACTOR",
    "TUNING_SEEDS",
    "EVAL_SEEDS",
    "FIGURES",
    "FIGURE_DATASETS",
    "TUNING_DIR",
    "GRID_DIR",
    "RunResult",
    "ResultFileError",
    "meta_loss",
    "initial_iterate",
    "minibatch_stream",
    "train",
    "train_many",
    "tune",
    "ExperimentSpec",
    "figure_specs",
    "result_path",
    "pending_specs",
    "run_grid",
    "compute_specs",
    "load_results",
    "summary_table",
    "format_summary",
    "register_optimizer",
    "main",
]

register_optimizer = baselines.register_optimizer  # the hook for learned optimizers

#: The project folder: ``$L2O_ROOT``, else the checkout, else the working directory
#: (:func:`l2o.paths.project_root`); every relative results path is taken from it.
ROOT = record.ROOT
#: A run has diverged once ``f(x_t) > DIVERGENCE_FACTOR * f(x_0)`` (or is not finite).
DIVERGENCE_FACTOR = 1e3
#: Seeds of the tuning runs; disjoint from :data:`EVAL_SEEDS`.
TUNING_SEEDS = (1000, 1001, 1002)
#: Seeds of the runs shown in the figures (mean +- std over them, book/design.md, D12).
EVAL_SEEDS = (0, 1, 2, 3, 4)
TUNING_DIR = ROOT / "results" / "tuning"
SMOKE_TUNING_DIR = ROOT / "results" / "smoke" / "tuning"
GRID_DIR = ROOT / "results" / "grid"
#: Beyond the paper: the baselines tuned on each figure dataset's 48-48 objective
#: (``python -m l2o.experiments tune --dataset NAME``), one folder per dataset.
PER_DATASET_TUNING_DIR = ROOT / "results" / "tuning_per_dataset"
#: Version of the result-file layout; part of every cache key.
RESULT_FORMAT = 1

#: The paper's test settings (section 4): net, minibatch size, horizon per figure.
FIGURES: dict[int, dict[str, int]] = {
    1: dict(n_in=48, n_hidden=48, batch_size=64, horizon=400),
    2: dict(n_in=100, n_hidden=200, batch_size=64, horizon=400),
    3: dict(n_in=48, n_hidden=48, batch_size=10, horizon=400),
    4: dict(n_in=100, n_hidden=200, batch_size=10, horizon=400),
    5: dict(n_in=100, n_hidden=200, batch_size=64, horizon=800),
}
#: Panels (a), (b), (c) of every figure.
FIGURE_DATASETS = ("faces", "cifar10", "cifar100")
#: The training objective everything is tuned on (book/design.md, D11).
TUNING_PROBLEM = dict(dataset="mnist", n_in=48, n_hidden=48, batch_size=64)
#: The setting ``"training"``: every method on the training objective itself (T = 400),
#: the yardstick of meta-training (``python -m l2o.figures --training``).
TRAINING = dict(n_in=TUNING_PROBLEM["n_in"], n_hidden=TUNING_PROBLEM["n_hidden"],
                batch_size=TUNING_PROBLEM["batch_size"], horizon=400)


def setting_of(figure: int | str) -> dict[str, int]:
    """The net, minibatch and horizon of a figure (1-5) or of ``"training"``: a new dict.

    Raises:
        ValueError: any other value.
    """
    if figure == "training":
        return dict(TRAINING)
    if isinstance(figure, bool) or figure not in FIGURES:
        raise ValueError(f"Invalid figure: {figure!r} (valid: {sorted(FIGURES)} or 'training')")
    return dict(FIGURES[figure])


# ======================================================================= seeds
def _derived_seed(seed: int, purpose: int) -> int:
    """A 63-bit seed for one purpose (0: ``x_0``, 1: minibatches) of run ``seed``."""
    state = np.random.SeedSequence(int(seed), spawn_key=(purpose,)).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def initial_iterate(problem, seed: int) -> torch.Tensor:
    """``x_0 ~ D`` of run ``seed``: ``(dim,)``, the same for every optimizer."""
    gen = torch.Generator().manual_seed(_derived_seed(seed, 0))
    return problem.init(gen)


def minibatch_stream(problem, seed: int, horizon: int) -> torch.Tensor:
    """Minibatch indices of run ``seed``: ``(T, B)``, row ``t`` used at step ``t``.

    Drawn one step at a time, so the first ``T`` rows do not depend on the horizon.
    """
    gen = torch.Generator().manual_seed(_derived_seed(seed, 1))
    if horizon == 0:
        return torch.zeros((0, problem.batch_size), dtype=torch.long)
    return torch.stack([problem.sample_indices(gen) for _ in range(horizon)])


# ===================================================================== results
def streams_of(problem, seeds: Sequence[int],
               horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x_0 (n, dim)`` and minibatch indices ``(T, n, B)`` of runs ``seeds``: what every
    optimizer, hand-engineered or learned, starts from and sees."""
    x0 = torch.stack([initial_iterate(problem, s) for s in seeds])
    return x0, torch.stack([minibatch_stream(problem, s, horizon) for s in seeds], dim=1)


class ResultFileError(ValueError):
    """A result file is missing a part, unreadable, or inconsistent."""


def meta_loss(curve) -> float:
    """The paper's meta-loss ``sum_{t=1..T} f(x_t)`` of a true-objective curve.

    Args:
        curve: ``(T+1,)`` values ``f(x_0), ..., f(x_T)``.

    Returns:
        The sum, or ``+inf`` if any of ``f(x_1..T)`` is NaN or infinite (a diverged
        run; the curve of a diverged run is NaN from the divergence on).
    """
    tail = np.asarray(curve, dtype=np.float64)[1:]
    if not np.all(np.isfinite(tail)):
        return math.inf
    return float(tail.sum())


def _jsonable(value):
    """Plain-JSON version of ``value`` with every non-finite number ``null``.

    :func:`l2o.record.to_jsonable` in the form this module's files had before it: the
    result files (format 1), the tuning files (``grid.json`` says null = +inf) and the
    cache keys (:meth:`ExperimentSpec.key` hashes this form) stay as they are.
    """
    return record.to_jsonable(value, nonfinite="null")


@dataclass
class RunResult:
    """One optimizer run on one objective.

    Attributes:
        true_loss: ``(T+1,)`` float64, ``f(x_t)`` for ``t = 0..T`` on the full
            training set; NaN where not evaluated (see ``eval_every``) or from
            ``diverged_at`` on.
        minibatch_loss: ``(T,)`` float64, ``f_hat_t(x_t)`` on the minibatch used at
            step ``t`` (NaN from ``diverged_at`` on).
        optimizer: registry name or label of the factory.
        hparams: hyperparameters the optimizer was built with.
        seed: the run's seed (``x_0`` and minibatch stream).
        problem: description of the objective (name, architecture, sizes, dtype).
        horizon: number of steps ``T``.
        wall_time: seconds for the whole call; shared by the ``batched`` seeds run
            together (so per-seed time is ``wall_time / batched``).
        diverged: whether the run diverged (module docstring).
        diverged_at: first diverged iterate index ``t``, or None.
        eval_every: the true objective was evaluated at every ``eval_every``-th
            iterate (and at ``t = 0`` and ``t = T``).
        divergence_factor: the factor of the divergence rule.
        grad_evals: minibatch gradient evaluations (closure calls) of this seed.
        batched: number of seeds run together in one tensor (1 = on its own).
        config: the :class:`ExperimentSpec` fields (with resolved hyperparameters)
            when the run comes from :func:`run_grid`, else empty.
        meta: environment: torch version, thread count.
    """

    true_loss: np.ndarray
    minibatch_loss: np.ndarray
    optimizer: str
    hparams: dict
    seed: int
    problem: dict
    horizon: int
    wall_time: float
    diverged: bool = False
    diverged_at: int | None = None
    eval_every: int = 1
    divergence_factor: float | None = DIVERGENCE_FACTOR
    grad_evals: int = 0
    batched: int = 1
    config: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    # ---------------------------------------------------------------- metrics
    @property
    def meta_loss(self) -> float:
        """``sum_{t=1..T} f(x_t)``; ``+inf`` if diverged.

        With ``eval_every > 1`` the sum over evaluated iterates times ``eval_every``
        (a Riemann-sum approximation).
        """
        if self.diverged:
            return math.inf
        if self.eval_every == 1:
            return meta_loss(self.true_loss)
        vals = self.true_loss[1:]
        vals = vals[np.isfinite(vals)]
        return float(vals.sum() * self.eval_every)

    @property
    def final_loss(self) -> float:
        """``f(x_T)`` (NaN if diverged)."""
        return float(self.true_loss[-1])

    @property
    def best_loss(self) -> float:
        """Smallest evaluated ``f(x_t)`` (before any divergence)."""
        finite = self.true_loss[np.isfinite(self.true_loss)]
        return float(finite.min()) if finite.size else math.nan

    @property
    def evaluated_steps(self) -> np.ndarray:
        """Iterate indices at which the true objective was evaluated."""
        steps = np.arange(0, self.horizon + 1, self.eval_every)
        if steps[-1] != self.horizon:
            steps = np.append(steps, self.horizon)
        return steps

    # ---------------------------------------------------------- serialisation
    def metadata(self) -> dict:
        """Everything but the curves, as plain JSON."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("true_loss", "minibatch_loss")}
        out["meta_loss"] = self.meta_loss
        out["final_loss"] = self.final_loss
        out["best_loss"] = self.best_loss
        return _jsonable(out)

    def to_dict(self) -> dict:
        """Plain-JSON dict including the curves (NaN written as null)."""
        out = self.metadata()
        out["true_loss"] = _jsonable(self.true_loss.tolist())
        out["minibatch_loss"] = _jsonable(self.minibatch_loss.tolist())
        return out

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``<stem>.npz`` (curves) and ``<stem>.json`` (metadata) atomically.

        The JSON, written last, carries the npz's SHA-256 so that a damaged or
        mismatched pair is detected by :meth:`load`.
        """
        stem = Path(path).with_suffix("")
        npz, js = stem.with_suffix(".npz"), stem.with_suffix(".json")
        buf = io.BytesIO()
        np.savez(buf, true_loss=self.true_loss, minibatch_loss=self.minibatch_loss)
        meta = self.metadata()
        meta["format"] = RESULT_FORMAT
        meta["npz_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
        # shared: two runs may fill the same cache at once
        record.atomic_write_bytes(npz, buf.getvalue(), shared=True)
        record.atomic_write_json(js, meta, nonfinite="null", shared=True)
        return npz, js

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RunResult":
        """Read a pair written by :meth:`save` (``path`` with or without suffix).

        Raises:
            ResultFileError: a file is missing, unreadable, or the pair is inconsistent.
        """
        stem = Path(path).with_suffix("")
        npz, js = stem.with_suffix(".npz"), stem.with_suffix(".json")
        try:
            with open(js) as f:
                meta = json.load(f)
            if meta.get("format") != RESULT_FORMAT:
                raise ResultFileError(
                    f"{js}: format {meta.get('format')!r}, expected {RESULT_FORMAT}")
            if _sha256(npz) != meta["npz_sha256"]:
                raise ResultFileError(f"{npz}: checksum does not match {js.name}")
            with np.load(npz, allow_pickle=False) as z:
                true_loss = np.array(z["true_loss"], dtype=np.float64)
                mb = np.array(z["minibatch_loss"], dtype=np.float64)
            kw = {f.name: meta[f.name] for f in dataclasses.fields(cls)
                  if f.name not in ("true_loss", "minibatch_loss")}
        except ResultFileError:
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
            raise ResultFileError(
                f"{stem}: unreadable result ({type(exc).__name__}: {exc})") from exc
        horizon = int(kw["horizon"])
        if true_loss.shape != (horizon + 1,) or mb.shape != (horizon,):
            raise ResultFileError(f"{stem}: curve shapes {true_loss.shape}, {mb.shape} "
                                  f"do not match horizon {horizon}")
        return cls(true_loss=true_loss, minibatch_loss=mb, **kw)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe_problem(problem) -> dict:
    """JSON description of an objective (works for any object with the attributes)."""
    out = {"name": getattr(problem, "name", "") or type(problem).__name__}
    for attr in ("architecture", "n_in", "n_hidden", "n_classes", "batch_size", "dim"):
        if hasattr(problem, attr):
            out[attr] = getattr(problem, attr)
    x = getattr(problem, "x", None)
    if x is not None:
        out["n_examples"] = int(x.shape[0])
    if hasattr(problem, "dtype"):
        out["dtype"] = str(problem.dtype).replace("torch.", "")
    return out


# ====================================================================== runner
def _resolve_optimizer(optimizer, hparams, label):
    """``(label, build(params), resolved hparams, elementwise)`` for a name or factory."""
    if isinstance(optimizer, str):
        entry = baselines._entry(optimizer)
        resolved = default_hparams(optimizer)
        resolved.update(hparams or {})

        def build(params):
            return make_optimizer(optimizer, params, tuned=False, **resolved)

        return label or optimizer, build, resolved, entry.elementwise
    if not callable(optimizer):
        raise TypeError("optimizer must be a registry name or a factory(params) -> Optimizer")
    resolved = dict(hparams or {})

    def build(params):
        return optimizer(params, **resolved)

    name = label or getattr(optimizer, "__name__", type(optimizer).__name__)
    return name, build, resolved, False


def divergence_point(true_loss, minibatch_loss=None,
                     factor: float | None = DIVERGENCE_FACTOR) -> int | None:
    """The iterate at which a recorded run counts as diverged, or None: the runner's rule
    (:func:`train`) applied to curves recorded elsewhere (the learned optimizers' batched
    rollouts).

    ``true_loss (T+1,)`` is ``f(x_t)`` at every iterate, ``minibatch_loss (T,)`` the loss
    of step ``t``'s minibatch at ``x_t``; the run diverges at the first ``t`` where
    ``f(x_t)`` is not finite or exceeds ``factor · |f(x_0)|``, or where the minibatch
    loss at ``x_t`` is not finite.
    """
    f = np.asarray(true_loss, dtype=np.float64)
    bad = ~np.isfinite(f)
    if factor is not None and f.size and np.isfinite(f[0]):
        with np.errstate(invalid="ignore"):
            bad |= f > abs(f[0]) * factor
    if minibatch_loss is not None:
        mb = np.asarray(minibatch_loss, dtype=np.float64)
        bad[:mb.size] |= ~np.isfinite(mb)
    return int(np.argmax(bad)) if bad.any() else None


def _run_rows(problem, build, seeds: Sequence[int], horizon: int, eval_every: int,
              divergence_factor: float | None, callback) -> tuple[list[dict], float]:
    """Run ``len(seeds)`` independent trajectories, rows of one tensor (module docstring),
    through the package's one loop (:func:`l2o.rollout.rollout`, divergence watched)."""
    T = int(horizon)
    x0, streams = streams_of(problem, seeds, T)
    traj = rollout.rollout(problem, rollout.OptimizerActor(build), x0, streams, T,
                           eval_every=eval_every, watch=True,
                           divergence_factor=divergence_factor, callback=callback,
                           labels=[f"seed {s}" for s in seeds])
    out = [
        dict(true_loss=traj.true_loss[i], minibatch_loss=traj.minibatch_loss[i],
             diverged=traj.diverged_at[i] is not None, diverged_at=traj.diverged_at[i],
             grad_evals=int(traj.grad_evals[i]))
        for i in range(len(seeds))
    ]
    return out, traj.wall_time


def _environment() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads()}


def train(problem, optimizer, horizon: int, seed: int, hparams: Mapping[str, Any] | None = None,
          eval_every: int = 1, divergence_factor: float | None = DIVERGENCE_FACTOR,
          callback: Callable | None = None, label: str | None = None) -> RunResult:
    """Run one optimizer for ``horizon`` steps on ``problem`` from seed ``seed``.

    Args:
        problem: an objective with ``init``, ``sample_indices``,
            ``minibatch_loss_and_grad``, ``true_loss`` (e.g.
            :class:`l2o.problems.MLPProblem`).
        optimizer: a registry name (``"adam"``, ...) or a factory
            ``factory(params, **hparams) -> torch.optim.Optimizer``; ``params`` is a
            list holding one ``(dim,)`` tensor, the flat iterate ``x``.
        horizon: number of steps ``T``.
        seed: fixes ``x_0`` and the minibatch stream (module docstring).
        hparams: for a name, overrides of the (tuned) defaults; for a factory, its
            keyword arguments.
        eval_every: evaluate the true objective every this many iterates (1 = all).
        divergence_factor: threshold factor of the divergence rule; None disables
            the threshold (non-finite values still count as divergence).
        callback: ``callback(t, x_t, f)`` after ``x_0`` and after every step;
            ``x_t`` is a copy of the ``(dim,)`` iterate, ``f`` the true objective
            ``(1,)`` or None where not evaluated.
        label: name recorded for a factory (default: its ``__name__``).

    Returns:
        A :class:`RunResult`; divergence is recorded, never raised.

    The step closure evaluates the minibatch loss of step ``t`` at the current
    parameters and sets ``.grad`` (no autograd); optimizers may call it several
    times per step (the CG line search, L-BFGS ``same_batch`` curvature).
    """
    return train_many(problem, optimizer, horizon, [seed], hparams=hparams, batched=False,
                      eval_every=eval_every, divergence_factor=divergence_factor,
                      callback=callback, label=label)[0]


def train_many(problem, optimizer, horizon: int, seeds: Iterable[int],
               hparams: Mapping[str, Any] | None = None, batched: bool = False,
               eval_every: int = 1, divergence_factor: float | None = DIVERGENCE_FACTOR,
               callback: Callable | None = None, label: str | None = None) -> list[RunResult]:
    """:func:`train` for several seeds, optionally batched into one tensor.

    Args:
        batched: run all seeds together (the optimizer then receives one ``(dim,)``
            parameter per seed).  Only for elementwise optimizers: True with CG or
            L-BFGS raises ValueError; True with a factory asserts that the factory's
            optimizer treats its parameters independently.
        callback: as in :func:`train`; when batched, ``x_t`` is ``(N, dim)`` and
            ``f`` is ``(N,)``.
        other arguments: as in :func:`train`.

    Returns:
        One :class:`RunResult` per seed, in order.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        return []
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 0:
        raise ValueError(f"Invalid horizon: {horizon}")
    if isinstance(eval_every, bool) or not isinstance(eval_every, (int, np.integer)) \
            or eval_every < 1:
        raise ValueError(f"Invalid eval_every: {eval_every}")
    if divergence_factor is not None and not divergence_factor > 0:
        raise ValueError(f"Invalid divergence_factor: {divergence_factor}")
    name, build, resolved, elementwise = _resolve_optimizer(optimizer, hparams, label)
    if batched and isinstance(optimizer, str) and not elementwise:
        raise ValueError(f"optimizer {optimizer!r} couples coordinates; it cannot be batched")
    groups = [seeds] if batched else [[s] for s in seeds]
    desc = describe_problem(problem)
    results = []
    for group in groups:
        runs, wall = _run_rows(problem, build, group, int(horizon), int(eval_every),
                               divergence_factor, callback)
        for s, run in zip(group, runs):
            results.append(RunResult(
                optimizer=name, hparams=dict(resolved), seed=s, problem=dict(desc),
                horizon=int(horizon), wall_time=wall, eval_every=int(eval_every),
                divergence_factor=divergence_factor, batched=len(group),
                meta=_environment(), **run,
            ))
    return results


# ====================================================================== tuning
def _provenance(command: str | None, started: float, wall: float, threads: int, git: dict,
                **extra) -> dict:
    prov = record.provenance(
        command if command is not None else " ".join([sys.executable, *sys.argv]),
        round(wall, 3), git,
        started_utc=datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        **extra)
    # cpu_count: this file's key before record.py (chapter 2 reads it)
    prov["machine"].update(cpu_count=os.cpu_count(), torch_threads_worker=threads)
    return _jsonable(prov)


def tune(*args, **kwargs) -> dict:
    """Grid-search the baselines: :func:`l2o.tuning.tune` (the tuning lives in
    :mod:`l2o.tuning`; this name is kept for the callers of this module)."""
    from l2o import tuning

    return tuning.tune(*args, **kwargs)


def check_tuning_target(*args, **kwargs) -> list[str]:
    """:func:`l2o.tuning.check_tuning_target`."""
    from l2o import tuning

    return tuning.check_tuning_target(*args, **kwargs)


# ============================================================ experiment grid
@dataclass(frozen=True)
class ExperimentSpec:
    """One run of the paper's comparison: an optimizer on a dataset's objective.

    Attributes:
        dataset: ``"faces"``, ``"cifar10"``, ``"cifar100"`` or ``"mnist"``.
        n_in: input units (projected dimension).
        n_hidden: hidden units.
        batch_size: minibatch size.
        horizon: steps ``T``.
        optimizer: registry name.
        seed: run seed (``x_0`` and minibatch stream).
        hparams: overrides of the (tuned) defaults; a dict is stored as sorted pairs.
        dtype: ``"float32"`` (default) or ``"float64"``.
        eval_every: true-objective evaluation period.
        divergence_factor: of the divergence rule.
    """

    dataset: str
    n_in: int
    n_hidden: int
    batch_size: int
    horizon: int
    optimizer: str
    seed: int
    hparams: tuple = ()
    dtype: str = "float32"
    eval_every: int = 1
    divergence_factor: float = DIVERGENCE_FACTOR

    def __post_init__(self):
        hp = self.hparams
        if isinstance(hp, Mapping):
            hp = hp.items()
        # sorted (name, value) pairs, lists as tuples: the spec stays hashable
        object.__setattr__(self, "hparams", tuple(sorted(
            (str(k), tuple(v) if isinstance(v, list) else v) for k, v in hp)))
        for name in ("n_in", "n_hidden", "batch_size", "eval_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"Invalid {name}: {v!r}")
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, (int, np.integer)) \
                or self.horizon < 0:
            raise ValueError(f"Invalid horizon: {self.horizon!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"Invalid dtype: {self.dtype!r} (float32 or float64)")
        if not isinstance(self.optimizer, str):
            raise ValueError("optimizer must be a registry name")
        if not self.divergence_factor > 0:
            raise ValueError(f"Invalid divergence_factor: {self.divergence_factor}")

    def resolved_hparams(self) -> dict:
        """Tuned (or registry) defaults of the optimizer, updated with the overrides."""
        hp = default_hparams(self.optimizer)
        hp.update(dict(self.hparams))
        return hp

    def config(self) -> dict:
        """The spec as JSON, with resolved hyperparameters (the cache key's content)."""
        out = dataclasses.asdict(self)
        out["overrides"] = dict(self.hparams)
        out["hparams"] = self.resolved_hparams()
        return _jsonable(out)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ExperimentSpec":
        """The spec of a stored result (its overrides, not its resolved hparams)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"hparams"}
        return cls(hparams=dict(config.get("overrides", {})),
                   **{k: v for k, v in config.items() if k in names})

    def key(self) -> str:
        """12 hex digits of SHA-256 over :meth:`config` and the result format."""
        payload = json.dumps({"config": self.config(), "format": RESULT_FORMAT}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def stem(self) -> str:
        """Readable file stem, e.g. ``faces_48-48_b64_T400_adam_seed0_<hash>``."""
        opt = re.sub(r"[^A-Za-z0-9_-]", "-", self.optimizer)
        return (f"{self.dataset}_{self.n_in}-{self.n_hidden}_b{self.batch_size}_T{self.horizon}"
                f"_{opt}_seed{self.seed}_{self.key()}")


def figure_specs(figure: int, seeds: Sequence[int] = EVAL_SEEDS,
                 optimizers: Sequence[str] | None = None,
                 datasets: Sequence[str] = FIGURE_DATASETS, **overrides) -> list[ExperimentSpec]:
    """The runs behind one of the paper's Figures 1-5.

    ====== ========= ========= ========= =========
    figure net       minibatch horizon   note
    ====== ========= ========= ========= =========
    1      48-48     64        400       same net as meta-training
    2      100-200   64        400       enlarged net
    3      48-48     10        400       noisier gradients
    4      100-200   10        400       both
    5      100-200   64        800       twice the horizon
    ====== ========= ========= ========= =========

    Panels (a)-(c): TFD (``"faces"``), CIFAR-10, CIFAR-100.

    Args:
        figure: 1..5.
        seeds: run seeds (default :data:`EVAL_SEEDS`).
        optimizers: registry names; default the paper's seven
            (:data:`l2o.baselines.BASELINES`).  The line-search extras
            (:data:`l2o.baselines.EXTRA_BASELINES`) and learned optimizers are opt-in.
        datasets: panels.
        **overrides: other :class:`ExperimentSpec` fields (e.g. ``horizon=20``).
    """
    setting = setting_of(figure)
    names = list(BASELINES) if optimizers is None else list(optimizers)
    for n in names:
        baselines._entry(n)
    from l2o.data import _canonical

    for d in datasets:
        _canonical(d)  # an unknown name fails here, before any run is scheduled
    setting.update(overrides)
    return [ExperimentSpec(dataset=d, optimizer=o, seed=int(s), **setting)
            for d in datasets for o in names for s in seeds]


def result_path(spec: ExperimentSpec, results_dir: str | os.PathLike) -> Path:
    """``<results_dir>/<spec.stem()>`` (add ``.json`` / ``.npz``)."""
    return Path(results_dir) / spec.stem()


def _load_cached(spec: ExperimentSpec, results_dir) -> RunResult | None:
    """The stored result of ``spec``; None if absent; corrupt files are removed."""
    stem = result_path(spec, results_dir)
    npz, js = stem.with_suffix(".npz"), stem.with_suffix(".json")
    if not npz.exists() and not js.exists():
        return None
    try:
        res = RunResult.load(stem)
        if res.config != spec.config():
            raise ResultFileError(f"{stem}: stored configuration differs from the spec")
        return res
    except ResultFileError as exc:
        logger.warning("%s; removing it and running again", exc)
        for p in (npz, js):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        return None


def pending_specs(specs: Iterable[ExperimentSpec], results_dir) -> list[ExperimentSpec]:
    """The specs without a valid stored result (corrupt results are removed)."""
    return [s for s in specs if _load_cached(s, results_dir) is None]


@functools.lru_cache(maxsize=4)
def _cached_problem(dataset, n_in, n_hidden, batch_size, dtype, data_dir):
    from l2o import data as l2o_data

    return l2o_data.make_problem(dataset, n_in, n_hidden, batch_size=batch_size,
                                 data_dir=data_dir, dtype=getattr(torch, dtype))


def _problem_for(spec: ExperimentSpec, data_dir):
    return _cached_problem(spec.dataset, spec.n_in, spec.n_hidden, spec.batch_size,
                           spec.dtype, None if data_dir is None else str(data_dir))


def compute_specs(specs: list[ExperimentSpec], data_dir=None) -> list[RunResult]:
    """Run specs that differ only in their seed; the results, not saved.

    Runs with one torch thread (:func:`one_thread`: float results depend on the
    thread count), so the results are those :func:`run_grid` stores wherever this runs
    (this process, a pool process, a Dask worker).
    """
    first = specs[0]
    problem = _problem_for(first, data_dir)
    batched = len(specs) > 1
    with one_thread():
        runs = train_many(problem, first.optimizer, first.horizon, [s.seed for s in specs],
                          hparams=first.resolved_hparams(), batched=batched,
                          eval_every=first.eval_every,
                          divergence_factor=first.divergence_factor)
    for spec, run in zip(specs, runs):
        run.config = spec.config()
    return runs


def _run_specs(specs: list[ExperimentSpec], results_dir: str, data_dir) -> int:
    """Run specs that differ only in their seed, save each result; returns the count."""
    for spec, run in zip(specs, compute_specs(specs, data_dir)):
        run.save(result_path(spec, results_dir))
    return len(specs)


def _tasks_for(specs: list[ExperimentSpec], batch_seeds: bool) -> list[list[ExperimentSpec]]:
    groups: dict[ExperimentSpec, list[ExperimentSpec]] = {}
    tasks = []
    for s in specs:
        if batch_seeds and baselines.is_elementwise(s.optimizer):
            groups.setdefault(dataclasses.replace(s, seed=0), []).append(s)
        else:
            tasks.append([s])
    tasks.extend(groups.values())

    def cost(task):
        s = task[0]
        return len(task) * s.horizon * s.n_hidden * (s.n_in + 10)

    tasks.sort(key=cost, reverse=True)
    return tasks


def run_grid(specs: Iterable[ExperimentSpec], results_dir: str | os.PathLike = GRID_DIR,
             workers: int = 2, progress: bool = True, data_dir=None,
             batch_seeds: bool = False) -> list[RunResult]:
    """Run every spec that has no stored result, in parallel; return all results.

    Resumable: a spec whose result pair exists and matches (checksum, configuration
    with the current tuned hyperparameters) is skipped; a damaged pair is removed and
    run again.  With ``batch_seeds``, seeds of an elementwise optimizer that share
    everything else run batched in one task.

    Args:
        specs: the runs (e.g. from :func:`figure_specs`).
        results_dir: folder of the ``.npz`` + ``.json`` result pairs.
        workers: processes, one torch thread each; ``<= 1`` runs in this process.
        progress: tqdm progress bar (counts runs).
        data_dir: data folder (see :func:`l2o.data.resolve_data_dir`).
        batch_seeds: batch seeds of elementwise optimizers (module docstring).

    Returns:
        The results in the order of ``specs``.

    Raises:
        RuntimeError: some runs failed (after all others have finished and been saved).
    """
    specs = list(specs)
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    todo = pending_specs(dict.fromkeys(specs), results_dir)
    tasks = _tasks_for(todo, batch_seeds)
    logger.info("run_grid: %d of %d runs to do in %d tasks (%s)", len(todo), len(specs),
                len(tasks), results_dir)
    failures = []
    if tasks:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="runs", disable=not progress)
        try:
            if workers <= 1:
                for task in tasks:
                    try:
                        bar.update(_run_specs(task, str(results_dir), data_dir))
                    except Exception as exc:  # report after the others have run
                        logger.error("task %s failed: %s", task[0].stem(), exc)
                        failures.append((task, exc))
            else:
                # Prepare each dataset once here; forked workers inherit the cache.
                if "fork" in multiprocessing.get_all_start_methods():
                    for key in dict.fromkeys((s.dataset, s.n_in, s.dtype) for s in todo):
                        try:
                            from l2o import data as l2o_data

                            l2o_data.prepare(key[0], key[1], data_dir=data_dir,
                                             dtype=getattr(torch, key[2]))
                        except Exception as exc:  # the worker will report it per task
                            logger.debug("could not prepare %s: %s", key, exc)
                with process_pool(workers) as pool:
                    futures = {pool.submit(_run_specs, task, str(results_dir), data_dir): task
                               for task in tasks}
                    for fut in cf.as_completed(futures):
                        try:
                            bar.update(fut.result())
                        except Exception as exc:
                            task = futures[fut]
                            logger.error("task %s failed: %s", task[0].stem(), exc)
                            failures.append((task, exc))
        finally:
            bar.close()
    if failures:
        lines = "\n".join(f"  {t[0].stem()} (+{len(t) - 1} seeds): {type(e).__name__}: {e}"
                          for t, e in failures)
        raise RuntimeError(f"{len(failures)} of {len(tasks)} tasks failed:\n{lines}")
    out = []
    for spec in specs:
        res = _load_cached(spec, results_dir)
        if res is None:
            raise RuntimeError(f"result of {spec.stem()} missing after the run")
        out.append(res)
    return out


def _matches(actual, wanted) -> bool:
    if isinstance(wanted, (list, tuple, set, frozenset)):
        return actual in wanted
    return actual == wanted


def load_results(results_dir: str | os.PathLike = GRID_DIR, current_only: bool = False,
                 **filters) -> list[RunResult]:
    """Every valid result in ``results_dir`` matching the filters.

    Args:
        results_dir: a folder written by :func:`run_grid`.
        current_only: keep only results whose hyperparameters are what the spec
            would resolve to now; after re-tuning, the folder still holds the runs
            made with the old defaults (their cache keys differ), which this drops.
        **filters: :class:`ExperimentSpec` field (or :class:`RunResult` attribute)
            ``= value`` or ``= [values]``, e.g. ``dataset="faces", seed=[0, 1]``.

    Returns:
        Results sorted by file name; unreadable ones are skipped with a warning.
    """
    out = []
    for js in sorted(Path(results_dir).glob("*.json")):
        try:
            res = RunResult.load(js)
        except ResultFileError as exc:
            logger.warning("skipping %s", exc)
            continue
        if current_only:
            try:
                if ExperimentSpec.from_config(res.config).config() != res.config:
                    continue
            except (TypeError, ValueError):
                continue
        ok = True
        for key, wanted in filters.items():
            actual = res.config[key] if key in res.config else getattr(res, key, None)
            if not _matches(actual, wanted):
                ok = False
                break
        if ok:
            out.append(res)
    return out


# ==================================================================== summary
def _mean_std(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def summary_table(results: Iterable[RunResult]) -> list[dict]:
    """Per setting and optimizer: meta-loss, final and best objective, rank, divergences.

    A *setting* is (problem name, architecture, minibatch size, horizon).  Means and
    sample standard deviations (``ddof=1``) are over the seeds that did not diverge;
    the best objective also uses the part of diverged runs before divergence.  The
    rank (1 = best) orders optimizers within a setting by the mean meta-loss over
    *all* seeds, a diverged seed counting ``+inf``; ties (e.g. two optimizers with
    a divergence each) are broken by the number of divergences, then by the mean
    over the seeds that did not diverge.

    Returns:
        One dict per (setting, optimizer), sorted by setting then rank, with keys
        ``problem, architecture, batch_size, horizon, optimizer, n_seeds,
        meta_loss_mean, meta_loss_std, final_mean, final_std, best_mean, best_std,
        n_diverged, rank``.
    """
    groups: dict[tuple, dict[str, list[RunResult]]] = {}
    for r in results:
        p = r.problem
        setting = (p.get("name", ""), p.get("architecture", ""), p.get("batch_size"), r.horizon)
        groups.setdefault(setting, {}).setdefault(r.optimizer, []).append(r)
    rows = []
    for setting in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        block = []
        for opt, runs in groups[setting].items():
            ml = [r.meta_loss for r in runs]
            m_mean, m_std = _mean_std(ml)
            f_mean, f_std = _mean_std([r.final_loss for r in runs])
            b_mean, b_std = _mean_std([r.best_loss for r in runs])
            n_div = sum(r.diverged for r in runs)
            all_mean = float(np.mean(ml)) if np.all(np.isfinite(ml)) else math.inf
            block.append(dict(
                problem=setting[0], architecture=setting[1], batch_size=setting[2],
                horizon=setting[3], optimizer=opt, n_seeds=len(runs),
                meta_loss_mean=m_mean, meta_loss_std=m_std, final_mean=f_mean, final_std=f_std,
                best_mean=b_mean, best_std=b_std, n_diverged=n_div,
                _key=(all_mean, n_div, m_mean if math.isfinite(m_mean) else math.inf),
            ))
        block.sort(key=lambda row: row["_key"])
        for rank, row in enumerate(block, start=1):
            row["rank"] = rank
            del row["_key"]
        rows.extend(block)
    return rows


def format_summary(rows: Sequence[Mapping], compact: bool = False) -> str:
    """A Markdown table of :func:`summary_table` rows (mean +- std).

    ``compact`` leaves out the columns that one panel shares (problem, net, minibatch,
    horizon: say them in a heading instead) and names the optimizers by their labels in
    the figures, so that the table fits a book's text column.
    """

    def pm(m, s):
        return "diverged" if not math.isfinite(m) else f"{m:.4g} ± {s:.2g}"

    if compact:
        from l2o.plotting import METHOD_STYLE

        lines = ["| rank | optimizer | meta-loss | final f | best f | diverged |",
                 "|" + "---|" * 6]
        for r in rows:
            name = METHOD_STYLE.get(r["optimizer"], {}).get("label", r["optimizer"])
            lines.append(
                f"| {r['rank']} | {name} | {pm(r['meta_loss_mean'], r['meta_loss_std'])} "
                f"| {pm(r['final_mean'], r['final_std'])} "
                f"| {pm(r['best_mean'], r['best_std'])} | {r['n_diverged']}/{r['n_seeds']} |")
        return "\n".join(lines)
    head = ("| problem | net | B | T | optimizer | rank | meta-loss | final f | best f "
            "| diverged |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['problem']} | {r['architecture']} | {r['batch_size']} | {r['horizon']} "
            f"| {r['optimizer']} | {r['rank']} | {pm(r['meta_loss_mean'], r['meta_loss_std'])} "
            f"| {pm(r['final_mean'], r['final_std'])} | {pm(r['best_mean'], r['best_std'])} "
            f"| {r['n_diverged']}/{r['n_seeds']} |"
        )
    return "\n".join(lines)


# ======================================================================== CLI
def _run_dir(base: Path, horizon: int) -> Path:
    """A new folder ``base/runs/<UTC time>_T<horizon>`` (suffixed if it exists)."""
    stem = base / "runs" / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}_T{horizon}"
    out, k = stem, 1
    while out.exists():
        k += 1
        out = stem.with_name(f"{stem.name}_{k}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m l2o.experiments {tune,grid} ...``; returns the exit code.

    Arguments are checked while parsing (names, ranges, where a tuning may be written):
    a bad one ends the command before any run with one ``error:`` line, exit code 2.
    ``tune`` writes a new folder ``results/tuning/runs/<time>_T<horizon>/`` unless
    ``--out`` names one; only ``--update-chosen`` also merges the result into the
    committed ``results/tuning/chosen.json`` (which the package reads).
    """
    from l2o.cli import nonnegative_int, positive_int
    from l2o.data import DATASETS

    tunable = [n for n, e in OPTIMIZERS.items() if e.grid]
    parser = argparse.ArgumentParser(prog="python -m l2o.experiments",
                                     description="Baseline tuning and the paper's experiment grid.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_tune = sub.add_parser("tune", help="grid-search the baselines on MNIST 48-48-10 (T=400)")
    p_tune.add_argument("--dataset", default=TUNING_PROBLEM["dataset"],
                        choices=(TUNING_PROBLEM["dataset"], *FIGURE_DATASETS),
                        help="objective to tune on: the paper's MNIST (default) or one of the "
                             "figures' datasets (the same 48-48 net, minibatch 64); the latter "
                             f"is written to {PER_DATASET_TUNING_DIR.name}/NAME unless --out")
    p_tune.add_argument("--smoke", action="store_true",
                        help="tiny grid, T=20, one seed; a run folder under results/smoke/tuning")
    p_tune.add_argument("--optimizers", nargs="+", default=list(BASELINES), metavar="NAME",
                        choices=tunable, help=f"any of {', '.join(tunable)}")
    p_tune.add_argument("--seeds", nargs="+", type=nonnegative_int, default=None)
    p_tune.add_argument("--horizon", type=positive_int, default=None)
    p_tune.add_argument("--workers", type=positive_int, default=2,
                        help="processes (1: in this process)")
    p_tune.add_argument("--out", default=None,
                        help="output folder (default: a new results/tuning/runs/<time>_T<horizon>)")
    p_tune.add_argument("--update-chosen", action="store_true",
                        help=f"also merge the result into {TUNING_DIR / 'chosen.json'}, the "
                             "tuning the package uses (same horizon, seeds and objective, or "
                             "every optimizer there re-tuned)")
    p_tune.add_argument("--data-dir", default=None)
    p_tune.add_argument("--no-progress", action="store_true")
    p_tune.add_argument("--batch-seeds", action="store_true",
                        help="run the seeds of elementwise optimizers in one tensor")
    p_grid = sub.add_parser("grid", help="run the optimizers behind one of Figures 1-5")
    p_grid.add_argument("--figure", type=int, required=True, choices=sorted(FIGURES))
    p_grid.add_argument("--seeds", nargs="+", type=nonnegative_int, default=list(EVAL_SEEDS))
    p_grid.add_argument("--optimizers", nargs="+", default=None, metavar="NAME",
                        choices=list(OPTIMIZERS),
                        help=f"any of {', '.join(OPTIMIZERS)} (default: the paper's seven, "
                             f"{', '.join(BASELINES)})")
    p_grid.add_argument("--datasets", nargs="+", default=list(FIGURE_DATASETS),
                        choices=DATASETS, metavar="NAME", help=f"any of {', '.join(DATASETS)}")
    p_grid.add_argument("--horizon", type=positive_int, default=None,
                        help="override the figure's T")
    p_grid.add_argument("--eval-every", type=positive_int, default=1)
    p_grid.add_argument("--workers", type=positive_int, default=2,
                        help="processes (1: in this process)")
    p_grid.add_argument("--results-dir", default=str(GRID_DIR))
    p_grid.add_argument("--data-dir", default=None)
    p_grid.add_argument("--no-progress", action="store_true")
    p_grid.add_argument("--batch-seeds", action="store_true",
                        help="run the seeds of elementwise optimizers in one tensor")
    args = parser.parse_args(argv)
    command = " ".join(["python -m l2o.experiments", *(argv if argv is not None else sys.argv[1:])])

    if args.command == "tune":
        if args.smoke:
            seeds = args.seeds or [TUNING_SEEDS[0]]
            horizon = args.horizon or 20
            base = SMOKE_TUNING_DIR
        else:
            seeds = args.seeds or list(TUNING_SEEDS)
            horizon = args.horizon or 400
            base = TUNING_DIR
        if args.update_chosen and args.smoke:
            p_tune.error("--update-chosen cannot be combined with --smoke")
        per_dataset = args.dataset != TUNING_PROBLEM["dataset"]
        if args.update_chosen and per_dataset:
            p_tune.error(f"--update-chosen writes the tuning the package uses, which is on "
                         f"{TUNING_PROBLEM['dataset']}; a tuning on {args.dataset} goes to "
                         f"its own folder (default {PER_DATASET_TUNING_DIR / args.dataset})")
        if args.out:
            out = Path(args.out)
        elif per_dataset and not args.smoke:
            out = PER_DATASET_TUNING_DIR / args.dataset
        else:
            out = _run_dir(base, horizon)
        # Before any run: may the result go where it is to be written?  (The objective
        # is the fixed tuning problem; tune() compares it too once the data are loaded.)
        for target in [out] + ([TUNING_DIR] if args.update_chosen else []):
            there = (record.read_json(Path(target) / "chosen.json") or {}).get("objective", {})
            try:
                check_tuning_target(target, args.optimizers, seeds, horizon, there)
            except ValueError as exc:
                p_tune.error(str(exc))
        torch.set_num_threads(1)  # float results depend on the thread count; workers use 1 too
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        res = tune(names=args.optimizers, seeds=seeds, horizon=horizon, out_dir=out,
                   workers=args.workers, progress=not args.no_progress, data_dir=args.data_dir,
                   smoke=args.smoke, command=command, batch_seeds=args.batch_seeds,
                   dataset=args.dataset)
        print(f"wrote {out}/grid.json, chosen.json, provenance.json "
              f"({res['provenance']['wall_time_s']:.0f} s)")
        if args.update_chosen:
            from l2o.tuning import write_tuning

            write_tuning(TUNING_DIR, res, res["provenance"]["objective"], seeds, horizon)
            print(f"updated {TUNING_DIR}/chosen.json with {', '.join(res['chosen'])}")
        else:
            print(f"{TUNING_DIR / 'chosen.json'} is unchanged (pass --update-chosen to merge "
                  "this tuning into it)")
        for name, hp in res["chosen"].items():
            d = res["details"][name]
            ml = d["mean_meta_loss"]
            edge = f"  (at grid edge: {', '.join(d['at_grid_edge'])})" if d["at_grid_edge"] else ""
            print(f"  {name:9s} {hp}  meta-loss {ml if ml is None else round(ml, 3)}{edge}")
        return 0
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = {"eval_every": args.eval_every}
    if args.horizon is not None:
        overrides["horizon"] = args.horizon
    specs = figure_specs(args.figure, seeds=args.seeds, optimizers=args.optimizers,
                         datasets=args.datasets, **overrides)
    results = run_grid(specs, args.results_dir, workers=args.workers,
                       progress=not args.no_progress, data_dir=args.data_dir,
                       batch_seeds=args.batch_seeds)
    print(format_summary(summary_table(results)))
    return 0


if __name__ == "__main__":
    # Run the imported module's main, so that worker processes, pickled functions and
    # logger names refer to ``l2o.experiments`` rather than to ``__main__``.
    from l2o.experiments import main as _main

    sys.exit(_main())
