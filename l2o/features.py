"""State features Φ and observation features Ψ (paper section 3.6).

The state ``s_t`` of the trajectory-centric policy ψ and the observation ``o_t`` of the
learned policy π are built, coordinate by coordinate, from the history of iterates
``x(0..t)``, noisy gradients ``∇f̂(x(0..t))`` and noisy objective values ``f̂(x(0..t))``.

Averages over the last ``window`` (= 3) steps, for ``v ∈ {x, ∇f̂, f̂}`` and ``k ≥ 0``::

    v̄(k) = (1 / min(k+1, 3)) · Σ_{j=max(k−2, 0)}^{k} v(j)

State features at step ``t`` (``S`` = stride = 5, all operations element-wise, a term is
zero whenever one of its time indices is negative):

* objective, ``i = 0..24``:   ``F_i = (f̄(t−Si) − f̄(t−S(i+1))) / f̄(t−S(i+1))``
* gradient,  ``i = 0..24``:   ``G_i = ḡ(t−Si) / (|ḡ(max(t−S(i+1), t mod S))| + 1)``
* iterate,   ``i = 0..24``:   ``R_i = |x̄(max(t−S(i+1), t mod S + S)) − x̄(max(t−S(i+2), t mod S))|
  / (|x̄(t−Si) − x̄(t−S(i+1))| + 0.1)``

The per-coordinate state is ``s_t^j = [x_j(t), F_0..F_24, G_0^j..G_24^j, R_0^j..R_24^j]``
(``dX = 76``).  ``F`` depends on no coordinate: the global scalars are replicated into
every coordinate's block, so that the state keeps the block structure convolutional GPS
needs (book/design.md, D1, D2).

Observation features at step ``t`` (``Ψ``, three per coordinate)::

    ( (f̂(t) − f̂(t−1)) / f̂(t−1),
      ∇f̂_j(t) / (|∇f̂_j(max(t−1, 0))| + 1),
      |x_j(max(t−1, 1)) − x_j(max(t−2, 0))| / (|x_j(t) − x_j(t−1)| + 0.1) )

with the same zero rule (the first and third are zero at ``t = 0``).

Gradient scale (a deviation, off by default).  With ``grad_scale = "rms"`` the gradient
terms of Φ and Ψ are divided by a running root-mean-square of the coordinate's own
gradient instead of ``|earlier gradient| + 1``::

    v(t) = β v(t−1) + (1 − β) ∇f̂_j(t)²,  v(−1) = 0,   r_j(t) = sqrt(v(t) / (1 − β^(t+1))) + ε
    G_i = ḡ_j(t−Si) / r_j(t),                Ψ_2 = ∇f̂_j(t) / r_j(t)

Minibatch gradients of the nets here are ~1e-3 per coordinate, so the paper's ``+ 1``
leaves its gradient features nearly raw and a ψ linear in Φ cannot rescale coordinates
one by one; ``"rms"`` gives ψ and π that per-coordinate scale (chapter 5 says why and what
it changes).

Two readings of the paper need a choice, both configurable in :class:`FeatureConfig`:

* the gradient family is written with ``i = 0..25`` while the other two stop at 24;
  design decision D1 (book/design.md) reads this as a typo (``n_grad_terms = 25``, option 26);
* one text copy puts a bar only on the second term of ``F_i``; the other copy, and the
  wording "relative change in the average recent objective value", put bars on both
  (``objective_form = "both_averaged"``, option ``"first_raw"``).

:class:`StateTracker` computes Φ and Ψ incrementally for ``N`` trajectories at once, from
ring buffers of the running averages; :class:`ObservationTracker` keeps only what Ψ needs
and is what the learned optimizer uses at test time.  :func:`literal_state` and
:func:`literal_observation` transcribe the formulas with plain loops, for the tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = [
    "FeatureConfig",
    "StateTracker",
    "ObservationTracker",
    "literal_state",
    "literal_observation",
    "OBJECTIVE_FORMS",
    "GRAD_SCALES",
]

#: Readings of the objective feature: bars on both terms, or the first term raw.
OBJECTIVE_FORMS = ("both_averaged", "first_raw")
#: Denominators of the gradient features: the paper's ``|earlier gradient| + offset``, or
#: a running RMS of the coordinate's gradient (a deviation, see the module docstring).
GRAD_SCALES = ("offset", "rms")


@dataclass(frozen=True)
class FeatureConfig:
    """Hyperparameters of Φ and Ψ (paper section 3.6).

    Attributes:
        history: number of terms ``H`` of the objective and iterate families
            (``i = 0..H−1``; paper: 25).
        stride: spacing ``S`` of the look-back in steps (paper: 5).
        window: steps averaged by ``x̄, ḡ, f̄`` (paper: 3).
        n_grad_terms: terms of the gradient family.  25 (book/design.md, D1: the paper's
            upper index 25 read as a typo) or 26 (the literal ``i = 0..25``).
        objective_form: ``"both_averaged"`` (bars on both terms of ``F_i``, default) or
            ``"first_raw"`` (``f̂(t−Si)`` not averaged).
        grad_offset: the constant 1 in the gradient denominators of Φ and Ψ.
        iterate_offset: the constant 0.1 in the iterate denominators of Φ and Ψ.
        grad_scale: ``"offset"`` (the paper: ``|ḡ(earlier)| + grad_offset``) or ``"rms"``
            (a running RMS of the coordinate's gradient; a deviation).
        rms_decay: β of the running mean of squared gradients (``"rms"`` only).
        rms_eps: ε added to the RMS (``"rms"`` only).
    """

    history: int = 25
    stride: int = 5
    window: int = 3
    n_grad_terms: int = 25
    objective_form: str = "both_averaged"
    grad_offset: float = 1.0
    iterate_offset: float = 0.1
    grad_scale: str = "offset"
    rms_decay: float = 0.999
    rms_eps: float = 1e-8

    def __post_init__(self):
        for name in ("history", "stride", "window", "n_grad_terms"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Invalid {name}: {value!r} (must be an integer >= 1)")
        if self.objective_form not in OBJECTIVE_FORMS:
            raise ValueError(
                f"Invalid objective_form: {self.objective_form!r} "
                f"(expected one of {OBJECTIVE_FORMS})"
            )
        # A zero offset would divide by zero whenever a gradient or a step vanishes.
        if not self.grad_offset > 0:
            raise ValueError(f"Invalid grad_offset: {self.grad_offset!r} (must be > 0)")
        if not self.iterate_offset > 0:
            raise ValueError(f"Invalid iterate_offset: {self.iterate_offset!r} (must be > 0)")
        if self.grad_scale not in GRAD_SCALES:
            raise ValueError(f"Invalid grad_scale: {self.grad_scale!r} (expected one of {GRAD_SCALES})")
        if not 0 <= self.rms_decay < 1:
            raise ValueError(f"Invalid rms_decay: {self.rms_decay!r} (must be in [0, 1))")
        if not self.rms_eps > 0:
            raise ValueError(f"Invalid rms_eps: {self.rms_eps!r} (must be > 0)")

    @property
    def state_dim(self) -> int:
        """``dX = 1 + H + n_grad_terms + H`` (76 with the defaults)."""
        return 1 + self.history + self.n_grad_terms + self.history

    @property
    def layout(self) -> dict[str, slice]:
        """Where each family sits in the last axis of a state ``s_t^j``."""
        H, G = self.history, self.n_grad_terms
        return {
            "x": slice(0, 1),
            "objective": slice(1, 1 + H),
            "gradient": slice(1 + H, 1 + H + G),
            "iterate": slice(1 + H + G, 1 + H + G + H),
        }

    # Look-backs (in steps) of the oldest average each family reads; they size the rings.
    @property
    def xbar_lookback(self) -> int:
        return self.stride * (self.history + 1)   # x̄(t − S(i+2)), i = H−1

    @property
    def gbar_lookback(self) -> int:
        return self.stride * self.n_grad_terms     # ḡ(t − S(i+1)), i = n_grad_terms−1

    @property
    def fbar_lookback(self) -> int:
        return self.stride * self.history          # f̄(t − S(i+1)), i = H−1


# ----------------------------------------------------------------------------- helpers
def _check_inputs(x, f_hat, grad, n: int, dim: int):
    if x.shape != (n, dim):
        raise ValueError(f"x must be ({n}, {dim}), got {tuple(x.shape)}")
    if grad.shape != (n, dim):
        raise ValueError(f"grad must be ({n}, {dim}), got {tuple(grad.shape)}")
    if f_hat.shape != (n,):
        raise ValueError(f"f_hat must be ({n},), got {tuple(f_hat.shape)}")


# ------------------------------------------------------------------- observation Ψ
class ObservationTracker:
    """Ψ for ``N`` trajectories of ``D`` coordinates, keeping only the last steps.

    Memory: six ``(N, D)`` tensors (eight with ``grad_scale = "rms"``), allocated at the
    first update and overwritten in place afterwards, and two ``(N,)`` ones.  This is
    what the learned optimizer carries at test time
    (:class:`~l2o.policy.PredictedStepDescent`).

    Args:
        n: trajectories ``N``.
        dim: coordinates ``D``.
        config: supplies the offsets 1 and 0.1.
        dtype: of the stored history; ``None`` takes the dtype of the first ``x``.
        device: likewise.
    """

    def __init__(self, n: int, dim: int, config: FeatureConfig = FeatureConfig(),
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        if n < 1 or dim < 1:
            raise ValueError(f"Invalid tracker size: n={n}, dim={dim}")
        self.n, self.dim, self.config = int(n), int(dim), config
        self.dtype, self.device = dtype, device
        self.reset()

    def reset(self) -> None:
        """Forget the history (the next update is ``t = 0``)."""
        self._t = -1
        self._x_prev = None       # x(t)                          after update t
        self._step = None         # |x(t) − x(t−1)|               (zeros at t = 0)
        self._prev_step = None    # |x(max(t−1,1)) − x(max(t−2,0))|
        self._g = None            # ∇f̂(t)
        self._g_prev_abs = None   # |∇f̂(max(t−1, 0))|
        self._f = None            # f̂(t)
        self._f_prev = None       # f̂(t−1)
        self._sq = None           # running mean of ∇f̂², not bias-corrected ("rms")
        self._rms = None          # r(t), the bias-corrected RMS plus ε ("rms")
        self._work = None         # scratch for a quotient's denominator

    @property
    def t(self) -> int:
        """Index of the last update (−1 before the first)."""
        return self._t

    def state_dict(self) -> dict:
        """The history as tensors, ints and ``None`` (``torch.load(weights_only=True)`` reads it).

        The configuration, dtype and device are not included: the owner supplies them
        again to the tracker that :meth:`load_state_dict` is called on.
        """
        return {k: (v.clone() if isinstance(v, torch.Tensor) else v)
                for k, v in vars(self).items() if k.startswith("_")}

    def load_state_dict(self, state: dict) -> None:
        """Restore a history saved by :meth:`state_dict` (tensors moved to this tracker's
        dtype and device when those are set)."""
        own = {k for k in vars(self) if k.startswith("_")}
        if set(state) != own:
            raise ValueError(f"ObservationTracker state has the entries {sorted(state)}, "
                             f"expected {sorted(own)}")
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                v = v.to(dtype=self.dtype or v.dtype, device=self.device or v.device)
            setattr(self, k, v)

    def _allocate(self) -> None:
        def new():
            return torch.empty((self.n, self.dim), dtype=self.dtype, device=self.device)

        self._x_prev, self._step, self._prev_step = new(), new(), new()
        self._g, self._g_prev_abs, self._work = new(), new(), new()
        if self.config.grad_scale == "rms":
            self._sq, self._rms = new(), new()

    def update(self, x: torch.Tensor, f_hat: torch.Tensor, grad: torch.Tensor) -> None:
        """Append step ``t``: iterate ``x (N, D)``, ``f̂ (N,)``, gradient ``∇f̂ (N, D)``.

        The inputs are copied, so the caller may change them in place afterwards.  The
        history lives in buffers that are overwritten in place (no allocation after the
        first update).
        """
        _check_inputs(x, f_hat, grad, self.n, self.dim)
        if self.dtype is None:
            self.dtype = x.dtype
        if self.device is None:
            self.device = x.device
        dtype, device = self.dtype, self.device
        x = x.detach().to(dtype=dtype, device=device)
        g = grad.detach().to(dtype=dtype, device=device)
        f = f_hat.detach().to(dtype=dtype, device=device)
        t = self._t + 1
        if t == 0:
            self._allocate()
            self._step.zero_()
            self._prev_step.zero_()
            torch.abs(g, out=self._g_prev_abs)      # max(t−1, 0) = 0 = t
        elif t == 1:
            # |x(max(t−1,1)) − x(max(t−2,0))| is |x(1) − x(0)| at t = 1 and t = 2,
            # and the previous step |x(t−1) − x(t−2)| from then on.
            torch.sub(x, self._x_prev, out=self._step).abs_()
            self._prev_step.copy_(self._step)
            torch.abs(self._g, out=self._g_prev_abs)
        else:
            # the new step goes into the buffer of the step before last, no longer needed
            torch.sub(x, self._x_prev, out=self._prev_step).abs_()
            self._step, self._prev_step = self._prev_step, self._step
            torch.abs(self._g, out=self._g_prev_abs)
        if self.config.grad_scale == "rms":
            beta = self.config.rms_decay
            # v(t) = β v(t−1) + (1 − β) g², in the order ((1 − β) g) g of the formula
            sq = torch.mul(g, 1.0 - beta, out=self._work).mul_(g)
            if t == 0:
                self._sq.copy_(sq)
            else:
                self._sq.mul_(beta).add_(sq)
            torch.div(self._sq, 1.0 - beta ** (t + 1), out=self._rms).sqrt_()
            self._rms.add_(self.config.rms_eps)
        self._f_prev = self._f
        self._x_prev.copy_(x)
        self._g.copy_(g)
        self._f = f.clone()
        self._t = t

    def grad_rms(self) -> torch.Tensor:
        """``r(t) = sqrt(v(t) / (1 − β^(t+1))) + ε``, ``(N, D)`` (``grad_scale = "rms"`` only).

        A view of the tracker's buffer: the next :meth:`update` overwrites it.
        """
        if self._rms is None or self._t < 0:
            raise RuntimeError("grad_rms() needs grad_scale='rms' and at least one update()")
        return self._rms

    def observation(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """Ψ at the last step: ``(N, D, 3)``, the objective feature replicated over ``D``.

        Args:
            out: optional ``(N, D, 3)`` tensor of the tracker's dtype to write into
                (default: a new tensor).
        """
        if self._t < 0:
            raise RuntimeError("observation() before the first update()")
        cfg = self.config
        shape = (self.n, self.dim, 3)
        if out is None:
            out = self._g.new_empty(shape)
        elif out.shape != shape or out.dtype != self._g.dtype or out.device != self._g.device:
            raise ValueError(f"out must be a {shape} {self._g.dtype} tensor on {self._g.device}")
        den = self._work
        if self._t >= 1:  # the objective and iterate terms reference t−1
            out[..., 0] = ((self._f - self._f_prev) / self._f_prev)[:, None]
            torch.add(self._step, cfg.iterate_offset, out=den)
            torch.div(self._prev_step, den, out=out[..., 2])
        else:
            out[..., 0] = 0.0
            out[..., 2] = 0.0
        if cfg.grad_scale == "rms":
            torch.div(self._g, self._rms, out=out[..., 1])
        else:
            torch.add(self._g_prev_abs, cfg.grad_offset, out=den)
            torch.div(self._g, den, out=out[..., 1])
        return out


# ------------------------------------------------------------------------- state Φ
class StateTracker:
    """Φ-based states and Ψ for ``N`` trajectories of ``D`` coordinates, incrementally.

    Every update costs ``O(N·D)``: the newest averages ``x̄(t), ḡ(t), f̄(t)`` are computed
    from the last ``window`` raw values and written into ring buffers that reach back as
    far as the oldest term of the features (``5·26 + 1`` averaged iterates with the
    defaults).  :meth:`state` gathers the needed averages with one index per family.

    Memory at ``N = 20, D = 2842``, float64: 60 MB for the ``x̄`` ring, 57 MB for the
    ``ḡ`` ring, 25 MB of workspace (:attr:`buffer_bytes` ≈ 145 MB in all), plus 35 MB
    for each returned state (pass ``out=`` to :meth:`state` to reuse one).

    Args:
        n: trajectories ``N``.
        dim: coordinates ``D``.
        config: :class:`FeatureConfig`.
        dtype: of the buffers and outputs; ``None`` takes the dtype of the first ``x``.
        device: likewise.
    """

    def __init__(self, n: int, dim: int, config: FeatureConfig = FeatureConfig(),
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        if n < 1 or dim < 1:
            raise ValueError(f"Invalid tracker size: n={n}, dim={dim}")
        if not isinstance(config, FeatureConfig):
            raise TypeError(f"config must be a FeatureConfig, got {type(config).__name__}")
        self.n, self.dim, self.config = int(n), int(dim), config
        self.dtype, self.device = dtype, device
        self._obs = ObservationTracker(n, dim, config, dtype, device)
        # ring lengths: the current average plus the oldest one referenced
        self._Lx = config.xbar_lookback + 1
        self._Lg = config.gbar_lookback + 1
        self._Lf = config.fbar_lookback + 1
        self._Lr = config.stride * (config.history - 1) + 1   # raw f̂(t − Si), "first_raw"
        self._buffers_ready = False
        self.reset()

    @property
    def state_dim(self) -> int:
        """``dX`` of one coordinate's state (76 with the defaults)."""
        return self.config.state_dim

    @property
    def t(self) -> int:
        """Index of the last update (−1 before the first)."""
        return self._t

    def reset(self) -> None:
        """Forget the history (the next update is ``t = 0``); buffers are kept."""
        self._t = -1
        self._obs.reset()

    def _allocate(self, dtype, device):
        W, n, D = self.config.window, self.n, self.dim
        z = dict(dtype=dtype, device=device)
        self._raw_x = torch.zeros(W, n, D, **z)
        self._raw_g = torch.zeros(W, n, D, **z)
        self._raw_f = torch.zeros(max(W, self._Lr), n, **z)
        self._xbar = torch.zeros(self._Lx, n, D, **z)
        self._gbar = torch.zeros(self._Lg, n, D, **z)
        self._fbar = torch.zeros(self._Lf, n, **z)
        self._x = torch.zeros(n, D, **z)
        # workspaces for state(): the most averages one family gathers at once
        K = max(self.config.history, self.config.n_grad_terms) + 2
        self._ws_a = torch.zeros(K, n, D, **z)
        self._ws_b = torch.zeros(K, n, D, **z)
        self._buffers_ready = True
        logger.debug("StateTracker buffers for N=%d, D=%d: %.1f MiB", n, D,
                     self.buffer_bytes / 2**20)

    @property
    def buffer_bytes(self) -> int:
        """Bytes held by the tracker's buffers (0 before the first update)."""
        if not self._buffers_ready:
            return 0
        bufs = (self._raw_x, self._raw_g, self._raw_f, self._xbar, self._gbar, self._fbar,
                self._x, self._ws_a, self._ws_b)
        return sum(b.numel() * b.element_size() for b in bufs)

    def update(self, x: torch.Tensor, f_hat: torch.Tensor, grad: torch.Tensor) -> None:
        """Append step ``t``: iterate ``x (N, D)``, ``f̂ (N,)``, gradient ``∇f̂ (N, D)``.

        The inputs are copied into the buffers.
        """
        _check_inputs(x, f_hat, grad, self.n, self.dim)
        if not self._buffers_ready:
            self._allocate(self.dtype or x.dtype, self.device or x.device)
        dtype, device = self._xbar.dtype, self._xbar.device
        x = x.detach().to(dtype=dtype, device=device)
        g = grad.detach().to(dtype=dtype, device=device)
        f = f_hat.detach().to(dtype=dtype, device=device)
        t = self._t + 1
        W = self.config.window
        self._raw_x[t % W] = x
        self._raw_g[t % W] = g
        self._raw_f[t % self._raw_f.shape[0]] = f
        # v̄(t) = mean of v(max(t−W+1, 0)..t); at most W raw values are in the rings
        count = min(t + 1, W)
        slots = [(t - j) % W for j in range(count)]
        fslots = [(t - j) % self._raw_f.shape[0] for j in range(count)]
        if count == 1:
            self._xbar[t % self._Lx] = x
            self._gbar[t % self._Lg] = g
            self._fbar[t % self._Lf] = f
        else:
            idx = torch.tensor(slots, device=device)
            self._xbar[t % self._Lx] = self._raw_x.index_select(0, idx).sum(0) / count
            self._gbar[t % self._Lg] = self._raw_g.index_select(0, idx).sum(0) / count
            fidx = torch.tensor(fslots, device=device)
            self._fbar[t % self._Lf] = self._raw_f.index_select(0, fidx).sum(0) / count
        self._x.copy_(x)
        self._obs.update(x, f, g)
        self._t = t

    def observation(self) -> torch.Tensor:
        """Ψ at the last step: ``(N, D, 3)`` (see :class:`ObservationTracker`)."""
        return self._obs.observation()

    def _gather(self, ring: torch.Tensor, times: list[int],
                out: torch.Tensor | None = None) -> torch.Tensor:
        """Averages at the given time indices (all ≥ 0 and within the ring's reach)."""
        idx = torch.tensor([k % ring.shape[0] for k in times], device=ring.device)
        if out is None:
            return ring.index_select(0, idx)
        return torch.index_select(ring, 0, idx, out=out)

    def state(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """Per-coordinate states ``s_t: (N, D, dX)``, ``[x_j, F, G_j, R_j]`` (section 3.6).

        The objective features ``F (N, H)`` are replicated into every coordinate.  Terms
        whose time indices would be negative are zero.

        Args:
            out: optional ``(N, D, dX)`` tensor of the tracker's dtype to write into
                (saves allocating 35 MB per step at ``N = 20, D = 2842``).
        """
        t = self._t
        if t < 0:
            raise RuntimeError("state() before the first update()")
        cfg = self.config
        S, H, nG = cfg.stride, cfg.history, cfg.n_grad_terms
        lay = cfg.layout
        shape = (self.n, self.dim, cfg.state_dim)
        if out is None:
            out = self._x.new_empty(shape)
        else:
            if out.shape != shape or out.dtype != self._x.dtype or out.device != self._x.device:
                raise ValueError(f"out must be a {shape} {self._x.dtype} tensor "
                                 f"on {self._x.device}")
        out[..., 0] = self._x
        q = t // S   # number of whole strides available: t − Sk ≥ 0  ⇔  k ≤ q

        # Objective, F_i for i < min(H, q): both indices t−Si, t−S(i+1) are ≥ 0.
        nF = min(H, q)
        if nF > 0:
            A = self._gather(self._fbar, [t - S * k for k in range(nF + 1)])      # (nF+1, N)
            if cfg.objective_form == "both_averaged":
                first = A[:nF]
            else:
                first = self._gather(self._raw_f, [t - S * k for k in range(nF)])
            F = (first - A[1:]) / A[1:]                                          # (nF, N)
            o = lay["objective"].start
            out[..., o : o + nF] = F.T[:, None, :]

        # Gradient, G_i for i ≤ min(nG−1, q).  The denominator's index
        # max(t−S(i+1), t mod S) is t−S(i+1) while i+1 ≤ q and t mod S = t−Sq after,
        # i.e. the numerator's average of term min(i+1, q): one gather serves both.
        # Temporaries live in two preallocated workspaces (large fresh allocations
        # cost more than the arithmetic here).
        wa, wb = self._ws_a, self._ws_b
        nGv = min(nG, q + 1)
        nA = min(nGv + 1, q + 1)
        A = self._gather(self._gbar, [t - S * k for k in range(nA)], wa[:nA])    # ḡ(t−Sk)
        # dividing into a contiguous buffer, then one transposing copy, is faster than
        # writing the quotient straight into the strided slice of ``out``
        if cfg.grad_scale == "rms":
            quotient = torch.div(A[:nGv], self._obs.grad_rms(), out=wb[:nGv])
        else:
            den_k = torch.tensor([min(i + 1, q) for i in range(nGv)], device=A.device)
            den = torch.index_select(A, 0, den_k, out=wb[:nGv])
            den.abs_().add_(cfg.grad_offset)
            quotient = torch.div(A[:nGv], den, out=den)
        o = lay["gradient"].start
        out[..., o : o + nGv] = quotient.permute(1, 2, 0)

        # Iterate, R_i for i < min(H, q).  With Δ_k = |x̄(t−Sk) − x̄(t−S(k+1))|, the
        # denominator is Δ_i + 0.1.  Both numerator indices clamp together (each clamp is
        # active iff i+2 > q) to the pair (r+S, r) = (t−S(q−1), t−Sq), so the numerator
        # is Δ_{min(i+1, q−1)}.
        nR = min(H, q)
        if nR > 0:
            nD = min(nR + 1, q)                        # Δ_0..Δ_{nD−1}
            X = self._gather(self._xbar, [t - S * k for k in range(nD + 1)], wa[: nD + 1])
            delta = torch.sub(X[:-1], X[1:], out=wb[:nD]).abs_()                 # (nD, N, D)
            num_k = torch.tensor([min(i + 1, q - 1) for i in range(nR)], device=X.device)
            num = torch.index_select(delta, 0, num_k, out=wa[:nR])   # X no longer needed
            den = delta[:nR].add_(cfg.iterate_offset)
            o = lay["iterate"].start
            out[..., o : o + nR] = num.div_(den).permute(1, 2, 0)
        # the terms not written above reference a negative time index: zero
        for name, n_set in (("objective", nF), ("gradient", nGv), ("iterate", nR)):
            sl = lay[name]
            out[..., sl.start + n_set : sl.stop] = 0.0
        return out


# --------------------------------------------------------- literal transcriptions (tests)
def _as_arrays(seq) -> list:
    return [np.asarray(v, dtype=np.float64) for v in seq]


def _literal_rms(gs: list, k: int, config: FeatureConfig) -> np.ndarray:
    """``r(k) = sqrt(v(k) / (1 − β^(k+1))) + ε``, ``v(k) = Σ_{j ≤ k} (1−β) β^(k−j) g(j)²``."""
    beta = config.rms_decay
    v = sum((1 - beta) * beta ** (k - j) * gs[j] ** 2 for j in range(k + 1))
    return np.sqrt(v / (1 - beta ** (k + 1))) + config.rms_eps


def literal_state(xs: Sequence, fs: Sequence, gs: Sequence, t: int,
                  config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Φ-based state at step ``t`` of ONE trajectory, transcribed term by term.

    Slow and deliberately naive (used only by tests): every average and every feature is
    recomputed from the full history with plain loops, exactly as the formulas read.

    Args:
        xs: iterates ``x(0), x(1), ...``, each ``(D,)``; at least ``t+1`` of them.
        fs: objective values ``f̂(0), f̂(1), ...`` (scalars).
        gs: gradients ``∇f̂(0), ...``, each ``(D,)``.
        t: the step.
        config: :class:`FeatureConfig`.

    Returns:
        ``(D, dX)`` float64 array ``[x_j(t), F_0..F_{H−1}, G_0..G_{nG−1}, R_0..R_{H−1}]``.
    """
    xs, gs = _as_arrays(xs[: t + 1]), _as_arrays(gs[: t + 1])
    fs = [float(v) for v in fs[: t + 1]]
    if len(xs) < t + 1 or len(fs) < t + 1 or len(gs) < t + 1:
        raise ValueError(f"need at least t+1 = {t + 1} steps of history")
    S, W, H = config.stride, config.window, config.history
    D = xs[0].shape[0]

    def bar(v, k):
        # v̄(k) = (1/min(k+1, W)) Σ_{j=max(k−(W−1), 0)}^{k} v(j)
        total = 0.0
        for j in range(max(k - (W - 1), 0), k + 1):
            total = total + v[j]
        return total / min(k + 1, W)

    def defined(*indices):
        # "whenever a feature becomes undefined (the time index becomes negative)"
        if any(k > t for k in indices if k >= 0) and all(k >= 0 for k in indices):
            raise AssertionError(f"a feature at t={t} references the future: {indices}")
        return all(k >= 0 for k in indices)

    columns = [xs[t]]
    for i in range(H):
        a, b = t - S * i, t - S * (i + 1)
        if defined(a, b):
            first = bar(fs, a) if config.objective_form == "both_averaged" else fs[a]
            value = (first - bar(fs, b)) / bar(fs, b)
        else:
            value = 0.0
        columns.append(np.full(D, value))
    for i in range(config.n_grad_terms):
        a, b = t - S * i, max(t - S * (i + 1), t % S)
        if defined(a, b) and config.grad_scale == "rms":
            columns.append(bar(gs, a) / _literal_rms(gs, t, config))
        elif defined(a, b):
            columns.append(bar(gs, a) / (np.abs(bar(gs, b)) + config.grad_offset))
        else:
            columns.append(np.zeros(D))
    for i in range(H):
        a = max(t - S * (i + 1), t % S + S)
        b = max(t - S * (i + 2), t % S)
        c, d = t - S * i, t - S * (i + 1)
        # c, d ≥ 0 only when t ≥ S; then a, b ≤ t too (t mod S + S > t only for t < S)
        if defined(a, b, c, d):
            columns.append(np.abs(bar(xs, a) - bar(xs, b))
                           / (np.abs(bar(xs, c) - bar(xs, d)) + config.iterate_offset))
        else:
            columns.append(np.zeros(D))
    return np.stack(columns, axis=1)


def literal_observation(xs: Sequence, fs: Sequence, gs: Sequence, t: int,
                        config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Ψ at step ``t`` of ONE trajectory, transcribed term by term (used by tests).

    Args:
        xs, fs, gs, t, config: as :func:`literal_state`.

    Returns:
        ``(D, 3)`` float64 array.
    """
    xs, gs = _as_arrays(xs[: t + 1]), _as_arrays(gs[: t + 1])
    fs = [float(v) for v in fs[: t + 1]]
    D = xs[0].shape[0]
    if t >= 1:
        o1 = np.full(D, (fs[t] - fs[t - 1]) / fs[t - 1])
    else:
        o1 = np.zeros(D)
    if config.grad_scale == "rms":
        o2 = gs[t] / _literal_rms(gs, t, config)
    else:
        o2 = gs[t] / (np.abs(gs[max(t - 1, 0)]) + config.grad_offset)
    if t >= 1:   # references t−1; max(t−1, 1) ≤ t then
        o3 = (np.abs(xs[max(t - 1, 1)] - xs[max(t - 2, 0)])
              / (np.abs(xs[t] - xs[t - 1]) + config.iterate_offset))
    else:
        o3 = np.zeros(D)
    return np.stack([o1, o2, o3], axis=1)
