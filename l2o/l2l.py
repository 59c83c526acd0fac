"""The L2L baseline: "Learning to learn by gradient descent by gradient descent".

Andrychowicz et al. (2016) learn an optimizer ``m`` with parameters ``phi`` that maps
the gradient of each coordinate to a step for that coordinate:

    x_{t+1} = x_t + Delta_t,   (Delta_t^j, h_{t+1}^j) = m(grad_j f_hat(x_t), h_t^j; phi).

Li & Malik (2017) use it as the "L2LBGDBGD" baseline, meta-trained on the same
MNIST-48 objective, horizon and batch size as their own method (book/design.md).

What this module fixes (the L2L baseline in book/design.md):

* **Network** :class:`L2LNet` -- a two-layer LSTM with 20 units per layer and a linear
  20 -> 1 head, applied to every coordinate independently with the *same* weights for
  all coordinates (coordinatewise); each coordinate has its own hidden state, zero at
  the start of a trajectory.  The head's output is multiplied by ``output_scale = 0.01``.
* **Preprocessing** :func:`preprocess_gradients` -- the paper's log-and-sign map with
  ``p = 10``::

      g -> (log|g| / p, sgn g)   if |g| >= exp(-p)
      g -> (-1, exp(p) g)        otherwise.

  The original code (``preprocess.py::LogAndSign``) computes
  ``clamp(log(|g| + eps)/k, min=-1)`` and ``clamp(exp(k) g, -1, 1)``, which is the
  same piecewise map (up to the ``eps``), but its default is ``k = 5``, not the
  paper's ``p = 10``.  We take the paper's value and keep ``p`` configurable
  (:attr:`L2LConfig.preprocess_p`) so the code's choice can be run as well.
* **Meta-training** :func:`meta_train` -- truncated back-propagation through time:
  each epoch is one new trajectory (batch of trajectories) of ``horizon`` steps, cut
  into unrolls of ``unroll`` steps.  The optimizee iterate and the LSTM state are
  carried from one unroll to the next and detached at the boundary.  The meta-loss
  of an unroll is the sum of the minibatch losses ``f_hat(x_t)`` at the iterates the
  unroll produced.  Optimizee gradients enter the LSTM as constants (no second
  derivatives, as in the original code's ``stop_gradient``); the meta-gradient still
  flows through ``x_{t+1} = x_t + Delta_t`` into every later loss of the unroll.
  Adam (lr 1e-3) on ``phi`` with gradient-norm clipping.

Departures from the original code (``google-deepmind/learning-to-learn``), each a choice
of this reproduction:

* ``p = 10`` instead of the code's ``k = 5`` (see above; configurable).
* The meta-gradient is clipped to global norm ``max_grad_norm = 1.0`` (the original
  does not clip; PyTorch re-implementations do).  Meta-gradient norms on MNIST-48 at
  the start of training are 0.4-3, so the clip only tempers spikes.
* The original's unroll loss also counts ``f_hat`` at the unroll's first iterate; that
  term is a constant (the iterate is detached) and changes no gradient, so it is left
  out: the reported training meta-loss is ``sum_{t=1}^T f_hat(x_t)``.
* Checkpoint selection uses Li & Malik's meta-loss ``sum_{t=1}^T f(x_t)`` with the
  *true* objective ``f`` (full training loss) on fixed validation trajectories,
  instead of the minibatch losses of fresh random trajectories.
* Budget: the original trains 10,000 epochs of 100 steps; on CPU we train fewer
  epochs of 400 steps (``provenance.json`` of a run records how many).
* One trajectory per epoch as in the original: running several in parallel costs
  proportionally more time on CPU (measured), so :attr:`L2LConfig.trajectories` is 1.

The trained net is used through :class:`L2LOptimizer`, a ``torch.optim.Optimizer``
for any ``nn.Module``, or through :func:`rollout` on a batched
:class:`l2o.problems.MLPProblem`.

Seeds (all documented in the checkpoint and in ``provenance.json``):

* training trajectories come from one ``torch.Generator`` seeded with
  ``TRAIN_SEED_OFFSET + seed`` (it also initialises ``phi``);
* held-out validation trajectories, used to select the best checkpoint, use the seeds
  :attr:`L2LConfig.eval_seeds` (default ``30000, 30001, 30002``); each seed gives one
  generator that draws ``x0`` and then the minibatch of every step
  (:func:`seeded_streams`).  The experiment runner (:mod:`l2o.experiments`) seeds
  its generators with numpy ``SeedSequence``-derived 63-bit values, so its test
  trajectories share no stream with these raw seeds.

Command line::

    python -m l2o.l2l train --epochs 2000 --out results/l2l/ [--resume]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from l2o import record
from l2o import rollout as loop
from l2o.policy import chunk_rows, fuse_lstm_gates, fused_lstm_cell_, workspace
from l2o.problems import MLPProblem

logger = logging.getLogger(__name__)

__all__ = [
    "L2LConfig",
    "L2LNet",
    "L2LOptimizer",
    "L2LCheckpointError",
    "preprocess_gradients",
    "seeded_streams",
    "rollout",
    "evaluate",
    "unroll_meta_loss",
    "meta_train",
    "save_l2l",
    "load_l2l",
    "main",
]

#: Format tags written into every file, checked on loading.
NET_FORMAT = "l2o.l2l.net/1"
CHECKPOINT_FORMAT = "l2o.l2l.checkpoint/1"
#: The training generator is seeded with ``TRAIN_SEED_OFFSET + seed``, so that training
#: trajectories never share a stream with validation (30000+) or test seeds (< 30000).
TRAIN_SEED_OFFSET = 1_000_000
#: Fields of :class:`L2LConfig` that define the network (they must match to load it).
NET_FIELDS = ("hidden_size", "num_layers", "preprocess_p", "output_scale")


# ----------------------------------------------------------------------- config
@dataclass(frozen=True)
class L2LConfig:
    """Hyperparameters of the L2L optimizer and its meta-training (book/design.md).

    Network (these four define a trained net, see :data:`NET_FIELDS`):
        hidden_size: units per LSTM layer (paper and code: 20).
        num_layers: stacked LSTM layers (paper and code: 2).
        preprocess_p: ``p`` of the log-and-sign preprocessing (paper: 10; code: k = 5).
        output_scale: multiplier of the head's output (code: 0.01).

    Meta-training:
        horizon: trajectory length ``T`` in optimizee steps (Li & Malik: 400).
        unroll: truncation length of BPTT (code: 20).
        batch_size: optimizee minibatch size (Li & Malik: 64).
        trajectories: trajectories run in parallel per epoch (meta-batch; code: 1).
        lr: Adam learning rate of the meta-optimizer (code: 1e-3).
        max_grad_norm: clip the global norm of each meta-gradient to this value
            (``None``: no clipping; the original code does not clip, PyTorch
            re-implementations do, see book/design.md).
        eval_every: evaluate on the validation trajectories every this many epochs
            (the original code: every 1000 epochs of 100 steps).
        eval_seeds: seeds of the held-out validation trajectories.
    """

    hidden_size: int = 20
    num_layers: int = 2
    preprocess_p: float = 10.0
    output_scale: float = 0.01
    horizon: int = 400
    unroll: int = 20
    batch_size: int = 64
    trajectories: int = 1
    lr: float = 1e-3
    max_grad_norm: float | None = 1.0
    eval_every: int = 50
    eval_seeds: tuple[int, ...] = (30000, 30001, 30002)

    def __post_init__(self):
        for name in ("hidden_size", "num_layers", "horizon", "unroll", "batch_size",
                     "trajectories", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Invalid {name}: {value!r} (must be an integer >= 1)")
        for name in ("preprocess_p", "output_scale", "lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"Invalid {name}: {value!r} (must be a finite number > 0)")
        if self.max_grad_norm is not None and not (
            isinstance(self.max_grad_norm, (int, float)) and self.max_grad_norm > 0
        ):
            raise ValueError(f"Invalid max_grad_norm: {self.max_grad_norm!r} (must be > 0 or None)")
        seeds = tuple(self.eval_seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
            raise ValueError(f"Invalid eval_seeds: {self.eval_seeds!r} "
                             "(must be a non-empty sequence of integers >= 0)")
        object.__setattr__(self, "eval_seeds", seeds)  # accept lists, store a tuple

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["eval_seeds"] = list(self.eval_seeds)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "L2LConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown L2LConfig fields {unknown}; known fields are {sorted(known)}")
        return cls(**d)

    def net_dict(self) -> dict:
        """The fields that define the network."""
        return {k: getattr(self, k) for k in NET_FIELDS}


class L2LCheckpointError(ValueError):
    """An L2L file cannot be read, or holds something other than what was expected."""


# ---------------------------------------------------------------- preprocessing
def preprocess_gradients(grad: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """Log-and-sign preprocessing of Andrychowicz et al. (2016, appendix A).

    ``g -> (log|g|/p, sgn g)`` if ``|g| >= e^{-p}``, else ``(-1, e^p g)``.  Written as
    ``(max(log|g|/p, -1), clamp(e^p g, -1, 1))``, which is the same map: for
    ``|g| >= e^{-p}`` the first term is ``>= -1`` and ``|e^p g| >= 1``, otherwise the
    first term is below ``-1`` and ``|e^p g| < 1``.  ``g = 0`` gives ``(-1, 0)``.

    Args:
        grad: gradients, any shape ``S``.
        p: the constant ``p > 0`` (paper: 10; the original code uses ``k = 5``).

    Returns:
        ``(*S, 2)``: the log channel, then the sign channel.
    """
    log_part = (torch.log(grad.abs()) / p).clamp(min=-1.0)  # log 0 = -inf -> -1
    sign_part = (grad * math.exp(p)).clamp(-1.0, 1.0)
    return torch.stack((log_part, sign_part), dim=-1)


# ---------------------------------------------------------------------- network
State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (num_layers, n, hidden_size)


class L2LNet(nn.Module):
    """Coordinatewise two-layer LSTM optimizer ``m(grad, h; phi)``.

    One set of weights for all coordinates; rows of the input are coordinates and are
    processed independently (a batch of size ``n`` = number of coordinates).

    Args:
        hidden_size, num_layers, preprocess_p, output_scale: see :class:`L2LConfig`.
        generator: initialises the weights (PyTorch's default LSTM scheme,
            ``U(-1/sqrt(hidden), 1/sqrt(hidden))``, also for the head) without touching
            the global RNG; ``None`` uses a generator seeded with 0.
        dtype: parameter dtype.
    """

    def __init__(self, hidden_size: int = 20, num_layers: int = 2, preprocess_p: float = 10.0,
                 output_scale: float = 0.01, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        L2LConfig(hidden_size=hidden_size, num_layers=num_layers, preprocess_p=preprocess_p,
                  output_scale=output_scale)  # validates
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.preprocess_p = float(preprocess_p)
        self.output_scale = float(output_scale)
        # skip_init: build without the default initialisation, which would draw from
        # the global RNG; reset_parameters below uses the generator instead.
        self.cells = nn.ModuleList(
            nn.utils.skip_init(nn.LSTMCell, 2 if i == 0 else hidden_size, hidden_size,
                               dtype=dtype)
            for i in range(num_layers)
        )
        self.head = nn.utils.skip_init(nn.Linear, hidden_size, 1, dtype=dtype)
        self.reset_parameters(generator)

    @classmethod
    def from_config(cls, config: L2LConfig, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32) -> "L2LNet":
        return cls(**config.net_dict(), generator=generator, dtype=dtype)

    def net_dict(self) -> dict:
        return {k: getattr(self, k) for k in NET_FIELDS}

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        bound = 1.0 / math.sqrt(self.hidden_size)
        for prm in self.parameters():
            # draw in float64 then cast, so the values do not depend on the dtype
            u = torch.rand(prm.shape, generator=generator, dtype=torch.float64)
            prm.copy_((2 * u - 1) * bound)

    def initial_state(self, n: int, dtype: torch.dtype | None = None,
                      device: torch.device | str | None = None) -> State:
        """Zero hidden and cell states for ``n`` coordinates."""
        ref = self.head.weight
        shape = (self.num_layers, n, self.hidden_size)
        z = torch.zeros(shape, dtype=dtype or ref.dtype, device=device or ref.device)
        return z, z.clone()

    def forward(self, grad: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One step for ``n`` coordinates.

        Args:
            grad: gradients ``(n,)`` (treated as data: detach them before calling).
            state: ``(h, c)``, each ``(num_layers, n, hidden_size)``.

        Returns:
            ``(delta (n,), new_state)``; ``delta`` is the step added to the iterate.
        """
        inp = preprocess_gradients(grad, self.preprocess_p)
        h_prev, c_prev = state
        hs, cs = [], []
        for i, cell in enumerate(self.cells):
            h, c = cell(inp, (h_prev[i], c_prev[i]))
            hs.append(h)
            cs.append(c)
            inp = h
        delta = self.head(inp).squeeze(-1) * self.output_scale
        return delta, (torch.stack(hs), torch.stack(cs))

    def _fused(self):
        """Per layer ``(weight, bias)`` for :func:`~l2o.policy.fused_lstm_cell_`, and the head.

        Layer ``l`` multiplies rows ``[h_l | input_l]``; the first layer's input is
        ``[max(log|g|, −p), clamp(e^p g, −1, 1)]``, its ``1/p`` folded into the weights.
        The head is ``(w_out (H,), b_out (1,))`` times ``output_scale``.  Cached, keyed by
        the storage and version counter of every parameter (training refreshes it).
        """
        params = list(self.parameters())
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in params)
        hit = self.__dict__.get("_fused_cache")
        if hit is not None and hit[0] == key:
            return hit[1]
        with torch.no_grad():
            layers = []
            for i, cell in enumerate(self.cells):
                w_ih = cell.weight_ih
                if i == 0:
                    w_ih = torch.cat([w_ih[:, :1] / self.preprocess_p, w_ih[:, 1:]], 1)
                layers.append(fuse_lstm_gates(w_ih, cell.weight_hh, cell.bias_ih + cell.bias_hh))
            w_out = (self.head.weight[0] * self.output_scale).contiguous()
            fused = (layers, w_out, self.head.bias * self.output_scale)
        self.__dict__["_fused_cache"] = (key, fused)
        return fused

    @torch.no_grad()
    def step_(self, grad: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
              out: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` without autograd, the state updated in place.

        The same function as :meth:`forward`, computed in chunks of coordinates with one
        matrix product per layer and chunk (:func:`~l2o.policy.fused_lstm_cell_`), so
        that memory beyond the state is one chunk's gates.

        Args:
            grad: gradients ``(n,)``, cast to the net's dtype.
            h, c: the state, each ``(num_layers, n, hidden_size)``, contiguous;
                overwritten with the new state.
            out: ``(n,)``, receives ``delta``.

        Returns:
            ``out``.
        """
        n, H, L = grad.shape[0], self.hidden_size, self.num_layers
        if h.shape != (L, n, H) or c.shape != (L, n, H):
            raise ValueError(f"state must be two ({L}, {n}, {H}) tensors, got "
                             f"{tuple(h.shape)} and {tuple(c.shape)}")
        if n == 0:
            return out
        layers, w_out, b_out = self._fused()
        grad = grad.to(w_out.dtype)
        chunk = chunk_rows(4 * H, n)
        xa, xb, gates, scratch = workspace(chunk, (H + 2, 2 * H, 4 * H, H), w_out.dtype,
                                           w_out.device)
        p, ep = self.preprocess_p, math.exp(self.preprocess_p)
        for r0 in range(0, n, chunk):
            r1 = min(r0 + chunk, n)
            m = r1 - r0
            g = grad[r0:r1]
            x = xa[:m]
            x[:, :H].copy_(h[0, r0:r1])
            log_part = x[:, H]
            torch.abs(g, out=log_part).log_().clamp_min_(-p)      # log 0 = −inf → −p
            torch.mul(g, ep, out=x[:, H + 1]).clamp_(-1.0, 1.0)
            for i, (weight, bias) in enumerate(layers):
                if i > 0:
                    x = xb[:m]
                    x[:, :H].copy_(h[i, r0:r1])
                    x[:, H:].copy_(h[i - 1, r0:r1])
                fused_lstm_cell_(x, c[i, r0:r1], weight, bias, h[i, r0:r1], c[i, r0:r1],
                                 gates[:m], scratch[:m])
            torch.addmv(b_out, h[L - 1, r0:r1], w_out, out=out[r0:r1])
        return out

    def extra_repr(self) -> str:
        return f"preprocess_p={self.preprocess_p}, output_scale={self.output_scale}"


# ----------------------------------------------------------------- trajectories
def seeded_streams(problem: MLPProblem, seeds: Iterable[int], horizon: int,
                   batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial iterates and minibatch streams, one trajectory per seed.

    Seed ``s`` gives ``gen = torch.Generator().manual_seed(s)``; ``x0 = problem.init(gen)``,
    then ``idx_t = problem.sample_indices(gen, batch_size=B)`` for ``t = 0..horizon-1``.

    Returns:
        ``x0 (n, dim)`` and ``idx (horizon, n, B)``.
    """
    x0s, idxs = [], []
    for s in seeds:
        gen = torch.Generator().manual_seed(int(s))
        x0s.append(problem.init(gen))
        idxs.append(torch.stack([problem.sample_indices(gen, batch_size=batch_size)
                                 for _ in range(horizon)]))
    return torch.stack(x0s), torch.stack(idxs, dim=1)


@torch.no_grad()
def rollout(net: L2LNet, problem: MLPProblem, x0: torch.Tensor, idx: torch.Tensor,
            true_loss: bool = True) -> dict[str, torch.Tensor]:
    """Run the learned optimizer on ``n`` trajectories in parallel (no meta-gradients).

    Step ``t`` feeds the gradient of ``f_hat`` on minibatch ``idx[t]`` at ``x_t`` to the
    net and moves to ``x_{t+1} = x_t + Delta_t``.

    Args:
        net: the optimizer.
        problem: the objective.
        x0: initial iterates ``(n, dim)``.
        idx: minibatch indices ``(T, n, B)``, one minibatch per step.
        true_loss: also evaluate the full training loss ``f(x_t)`` at every iterate.

    Returns:
        ``minibatch_loss (n, T)`` with ``f_hat(x_t; idx[t])``, ``t = 0..T-1``;
        ``true_loss (n, T + 1)`` with ``f(x_t)``, ``t = 0..T`` (when requested); ``x``
        the final iterates ``(n, dim)``.  Li & Malik's meta-loss is
        ``true_loss[:, 1:].sum(1)``.
    """
    if idx.ndim != 3 or idx.shape[1] != x0.shape[0]:
        raise ValueError(f"idx must be (T, n, B) with n = {x0.shape[0]}, got {tuple(idx.shape)}")
    x = x0.to(problem.dtype)
    n, dim = x.shape
    h, c = net.initial_state(n * dim, dtype=problem.dtype)
    delta = torch.empty(n * dim, dtype=h.dtype)

    def step(t, x, loss, g):
        net.step_(g.reshape(-1), h, c, delta)  # the fused step, state updated in place
        return delta.view(n, dim)

    traj = loop.rollout(problem, loop.StepActor(step), x, idx, eval_every=int(true_loss))
    out = {"minibatch_loss": torch.from_numpy(traj.minibatch_loss).to(problem.dtype),
           "x": traj.x}
    if true_loss:
        out["true_loss"] = torch.from_numpy(traj.true_loss).to(problem.dtype)
    return out


def evaluate(net: L2LNet, problem: MLPProblem, config: L2LConfig) -> dict:
    """Validation meta-loss: mean over ``config.eval_seeds`` of ``sum_{t=1}^T f(x_t)``.

    ``f`` is the true objective (the full training loss), as in Li & Malik's meta-loss.
    """
    x0, idx = seeded_streams(problem, config.eval_seeds, config.horizon, config.batch_size)
    out = rollout(net, problem, x0, idx, true_loss=True)
    f = out["true_loss"]
    return {
        "meta_loss": float(f[:, 1:].sum(1).mean()),
        "final_loss": float(f[:, -1].mean()),
        "per_seed": [float(v) for v in f[:, 1:].sum(1)],
    }


# --------------------------------------------------------------- meta-training
def _detach(state: State) -> State:
    return state[0].detach(), state[1].detach()


def unroll_meta_loss(net: L2LNet, problem: MLPProblem, x: torch.Tensor, state: State,
                     idx: torch.Tensor):
    """Meta-loss of one truncated unroll, differentiable with respect to the net.

    Starting from ``x_0 = x`` (detached) with LSTM state ``state`` (detached), for
    ``t = 0..U-1``::

        grad_t = grad f_hat(x_t; idx[t])             (constant: no second derivatives)
        (Delta_t, h_{t+1}) = m(grad_t, h_t; phi)
        x_{t+1} = x_t + Delta_t
        L += mean_n f_hat(x_{t+1}; idx[t + 1])       (differentiable, problem.torch_loss)

    ``idx`` has ``U + 1`` rows: row 0 is the minibatch of the step before the unroll (the
    previous unroll's last, or the first draw of the trajectory), so that the minibatch
    of each loss term also gives the gradient of the next step, as in the original
    code, where one loss op per step provides both.  Because the gradients are
    constants, ``phi`` reaches ``L`` only through the steps ``Delta``, which enter every
    later iterate of the unroll.  The steps run through the package's one loop
    (:func:`l2o.rollout.rollout`), the loss terms added after each step.

    Args:
        net: the optimizer (its parameters receive the meta-gradient).
        problem: the objective.
        x: iterates ``(n, dim)``; state: LSTM state for ``n * dim`` coordinates;
        idx: minibatches ``(U + 1, n, B)``.

    Returns:
        ``(meta_loss, x, state)``: the scalar ``L`` and the carried values at the end of
        the unroll (still attached to the graph; detach before the next unroll).
    """
    if idx.ndim != 3 or idx.shape[0] < 2:
        raise ValueError(f"idx must be (U + 1, n, B) with U >= 1, got {tuple(idx.shape)}")
    carried = {"state": _detach(state), "loss": x.new_zeros(())}

    def delta(t, x, loss, grad):
        d, carried["state"] = net(grad.reshape(-1), carried["state"])
        return d.view(x.shape)

    def add_loss(t, x_next):
        carried["loss"] = carried["loss"] + problem.torch_loss(x_next, idx[t + 1]).mean()

    x = x.detach()
    traj = loop.rollout(problem, loop.StepActor(delta), x, idx[:-1], eval_every=0,
                        on_step=add_loss)
    return carried["loss"], traj.x, carried["state"]


def _train_epoch(net: L2LNet, problem: MLPProblem, config: L2LConfig,
                 meta_opt: torch.optim.Optimizer, gen: torch.Generator) -> dict:
    """One epoch: ``config.trajectories`` new trajectories of ``horizon`` steps, TBPTT.

    Random draws from ``gen``, in order: ``x0``, the minibatch of ``x0``, then the
    minibatches of each unroll.  Returns the training meta-loss
    ``sum_{t=1}^T f_hat(x_t)`` (mean over trajectories) and the mean meta-gradient norm
    before clipping.
    """
    n, dim, B = config.trajectories, problem.dim, config.batch_size
    x = problem.init(gen, n)
    state = net.initial_state(n * dim, dtype=problem.dtype)
    last = problem.sample_indices(gen, n, B)   # the minibatch of the first step's gradient
    total, norms, t, diverged = 0.0, [], 0, False
    while t < config.horizon:
        steps = min(config.unroll, config.horizon - t)
        idx = torch.stack([last] + [problem.sample_indices(gen, n, B) for _ in range(steps)])
        meta_loss, x, state = unroll_meta_loss(net, problem, x, state, idx)
        last = idx[-1]
        t += steps
        if not torch.isfinite(meta_loss):
            logger.warning("non-finite meta-loss at step %d; trajectory abandoned", t)
            diverged = True
            break
        meta_opt.zero_grad(set_to_none=True)
        meta_loss.backward()
        params = [p for p in net.parameters() if p.grad is not None]
        if config.max_grad_norm is not None:
            norm = nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        norms.append(float(norm))
        if not math.isfinite(norms[-1]):
            logger.warning("non-finite meta-gradient at step %d; update skipped", t)
            meta_opt.zero_grad(set_to_none=True)
            continue
        meta_opt.step()
        total += float(meta_loss.detach())
    return {
        "train_meta_loss": total if not diverged else float("nan"),
        "grad_norm": sum(norms) / max(len(norms), 1),
        "diverged": diverged,
    }


def _problem_signature(problem: MLPProblem) -> dict:
    return {"architecture": problem.architecture, "dim": int(problem.dim),
            "name": problem.name, "examples": int(problem.x.shape[0]),
            "dtype": str(problem.dtype)}


def _progress_enabled(progress: bool | None) -> bool:
    if progress is not None:
        return bool(progress)
    return os.environ.get("L2O_NO_PROGRESS", "").strip() not in ("1", "true", "yes")


def meta_train(
    problem: MLPProblem,
    config: L2LConfig = L2LConfig(),
    seed: int = 0,
    epochs: int = 1000,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    callback: Callable[[dict], bool | None] | None = None,
    progress: bool | None = None,
) -> dict:
    """Meta-train an :class:`L2LNet` on ``problem`` (truncated BPTT, Adam).

    Every ``config.eval_every`` epochs (and at epoch 0 and at the last epoch) the net is
    evaluated on the validation trajectories (:func:`evaluate`); the best weights so far
    are kept and, when ``checkpoint`` is given, the complete training state (config,
    weights, best weights, Adam state, generator state, history) is written there.  A
    run resumed from that file (``resume=True``) gives exactly the result of an
    uninterrupted run (same thread count assumed).

    Args:
        problem: the training objective (batched :class:`MLPProblem`).
        config: hyperparameters.
        seed: training seed; the generator is seeded with ``TRAIN_SEED_OFFSET + seed``.
        epochs: total number of epochs (a resumed run continues up to this number).
        checkpoint: path of the checkpoint file (``None``: no file).
        resume: continue from ``checkpoint`` if it exists.
        callback: called after every epoch with a dict (``epoch``, ``train_meta_loss``,
            ``grad_norm``, and ``eval`` on evaluation epochs); returning ``True`` stops
            training after that epoch (a checkpoint is written first).
        progress: tqdm bar; ``None``: on unless ``$L2O_NO_PROGRESS=1``.

    Returns:
        ``{"net": best L2LNet, "last_net": L2LNet, "history": dict, "best": dict}``;
        ``history`` has ``train_meta_loss``/``grad_norm`` per epoch and ``eval`` (a list
        of ``{"epoch", "meta_loss", "final_loss", "per_seed"}``).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Invalid seed: {seed!r} (must be an integer >= 0)")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"Invalid epochs: {epochs!r} (must be an integer >= 0)")
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt_path is None:
        raise ValueError("resume=True needs a checkpoint path")

    gen = torch.Generator().manual_seed(TRAIN_SEED_OFFSET + seed)
    net = L2LNet.from_config(config, generator=gen, dtype=problem.dtype)
    meta_opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    history = {"train_meta_loss": [], "grad_norm": [], "eval": []}
    best = {"epoch": None, "meta_loss": float("inf"), "net": None}
    epoch, elapsed = 0, 0.0

    if resume and not ckpt_path.exists():
        logger.info("no checkpoint at %s: starting from scratch", ckpt_path)
    if resume and ckpt_path.exists():
        ck = _read(ckpt_path, CHECKPOINT_FORMAT)
        _check_config(ck, config, ckpt_path, fields=None)
        if ck["seed"] != seed:
            raise L2LCheckpointError(
                f"{ckpt_path}: checkpoint was trained with seed {ck['seed']}, expected {seed}")
        if ck["problem"] != _problem_signature(problem):
            raise L2LCheckpointError(
                f"{ckpt_path}: checkpoint was trained on {ck['problem']}, "
                f"expected {_problem_signature(problem)}")
        _load_weights(net, ck["net"], ckpt_path)
        meta_opt.load_state_dict(ck["meta_optimizer"])
        gen.set_state(ck["rng_state"])
        history = ck["history"]
        best = dict(ck["best"])
        epoch, elapsed = int(ck["epoch"]), float(ck.get("elapsed_s", 0.0))
        logger.info("resumed from %s at epoch %d (best %.4f at epoch %s)", ckpt_path, epoch,
                    best["meta_loss"], best["epoch"])
        if epoch > epochs:
            logger.warning("checkpoint is at epoch %d > requested %d epochs", epoch, epochs)

    def save():
        if ckpt_path is None:
            return
        payload = {
            "format": CHECKPOINT_FORMAT,
            "config": config.to_dict(),
            "seed": seed,
            "problem": _problem_signature(problem),
            "epoch": epoch,
            "net": net.state_dict(),
            "meta_optimizer": meta_opt.state_dict(),
            "rng_state": gen.get_state(),
            "history": history,
            "best": best,
            "elapsed_s": elapsed,
            "torch_version": str(torch.__version__),
        }
        record.atomic_torch_save(ckpt_path, payload)

    def validate():
        ev = evaluate(net, problem, config)
        ev = {"epoch": epoch, **ev}
        history["eval"].append(ev)
        if ev["meta_loss"] < best["meta_loss"]:
            best.update(epoch=epoch, meta_loss=ev["meta_loss"],
                        net={k: v.clone() for k, v in net.state_dict().items()})
        logger.info("epoch %d: validation meta-loss %.4f (final f %.4f), best %.4f at epoch %s",
                    epoch, ev["meta_loss"], ev["final_loss"], best["meta_loss"], best["epoch"])
        return ev

    if not history["eval"]:  # the untrained net, for reference and for best-selection
        validate()
        save()

    bar = None
    if _progress_enabled(progress) and epoch < epochs:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=epoch, desc="L2L meta-training", unit="epoch")
    try:
        while epoch < epochs:
            t0 = time.perf_counter()
            info = _train_epoch(net, problem, config, meta_opt, gen)
            epoch += 1
            history["train_meta_loss"].append(info["train_meta_loss"])
            history["grad_norm"].append(info["grad_norm"])
            info = {"epoch": epoch, **info}
            elapsed += time.perf_counter() - t0
            if epoch % config.eval_every == 0 or epoch == epochs:
                t0 = time.perf_counter()
                info["eval"] = validate()
                elapsed += time.perf_counter() - t0
            stop = bool(callback(info)) if callback is not None else False
            if "eval" in info or stop:
                save()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(train=f"{info['train_meta_loss']:.1f}",
                                best=f"{best['meta_loss']:.1f}")
            if stop:
                logger.info("callback asked to stop at epoch %d", epoch)
                break
    finally:
        if bar is not None:
            bar.close()

    best_net = L2LNet.from_config(config, dtype=problem.dtype)
    best_net.load_state_dict(best["net"] if best["net"] is not None else net.state_dict())
    return {
        "net": best_net,
        "last_net": net,
        "history": history,
        "best": {"epoch": best["epoch"], "meta_loss": best["meta_loss"]},
        "epoch": epoch,
        "elapsed_s": elapsed,
    }


# ---------------------------------------------------------------------- files
def _read(path: Path, expected_format: str | tuple[str, ...]) -> dict:
    formats = (expected_format,) if isinstance(expected_format, str) else expected_format
    if not path.is_file():
        raise L2LCheckpointError(f"{path}: no such file (expected an L2L file written by l2o.l2l)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged zip/pickle
        raise L2LCheckpointError(
            f"{path} is not a readable L2L file ({type(exc).__name__}: {exc}). Expected a "
            f"torch.save file of format {' or '.join(formats)} written by l2o.l2l; the file "
            "is corrupt or truncated, or is something else."
        ) from exc
    if not isinstance(obj, dict) or "format" not in obj:
        raise L2LCheckpointError(
            f"{path} holds a {type(obj).__name__} without a 'format' tag, "
            f"expected a dict of format {' or '.join(formats)} written by l2o.l2l")
    if obj["format"] not in formats:
        raise L2LCheckpointError(
            f"{path} has format {obj['format']!r}, expected {' or '.join(map(repr, formats))}")
    required = ("config", "net")
    if obj["format"] == CHECKPOINT_FORMAT:
        required += ("seed", "problem", "epoch", "meta_optimizer", "rng_state", "history", "best")
    missing = [key for key in required if key not in obj]
    if missing:
        raise L2LCheckpointError(f"{path} lacks the entries {missing} (file is incomplete); "
                                 f"a file of format {obj['format']!r} has {list(required)}")
    return obj


def _check_config(obj: dict, expected: L2LConfig | None, path: Path,
                  fields: tuple[str, ...] | None) -> L2LConfig:
    """Rebuild the stored config and compare ``fields`` (all when None) with ``expected``."""
    try:
        stored = L2LConfig.from_dict(dict(obj["config"]))
    except (TypeError, ValueError) as exc:
        raise L2LCheckpointError(f"{path} holds an invalid L2LConfig: {exc}") from exc
    if expected is not None:
        names = fields if fields is not None else tuple(f.name for f in dataclasses.fields(L2LConfig))
        diffs = [f"{k}: file has {getattr(stored, k)!r}, expected {getattr(expected, k)!r}"
                 for k in names if getattr(stored, k) != getattr(expected, k)]
        if diffs:
            raise L2LCheckpointError(f"{path}: configuration mismatch -- " + "; ".join(diffs))
    return stored


def _load_weights(net: L2LNet, state_dict: dict, path: Path) -> None:
    own = net.state_dict()
    problems = []
    for k in sorted(set(own) | set(state_dict)):
        if k not in state_dict:
            problems.append(f"missing weight {k} (expected shape {tuple(own[k].shape)})")
        elif k not in own:
            problems.append(f"unexpected weight {k}")
        elif not isinstance(state_dict[k], torch.Tensor) or state_dict[k].shape != own[k].shape:
            got = getattr(state_dict[k], "shape", type(state_dict[k]).__name__)
            problems.append(f"weight {k} has shape {tuple(got) if not isinstance(got, str) else got}, "
                            f"expected {tuple(own[k].shape)}")
    if problems:
        raise L2LCheckpointError(
            f"{path}: weights do not match the network described by its config "
            f"({net.net_dict()}): " + "; ".join(problems))
    with torch.no_grad():
        for k, v in state_dict.items():
            if not torch.isfinite(v).all():
                raise L2LCheckpointError(f"{path}: weight {k} holds non-finite values")
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()})


def save_l2l(net: L2LNet, path: str | os.PathLike, config: L2LConfig | None = None,
             meta: dict | None = None) -> Path:
    """Write a trained net (weights, config, free-form ``meta``) for :func:`load_l2l`."""
    cfg = config if config is not None else L2LConfig(**net.net_dict())
    if cfg.net_dict() != net.net_dict():
        raise ValueError(f"config {cfg.net_dict()} does not describe the net {net.net_dict()}")
    path = Path(path)
    payload = {
        "format": NET_FORMAT,
        "config": cfg.to_dict(),
        "net": {k: v.detach().to(torch.float32).clone() for k, v in net.state_dict().items()},
        "meta": meta or {},
        "torch_version": str(torch.__version__),
    }
    record.atomic_torch_save(path, payload)
    return path


def load_l2l(path: str | os.PathLike, config: L2LConfig | None = None,
             dtype: torch.dtype = torch.float32) -> L2LNet:
    """Load a trained :class:`L2LNet` from a net file or a training checkpoint.

    A training checkpoint yields its *best* weights (those of the lowest validation
    meta-loss).

    Args:
        path: file written by :func:`save_l2l` or by :func:`meta_train`.
        config: if given, the network fields (:data:`NET_FIELDS`) stored in the file must
            equal this config's.
        dtype: dtype of the returned net.

    Raises:
        L2LCheckpointError: the file is missing, corrupt, of another format, its config
            differs from ``config``, or its weights do not fit its config; the message
            says what was found and what was expected.
    """
    path = Path(path)
    obj = _read(path, (NET_FORMAT, CHECKPOINT_FORMAT))
    stored = _check_config(obj, config, path, fields=NET_FIELDS)
    weights = obj["net"]
    if obj["format"] == CHECKPOINT_FORMAT:
        best = obj.get("best") or {}
        weights = best.get("net") or weights
    if not isinstance(weights, dict):
        raise L2LCheckpointError(f"{path}: 'net' is a {type(weights).__name__}, expected a state dict")
    net = L2LNet.from_config(stored, dtype=dtype)
    _load_weights(net, weights, path)
    net.eval()
    for prm in net.parameters():
        prm.requires_grad_(False)
    return net


# ------------------------------------------------------------ torch.optim API
class L2LOptimizer(torch.optim.Optimizer):
    """A trained L2L net as a ``torch.optim`` optimizer for any ``nn.Module``.

    The net is coordinatewise, so every coordinate of every parameter is one row of the
    LSTM batch: all parameters with a gradient are concatenated and processed in one call.
    Each parameter keeps its LSTM state in ``self.state[p]`` (``"h"``, ``"c"``:
    ``(num_layers, p.numel(), hidden_size)``, and ``"step"``); the state starts at zero,
    as at the start of a meta-training trajectory.  Call :meth:`reset_state` to start a
    new trajectory with the same optimizer.

    The LSTM state stays in the net's dtype whatever the parameters' dtype (also after
    :meth:`load_state_dict`, which would otherwise cast it to each parameter's).

    Loss scale: the net reads ``log|g|`` of each gradient coordinate, so multiplying the
    loss by a constant changes the steps (e.g. a summed instead of averaged loss; the
    README's "Robustness" section gives numbers).  Use a minibatch mean, as in training.

    Args:
        params: parameters or parameter groups, as for any ``torch.optim`` optimizer.
        net: an :class:`L2LNet`, or a path for :func:`load_l2l`.

    Example::

        opt = L2LOptimizer.from_pretrained(model.parameters())   # the shipped net
        # or: opt = L2LOptimizer(model.parameters(), "path/to/l2l_mnist48.pt")
        for xb, yb in batches:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
    """

    def __init__(self, params, net: L2LNet | str | os.PathLike):
        if isinstance(net, (str, os.PathLike)):
            net = load_l2l(net)
        if not isinstance(net, L2LNet):
            raise TypeError(f"net must be an L2LNet or a path, got {type(net).__name__}")
        super().__init__(params, {})
        self.net = net
        for prm in self.net.parameters():
            prm.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, params, path: str | os.PathLike | None = None) -> "L2LOptimizer":
        """The optimizer with a saved net.

        Args:
            params: parameters or parameter groups.
            path: a file written by :func:`save_l2l` or :func:`meta_train`; default the
                shipped ``results/l2l/l2l_mnist48.pt`` (``$L2O_L2L_NET`` overrides it; see
                :func:`l2o.learned.pretrained_file`).

        Raises:
            L2LCheckpointError: no such file, or not a readable L2L file.
        """
        from l2o.learned import pretrained_file

        return cls(params, load_l2l(pretrained_file("l2l", path)))

    def reset_state(self) -> None:
        """Forget the LSTM states (start a new trajectory)."""
        self.state.clear()

    def load_state_dict(self, state_dict: dict) -> None:
        """As ``torch.optim.Optimizer.load_state_dict``, keeping the LSTM state in the
        net's dtype and device (the base class casts it to each parameter's)."""
        super().load_state_dict(state_dict)
        ref = self.net.head.weight
        for st in self.state.values():
            for key in ("h", "c"):
                if isinstance(st.get(key), torch.Tensor):
                    st[key] = st[key].to(dtype=ref.dtype, device=ref.device)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """One step ``p <- p + m(p.grad)`` for every parameter with a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return loss
        ref = self.net.head.weight
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError("L2LOptimizer does not support sparse gradients")
        # each tensor runs through the fused step on its own state, in place
        for p in params:
            st = self.state[p]
            k = p.numel()
            if not st:
                st["step"] = 0
                st["h"], st["c"] = self.net.initial_state(k, dtype=ref.dtype, device=ref.device)
            delta = ref.new_empty(k)
            self.net.step_(p.grad.reshape(-1).to(device=ref.device), st["h"], st["c"], delta)
            st["step"] += 1
            p.add_(delta.view_as(p).to(dtype=p.dtype, device=p.device))
        return loss


# ------------------------------------------------------------------------ CLI
#: Hash of this file as imported, recorded in provenance (the file may change during a run).
_SOURCE_SHA256 = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _make_mnist48(batch_size: int, data_dir: str | None) -> tuple[MLPProblem, str]:
    from l2o import data

    prepared = data.prepare("mnist", 48, data_dir=data_dir)
    problem = data.make_problem("mnist", 48, 48, batch_size=batch_size, data_dir=data_dir)
    return problem, prepared.describe()


def _cli_config(args) -> L2LConfig:
    return L2LConfig(lr=args.lr, trajectories=args.trajectories, eval_every=args.eval_every,
                     horizon=args.horizon, unroll=args.unroll,
                     max_grad_norm=None if args.max_grad_norm <= 0 else args.max_grad_norm,
                     preprocess_p=args.preprocess_p)


def _train_cli(args) -> int:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = _cli_config(args)
    from l2o.data import DatasetFormatError, DatasetNotFoundError

    try:
        problem, data_desc = _make_mnist48(config.batch_size, args.data_dir)
    except (DatasetNotFoundError, DatasetFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    logger.info("problem: %r", problem)
    ckpt = out / "checkpoint.pt"
    git = record.git_state()  # the tree this session runs, before it writes anything
    t0 = time.time()
    res = meta_train(problem, config, seed=args.seed, epochs=args.epochs, checkpoint=ckpt,
                     resume=args.resume, progress=False if args.no_progress else None)
    wall = time.time() - t0
    meta = {"best_epoch": res["best"]["epoch"], "best_meta_loss": res["best"]["meta_loss"],
            "epochs": res["epoch"], "seed": args.seed, "problem": _problem_signature(problem),
            "data": data_desc}
    save_l2l(res["net"], out / "l2l_mnist48.pt", config, meta)
    # non-finite numbers null, as before record.py: the meta-training chapter reads them
    record.atomic_write_json(out / "history.json", {
        "config": config.to_dict(), "seed": args.seed, "best": res["best"],
        "epochs": res["epoch"], **res["history"]}, nonfinite="null")
    command = " ".join([Path(sys.executable).name, "-m", "l2o.l2l", *sys.argv[1:]])
    prov = record.provenance(
        command, round(wall, 1), git,
        what="L2L (Andrychowicz et al. 2016) meta-trained on MNIST-48 (48-48-10), l2o.l2l",
        seeds={"seed": args.seed, "training_generator": TRAIN_SEED_OFFSET + args.seed,
               "validation": list(config.eval_seeds),
               "note": "training stream torch.Generator(TRAIN_SEED_OFFSET + seed) also "
                       "initialises the net; validation seeds (raw torch seeds) select the "
                       "best checkpoint; l2o.experiments derives its test seeds with "
                       "SeedSequence, so no stream is shared"},
        config=config.to_dict(), epochs=res["epoch"], best=res["best"],
        compute_time_s=round(res["elapsed_s"], 1), data=data_desc,
        problem=_problem_signature(problem))
    # this file's key before record.py, which the meta-training chapter reads; the hash
    # of l2l.py as imported (the file may change during a run)
    prov["git"] = {"commit": git["git_commit"] or None, "dirty": git["git_dirty"],
                   "l2l_py_sha256": _SOURCE_SHA256}
    prov_path = out / "provenance.json"
    prov = record.add_segment(prov_path if args.resume else None, prov,
                              epochs_after=res["epoch"])
    # wall_time_s: every session's together, as before (the chapter reports the total)
    prov["wall_time_s"] = round(sum(s.get("wall_time_s") or 0.0 for s in prov["segments"]), 1)
    record.atomic_write_json(prov_path, prov)
    logger.info("best validation meta-loss %.4f at epoch %s; wrote %s", res["best"]["meta_loss"],
                res["best"]["epoch"], out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m l2o.l2l train ...``; returns the exit code.

    Arguments are checked while parsing (exit code 2 and one ``error:`` line): ranges,
    the configuration, an existing checkpoint without ``--resume`` and ``--resume``
    without one.
    """
    from l2o.cli import nonnegative_int, positive_float, positive_int

    def finite_float(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        return value

    d = L2LConfig()
    parser = argparse.ArgumentParser(prog="python -m l2o.l2l",
                                     description="Meta-train the L2L baseline on MNIST-48.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="meta-train on MNIST-48 (48-48-10, batch 64, T = 400)")
    p.add_argument("--epochs", type=positive_int, required=True,
                   help="total epochs (trajectories), >= 1")
    p.add_argument("--out", default="results/l2l/", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoint.pt")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--lr", type=positive_float, default=d.lr)
    p.add_argument("--trajectories", type=positive_int, default=d.trajectories)
    p.add_argument("--eval-every", type=positive_int, default=d.eval_every)
    p.add_argument("--horizon", type=positive_int, default=d.horizon)
    p.add_argument("--unroll", type=positive_int, default=d.unroll)
    p.add_argument("--max-grad-norm", type=finite_float, default=d.max_grad_norm,
                   help="<= 0 disables clipping")
    p.add_argument("--preprocess-p", type=positive_float, default=d.preprocess_p)
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        _cli_config(args)
    except ValueError as exc:
        p.error(str(exc))
    ckpt = Path(args.out) / "checkpoint.pt"
    if ckpt.exists() and not args.resume:
        p.error(f"{ckpt} exists: pass --resume to continue it, or choose another --out")
    if args.resume and not ckpt.exists():
        p.error(f"--resume: there is no checkpoint at {ckpt}; leave out --resume to start a "
                "new run")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return _train_cli(args)


if __name__ == "__main__":
    sys.exit(main())
