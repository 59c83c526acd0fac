"""The learned optimizers as just more optimizers for the experiments.

Runs Predicted Step Descent (π of :mod:`l2o.gps`) and the L2L baseline
(:mod:`l2o.l2l`) on an objective from exactly the initial iterates and minibatch
streams that :func:`l2o.experiments.train` gives every hand-engineered optimizer for
the same seed, and returns :class:`l2o.experiments.RunResult` objects, so that tables
and figures treat all nine optimizers alike.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from l2o import experiments
from l2o.features import FeatureConfig
from l2o.gps import CostProblem, PolicyFileError, pi_actor, psi_actor, rollout
from l2o.policy import LSTMPolicy
from l2o.problems import MLPProblem

#: The shipped learned optimizers: file under the repository root, the environment
#: variable that overrides it, and the command that writes it.
PRETRAINED = {
    "psd": ("results/psd/psd_mnist48.pt", "L2O_PSD_POLICY",
            "python -m l2o.gps train --out results/psd"),
    "l2l": ("results/l2l/l2l_mnist48.pt", "L2O_L2L_NET",
            "python -m l2o.l2l train --epochs 800 --out results/l2l"),
}


def pretrained_file(name: str, path: str | os.PathLike | None = None) -> Path:
    """Where the shipped learned optimizer ``name`` (``"psd"`` or ``"l2l"``) is read from.

    ``path`` if given; else ``$L2O_PSD_POLICY`` / ``$L2O_L2L_NET`` if set; else the
    file of :data:`PRETRAINED` under the repository that holds this package (a source
    checkout or an editable install), then under the working directory.

    Raises:
        PolicyFileError (``"psd"``) or :class:`l2o.l2l.L2LCheckpointError` (``"l2l"``):
            no file at any of these places; the message lists them and how to get one.
    """
    if name not in PRETRAINED:
        raise ValueError(f"Unknown learned optimizer {name!r}; valid names are {sorted(PRETRAINED)}")
    if path is not None:
        return Path(path)
    rel, env, command = PRETRAINED[name]
    if os.environ.get(env, "").strip():
        return Path(os.environ[env].strip()).expanduser()
    candidates = list(dict.fromkeys([experiments.ROOT / rel, Path.cwd() / rel]))
    for c in candidates:
        if c.is_file():
            return c
    msg = (f"no pretrained {name.upper()} file: looked at {', '.join(map(str, candidates))} "
           f"(${env} is not set). The shipped files live in the repository's results/ folder, "
           f"which an installed package does not include: pass path=..., set ${env}, or "
           f"write one with `{command}`.")
    if name == "l2l":
        from l2o.l2l import L2LCheckpointError

        raise L2LCheckpointError(msg)
    raise PolicyFileError(msg)


def _results(name, curves, mb, seeds, problem, horizon, wall, hparams) -> list:
    out = []
    for i, s in enumerate(seeds):
        curve, mbl = curves[i].copy(), mb[i].copy()
        at = experiments.divergence_point(curve, mbl)
        if at is not None:
            curve[at:] = np.nan
            mbl[at:] = np.nan
        out.append(experiments.RunResult(
            true_loss=curve, minibatch_loss=mbl, optimizer=name, hparams=dict(hparams),
            seed=int(s), problem=experiments.describe_problem(problem), horizon=horizon,
            wall_time=wall, diverged=at is not None, diverged_at=at, batched=len(seeds)))
    return out


def _actor_runs(problem: MLPProblem, act, feature_config: FeatureConfig,
                seeds: Sequence[int], horizon: int, label: str, hparams: dict,
                need_states: bool) -> list:
    """``act`` (a GPS actor, no noise) rolled out from the baselines' ``x0`` and streams of
    ``seeds`` in one batch: list of RunResult (``need_states``: ``act`` reads Φ, as ψ does;
    π reads only Ψ)."""
    x0, idx = experiments.streams_of(problem, seeds, horizon)
    t0 = time.perf_counter()
    s = rollout(problem, CostProblem(problem, 0, 0), horizon, len(seeds), act, feature_config,
                torch.Generator(), None, need_states=need_states, x0=x0, streams=idx)
    return _results(label, s.true_loss, s.minibatch_loss, seeds, problem, horizon,
                    time.perf_counter() - t0, hparams)


def evaluate_psd(problem: MLPProblem, policy: LSTMPolicy, seeds: Sequence[int], horizon: int,
                 feature_config: FeatureConfig = FeatureConfig(), label: str = "psd"):
    """Predicted Step Descent (π's mean step, no noise) on ``seeds``: list of RunResult."""
    return _actor_runs(problem, pi_actor(problem, policy), feature_config, seeds, horizon,
                       label, {}, need_states=False)


def evaluate_psi(problem: MLPProblem, psi: Sequence, feature_config: FeatureConfig,
                 seeds: Sequence[int], horizon: int, label: str = "psi",
                 hparams: dict | None = None):
    """ψ's mean (GPS's time-varying controllers of each group, noise off) on ``seeds``:
    list of RunResult, on the baselines' streams."""
    return _actor_runs(problem, psi_actor(problem, list(psi), torch.Generator(), noise=False),
                       feature_config, seeds, horizon, label, hparams or {}, need_states=True)


def meta_losses(runs: Sequence) -> np.ndarray:
    """Meta-loss ``Σ_{t=1}^T f(x_t)`` of each run, ``inf`` for a diverged one: ``(n,)``."""
    return np.array([np.inf if r.diverged else float(np.nansum(r.true_loss[1:]))
                     for r in runs])


def evaluate_l2l(problem: MLPProblem, net, seeds: Sequence[int], horizon: int,
                 label: str = "l2l"):
    """The L2L optimizer on ``seeds``: list of RunResult (same streams as the baselines)."""
    from l2o import l2l

    x0, idx = experiments.streams_of(problem, seeds, horizon)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = l2l.rollout(net, problem, x0.to(problem.dtype), idx, true_loss=True)
    f = out["true_loss"].double().numpy()
    mb = out["minibatch_loss"].double().numpy()
    return _results(label, f, mb, seeds, problem, horizon, time.perf_counter() - t0, {})
