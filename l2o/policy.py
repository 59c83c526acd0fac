"""The learned policy π: a coordinatewise LSTM, one per coordinate group (paper 3.3, 3.5).

The mean of π is "a recurrent neural net fragment that corresponds to a single time
step, which takes the observation features Ψ and the previous memory state as input
and outputs the step to take" (section 3.3); the experiments use one layer of 128 LSTM
cells.  Convolutional GPS (section 3.5) shares μ^π's parameters across the coordinates
of a group, so every coordinate runs the same small network on its own 3 features with
its own memory::

    z_t^j   = (Ψ_t^j − m_g) / s_g                 frozen input standardisation
    h_t^j   = LSTM_g(z_t^j, h_{t−1}^j),  h_{−1}^j = 0
    μ_t^j   = σ_g · (w_g · h_t^j + b_g)           Linear(128 → 1) times a frozen scale

with ``g`` the group of coordinate ``j``.  Groups are matched by *role*
(``hidden_weight``, ``hidden_bias``, ``output_weight``, ``output_bias``;
:data:`l2o.problems.GROUP_ROLES`), so a policy trained on a 48-48-10 net applies to any
architecture (book/design.md, D4).  The output scale ``σ_g`` is set once from the RMS of
the teacher's actions and then frozen (book/design.md, D5), which keeps the regression
targets O(1).

:class:`LSTMPolicy` has two batched entry points that compute the same function:
:meth:`~LSTMPolicy.step` (one time step for all ``N × D`` coordinates, used in rollouts)
and :meth:`~LSTMPolicy.forward_sequence` (whole sequences, used for BPTT in the θ-step).
:class:`PredictedStepDescent` turns a trained policy into a ``torch.optim`` optimizer.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from l2o.features import FeatureConfig, ObservationTracker
from l2o.problems import GROUP_NAMES, GROUP_ROLES

logger = logging.getLogger(__name__)

__all__ = ["ROLES", "PolicyConfig", "LSTMPolicy", "PredictedStepDescent", "fused_lstm_cell_",
           "fuse_lstm_gates"]

#: Group roles in the order of :data:`l2o.problems.GROUP_NAMES` (so group id = index
#: into ``MLPProblem.groups``).
ROLES: tuple[str, ...] = tuple(GROUP_ROLES[g] for g in GROUP_NAMES)

Hidden = tuple[torch.Tensor, torch.Tensor]

#: Gate pre-activations computed at once by the fused step: rows per chunk are this
#: divided by ``4 · hidden_size`` (1,024 rows, 2 MB of float32 gates, for 128 cells), so
#: that a chunk's gates are still in cache for the element-wise part of the cell.
STEP_CHUNK_ELEMENTS = 2**19

_WORKSPACES = threading.local()


def chunk_rows(n_gates: int, n: int) -> int:
    """Rows per chunk of the fused step for ``n`` rows of ``n_gates`` gate columns."""
    return max(1, min(n, STEP_CHUNK_ELEMENTS // n_gates))


def workspace(rows: int, widths: tuple[int, ...], dtype: torch.dtype,
              device: torch.device) -> list[torch.Tensor]:
    """Scratch matrices ``(rows, w)`` for each ``w`` in ``widths``, reused across calls.

    One set per thread and key, so that threads running steps at the same time (Dask
    workers in one process) never share scratch memory.
    """
    key = (rows, widths, dtype, str(device))
    cache = getattr(_WORKSPACES, "cache", None)
    if cache is None:
        cache = _WORKSPACES.cache = {}
    bufs = cache.get(key)
    if bufs is None:
        if len(cache) >= 8:
            cache.clear()
        bufs = cache[key] = [torch.empty((rows, w), dtype=dtype, device=device) for w in widths]
    return bufs


def fused_lstm_cell_(x: torch.Tensor, c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                     h_out: torch.Tensor, c_out: torch.Tensor, gates: torch.Tensor,
                     scratch: torch.Tensor) -> None:
    """One LSTM step for a block of rows, written into ``h_out`` and ``c_out``.

    ``x = [h | input]: (n, H + I)`` holds the previous memory and the input, so one
    matrix product gives every gate.  ``weight: (H + I, 4H)`` and ``bias: (4H,)`` (from
    :func:`fuse_lstm_gates`) order the gates ``i, f, o, g`` with the cell input's
    columns multiplied by −2, so that one sigmoid serves all four, with
    ``tanh(u) = 1 − 2σ(−2u)`` (torch's σ costs a quarter of its tanh on CPU)::

        c_t = f c + i tanh(u) = (i + f c) − 2 i σ(−2u)
        h_t = o tanh(c_t)     = o − 2 o σ(−2 c_t)

    ``c_out`` may be ``c``.  ``gates: (n, 4H)`` and ``scratch: (n, H)`` are workspace.
    """
    H = c.shape[1]
    torch.addmm(bias, x, weight, out=gates)
    gates.sigmoid_()
    i, f, o, s = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H], gates[:, 3 * H:]
    torch.addcmul(i, c, f, out=c_out).addcmul_(i, s, value=-2.0)
    torch.mul(c_out, -2.0, out=scratch).sigmoid_()
    torch.addcmul(o, o, scratch, value=-2.0, out=h_out)


def fuse_lstm_gates(w_ih: torch.Tensor, w_hh: torch.Tensor, bias: torch.Tensor):
    """``(weight (H + I, 4H), bias (4H,))`` for :func:`fused_lstm_cell_` from torch's layout.

    ``w_ih: (4H, I)``, ``w_hh: (4H, H)``, ``bias: (4H,)`` in torch's gate order
    ``i, f, g, o``; the result multiplies rows ``[h | input]``.
    """
    w = torch.cat([w_hh, w_ih], 1)
    wi, wf, wg, wo = w.chunk(4, 0)
    bi, bf, bg, bo = bias.chunk(4)
    return (torch.cat([wi, wf, wo, -2.0 * wg]).T.contiguous(),
            torch.cat([bi, bf, bo, -2.0 * bg]).contiguous())


@dataclass(frozen=True)
class PolicyConfig:
    """Hyperparameters of π.

    Attributes:
        hidden_size: LSTM cells per group (paper: one layer of 128).
        n_inputs: observation features per coordinate (Ψ: 3).
        groups: the group roles, in group-id order.
        share_across_groups: ``False`` (default, book/design.md, D4): one LSTM and head per
            group.  ``True``: one LSTM and head for all groups, with a one-hot group code
            appended to the input (the ablation of D4).  Standardisation and output
            scale stay per group either way.
        output_scale: initial value of every group's output scale ``σ_g`` (reset from
            the teacher's actions by :meth:`LSTMPolicy.set_output_scale`).
        std_floor: lower bound of the standardisation's standard deviations (GPS's
            ``policy_opt`` uses 1e-3).
    """

    hidden_size: int = 128
    n_inputs: int = 3
    groups: tuple[str, ...] = ROLES
    share_across_groups: bool = False
    output_scale: float = 1.0
    std_floor: float = 1e-3

    def __post_init__(self):
        if not isinstance(self.hidden_size, int) or self.hidden_size < 1:
            raise ValueError(f"Invalid hidden_size: {self.hidden_size!r}")
        if not isinstance(self.n_inputs, int) or self.n_inputs < 1:
            raise ValueError(f"Invalid n_inputs: {self.n_inputs!r}")
        groups = tuple(self.groups)
        object.__setattr__(self, "groups", groups)  # accept lists, store a tuple
        if not groups or not all(isinstance(g, str) and g for g in groups):
            raise ValueError(f"Invalid groups: {self.groups!r} (need non-empty names)")
        if len(set(groups)) != len(groups):
            raise ValueError(f"Duplicate group names in {groups!r}")
        if not (math.isfinite(self.output_scale) and self.output_scale > 0):
            raise ValueError(f"Invalid output_scale: {self.output_scale!r} (must be > 0)")
        if not (math.isfinite(self.std_floor) and self.std_floor > 0):
            raise ValueError(f"Invalid std_floor: {self.std_floor!r} (must be > 0)")

    @property
    def n_groups(self) -> int:
        return len(self.groups)


class LSTMPolicy(nn.Module):
    """Coordinatewise LSTM policy mean ``μ^π`` with one LSTM and head per group.

    Buffers (saved in ``state_dict``, never trained):

    * ``obs_mean (G, n_inputs)``, ``obs_std (G, n_inputs)``: input standardisation,
      set once by :meth:`fit_normalization` (identity until then);
    * ``output_scale (G,)``: ``σ_g``, set by :meth:`set_output_scale`;
    * ``normalization_fitted (G,)``: which groups have frozen statistics.

    Args:
        config: :class:`PolicyConfig`.
        generator: if given, the weights are drawn from ``U(−1/√H, 1/√H)`` with it (the
            PyTorch default scheme) instead of from the global RNG.
        feature_config: the observation features Ψ the policy reads (kept as
            :attr:`feature_config`; :func:`l2o.gps.load_policy` sets it from the file, and
            :class:`PredictedStepDescent` uses it).  ``None``: not known.
    """

    def __init__(self, config: PolicyConfig = PolicyConfig(),
                 generator: torch.Generator | None = None,
                 feature_config: FeatureConfig | None = None):
        super().__init__()
        if not isinstance(config, PolicyConfig):
            raise TypeError(f"config must be a PolicyConfig, got {type(config).__name__}")
        if feature_config is not None and not isinstance(feature_config, FeatureConfig):
            raise TypeError(f"feature_config must be a FeatureConfig, "
                            f"got {type(feature_config).__name__}")
        self.config = config
        #: The features Ψ the policy was trained with (``None``: not known).
        self.feature_config = feature_config
        G, H, n_in = config.n_groups, config.hidden_size, config.n_inputs
        n_nets = 1 if config.share_across_groups else G
        in_size = n_in + (G if config.share_across_groups else 0)
        self.lstms = nn.ModuleList(nn.LSTM(in_size, H) for _ in range(n_nets))
        self.heads = nn.ModuleList(nn.Linear(H, 1) for _ in range(n_nets))
        self.register_buffer("obs_mean", torch.zeros(G, n_in))
        self.register_buffer("obs_std", torch.ones(G, n_in))
        self.register_buffer("output_scale", torch.full((G,), float(config.output_scale)))
        self.register_buffer("normalization_fitted", torch.zeros(G, dtype=torch.bool))
        if generator is not None:
            self.reset_parameters(generator)

    # ------------------------------------------------------------------ bookkeeping
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Redraw every weight from ``U(−1/√H, 1/√H)`` using ``generator``."""
        bound = 1.0 / math.sqrt(self.config.hidden_size)
        with torch.no_grad():
            for p in self.parameters():
                u = torch.rand(p.shape, generator=generator, dtype=torch.float64)
                p.copy_((2 * u - 1) * bound)

    def group_id(self, group: int | str) -> int:
        """The integer id of a group given by id or by role name."""
        if isinstance(group, str):
            try:
                return self.config.groups.index(group)
            except ValueError:
                raise ValueError(f"Unknown group {group!r}; the policy has {self.config.groups}")
        gid = int(group)
        if not 0 <= gid < self.config.n_groups:
            raise ValueError(f"Invalid group id {group!r}: the policy has "
                             f"{self.config.n_groups} groups")
        return gid

    def _net(self, gid: int) -> tuple[nn.LSTM, nn.Linear]:
        k = 0 if self.config.share_across_groups else gid
        return self.lstms[k], self.heads[k]

    def group_parameters(self, group: int | str) -> list[nn.Parameter]:
        """Trainable parameters that act on ``group`` (all of them when shared)."""
        lstm, head = self._net(self.group_id(group))
        return list(lstm.parameters()) + list(head.parameters())

    @property
    def _ref(self) -> torch.Tensor:
        return self.heads[0].weight

    def initial_hidden(self, n: int, dim: int, dtype: torch.dtype | None = None,
                       device: torch.device | str | None = None) -> Hidden:
        """Zero memory for ``N`` trajectories of ``D`` coordinates (paper: h, c = 0 at t = 0).

        Returns:
            ``(h, c)``, each ``(D, N, hidden_size)``: coordinate-major, so that the
            coordinates of one group form one contiguous block.
        """
        dtype = dtype or self._ref.dtype
        device = device or self._ref.device
        shape = (int(dim), int(n), self.config.hidden_size)
        return (torch.zeros(shape, dtype=dtype, device=device),
                torch.zeros(shape, dtype=dtype, device=device))

    # ------------------------------------------------------- frozen statistics (D5)
    def fit_normalization(self, obs: torch.Tensor, group: int | str | None = None,
                          overwrite: bool = False) -> None:
        """Freeze the input standardisation of one group (or all) from observations.

        Args:
            obs: ``(..., n_inputs)`` observations Ψ (e.g. of the teacher's rollouts).
                Rows with a non-finite entry are ignored.
            group: id or role; ``None`` sets every group from the same data.
            overwrite: allow refitting a group whose statistics are already frozen.

        Raises:
            RuntimeError: the group's statistics are already frozen and not ``overwrite``.
        """
        n_in = self.config.n_inputs
        if obs.shape[-1] != n_in:
            raise ValueError(f"obs must be (..., {n_in}), got {tuple(obs.shape)}")
        gids = range(self.config.n_groups) if group is None else [self.group_id(group)]
        for gid in gids:
            if bool(self.normalization_fitted[gid]) and not overwrite:
                raise RuntimeError(
                    f"the input statistics of group {self.config.groups[gid]!r} are frozen; "
                    "pass overwrite=True to refit them"
                )
        rows = obs.detach().reshape(-1, n_in).to(torch.float64)
        finite = torch.isfinite(rows).all(-1)
        if not bool(finite.any()):
            raise ValueError("fit_normalization needs at least one finite observation")
        if not bool(finite.all()):
            logger.warning("fit_normalization: ignoring %d non-finite rows of %d",
                           int((~finite).sum()), rows.shape[0])
        rows = rows[finite]
        mean = rows.mean(0)
        std = rows.std(0, unbiased=False).clamp_min(self.config.std_floor)
        for gid in gids:
            self.obs_mean[gid] = mean.to(self.obs_mean)
            self.obs_std[gid] = std.to(self.obs_std)
            self.normalization_fitted[gid] = True
        logger.info("input statistics of %s: mean %s, std %s",
                    "all groups" if group is None else self.config.groups[gids[0]],
                    mean.tolist(), std.tolist())

    def fit_normalization_groups(self, obs_per_group: Sequence[torch.Tensor],
                                 overwrite: bool = False) -> None:
        """:meth:`fit_normalization` for every group, ``obs_per_group[g]: (..., n_inputs)``."""
        if len(obs_per_group) != self.config.n_groups:
            raise ValueError(f"need {self.config.n_groups} observation sets, "
                             f"got {len(obs_per_group)}")
        for gid, obs in enumerate(obs_per_group):
            self.fit_normalization(obs, gid, overwrite=overwrite)

    def set_output_scale(self, group: int | str, scale: float) -> None:
        """Set the frozen output scale ``σ_g`` (book/design.md, D5: RMS of ψ0's actions)."""
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"Invalid output scale: {scale!r} (must be > 0)")
        gid = self.group_id(group)
        self.output_scale[gid] = scale
        logger.info("output scale of %s set to %.3g", self.config.groups[gid], scale)

    def fit_output_scale(self, actions: torch.Tensor, group: int | str) -> float:
        """Set ``σ_g`` to the RMS of ``actions`` (finite entries) and return it."""
        a = actions.detach().to(torch.float64).reshape(-1)
        a = a[torch.isfinite(a)]
        if a.numel() == 0:
            raise ValueError("fit_output_scale needs at least one finite action")
        rms = float(a.pow(2).mean().sqrt())
        self.set_output_scale(group, max(rms, 1e-12))
        return rms

    # ------------------------------------------------------------------- the network
    def _run(self, obs: torch.Tensor, gid: int, hidden: Hidden | None):
        """LSTM of group ``gid`` on ``obs (T, B, n_inputs)``; ``hidden``: ``(B, H)`` each."""
        lstm, head = self._net(gid)
        z = (obs - self.obs_mean[gid]) / self.obs_std[gid]
        if self.config.share_across_groups:
            code = z.new_zeros(*z.shape[:-1], self.config.n_groups)
            code[..., gid] = 1.0
            z = torch.cat([z, code], -1)
        hx = None if hidden is None else (hidden[0].unsqueeze(0), hidden[1].unsqueeze(0))
        out, (h, c) = lstm(z, hx)
        mean = head(out).squeeze(-1) * self.output_scale[gid]
        return mean, (h[0], c[0])

    def _plan(self, group_index: torch.Tensor) -> list[tuple[int, slice | torch.Tensor]]:
        """Coordinates of each group: slices when ``group_index`` is sorted, else indices."""
        if group_index.ndim != 1:
            raise ValueError(f"group_index must be 1-D, got shape {tuple(group_index.shape)}")
        gi = group_index.to(torch.long)
        if gi.numel() == 0:
            return []
        lo, hi = int(gi.min()), int(gi.max())
        if lo < 0 or hi >= self.config.n_groups:
            raise ValueError(f"group ids must lie in [0, {self.config.n_groups}), got [{lo}, {hi}]")
        counts = torch.bincount(gi, minlength=self.config.n_groups).tolist()
        plan = []
        if bool((gi[1:] >= gi[:-1]).all()):
            start = 0
            for gid, k in enumerate(counts):
                if k:
                    plan.append((gid, slice(start, start + k)))
                start += k
        else:
            for gid, k in enumerate(counts):
                if k:
                    plan.append((gid, torch.nonzero(gi == gid).squeeze(1)))
        return plan

    def _fused(self, gid: int):
        """Group ``gid``'s LSTM and head with the frozen statistics folded in (cached).

        Returns ``(weight (H + n_in, 4H), bias (4H,), w_out (H,), b_out (1,))`` for
        :func:`fused_lstm_cell_` on rows ``[h | Ψ]`` of raw observations:
        ``W_ih z = (W_ih / s) Ψ − (W_ih / s) m`` with ``z = (Ψ − m) / s``, the one-hot
        group code of a shared net is a constant of the bias, and ``σ_g`` scales the
        head.  The cache is keyed by the storage and version counter of every tensor
        involved, so training π, loading weights or refitting statistics refreshes it.
        """
        lstm, head = self._net(gid)
        # plain dict look-ups: this runs for every tensor at every optimizer step
        lp, hp, bufs = lstm._parameters, head._parameters, self._buffers
        sources = (lp["weight_ih_l0"], lp["weight_hh_l0"], lp["bias_ih_l0"], lp["bias_hh_l0"],
                   hp["weight"], hp["bias"], bufs["obs_mean"], bufs["obs_std"],
                   bufs["output_scale"])
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in sources)
        cache = self.__dict__.setdefault("_fused_cache", {})
        hit = cache.get(gid)
        if hit is not None and hit[0] == key:
            return hit[1]
        n_in = self.config.n_inputs
        with torch.no_grad():
            w_in = lstm.weight_ih_l0[:, :n_in] / self.obs_std[gid]
            bias = lstm.bias_ih_l0 + lstm.bias_hh_l0 - w_in @ self.obs_mean[gid]
            if self.config.share_across_groups:
                bias = bias + lstm.weight_ih_l0[:, n_in + gid]
            weight, bias = fuse_lstm_gates(w_in, lstm.weight_hh_l0, bias)
            scale = self.output_scale[gid]
            fused = (weight, bias, (head.weight[0] * scale).contiguous(), head.bias * scale)
        cache[gid] = (key, fused)
        return fused

    def _step_rows(self, obs: torch.Tensor, gid: int, h: torch.Tensor, c: torch.Tensor,
                   h_out: torch.Tensor, c_out: torch.Tensor, mean_out: torch.Tensor) -> None:
        """The fused step of group ``gid`` on ``M`` rows, in chunks (no autograd).

        ``obs (M, n_in)`` raw observations, ``h, c (M, H)`` the memory, written into
        ``h_out, c_out (M, H)`` (which may be ``h, c``), and the mean step into
        ``mean_out (M,)``; all in the module's dtype.  Memory beyond the arguments: one
        chunk's gates, whatever ``M``.
        """
        M = obs.shape[0]
        if M == 0:
            return
        H, n_in = self.config.hidden_size, self.config.n_inputs
        weight, bias, w_out, b_out = self._fused(gid)
        chunk = chunk_rows(4 * H, M)
        x, gates, scratch = workspace(chunk, (H + n_in, 4 * H, H), weight.dtype, weight.device)
        for r0 in range(0, M, chunk):
            r1 = min(r0 + chunk, M)
            if r1 - r0 < chunk:
                x, gates, scratch = x[:r1 - r0], gates[:r1 - r0], scratch[:r1 - r0]
            x[:, :H].copy_(h[r0:r1])
            x[:, H:].copy_(obs[r0:r1])
            hh = h_out[r0:r1]
            fused_lstm_cell_(x, c[r0:r1], weight, bias, hh, c_out[r0:r1], gates, scratch)
            torch.addmv(b_out, hh, w_out, out=mean_out[r0:r1])

    def step(self, obs: torch.Tensor, group_index: torch.Tensor,
             hidden: Hidden, inplace: bool = False) -> tuple[torch.Tensor, Hidden]:
        """One time step of π's mean for every coordinate of every trajectory.

        Without autograd (under ``torch.no_grad()``, or when nothing involved requires a
        gradient) the step runs fused: one matrix product per chunk of a group's
        coordinates, the input standardisation folded into the weights.  Otherwise it
        runs through ``nn.LSTM``, differentiably.  Both compute the same function.

        Args:
            obs: observations Ψ_t ``(N, D, n_inputs)``; cast to the module's dtype.
            group_index: group id of every coordinate ``(D,)`` (e.g.
                ``MLPProblem.group_index``).
            hidden: ``(h, c)``, each ``(D, N, hidden_size)``, from :meth:`initial_hidden`
                at ``t = 0`` and from the previous call afterwards.
            inplace: overwrite ``hidden`` with the new memory and return it (saves
                allocating two ``(D, N, hidden_size)`` tensors per step; fused path
                only, ``hidden`` must be contiguous).

        Returns:
            ``(mean_action (N, D), new_hidden)``: the step ``Δx = μ^π(o_t)`` and the memory.
        """
        if obs.ndim != 3 or obs.shape[-1] != self.config.n_inputs:
            raise ValueError(f"obs must be (N, D, {self.config.n_inputs}), got {tuple(obs.shape)}")
        obs = obs.to(dtype=self._ref.dtype)  # computed in the module's precision
        N, D, n_in = obs.shape
        if group_index.shape != (D,):
            raise ValueError(f"group_index must be ({D},), got {tuple(group_index.shape)}")
        h, c = hidden
        H = self.config.hidden_size
        if h.shape != (D, N, H) or c.shape != (D, N, H):
            raise ValueError(f"hidden must be two ({D}, {N}, {H}) tensors, got "
                             f"{tuple(h.shape)} and {tuple(c.shape)}")
        if torch.is_grad_enabled() and (obs.requires_grad or h.requires_grad or c.requires_grad
                                        or any(p.requires_grad for p in self.parameters())):
            if inplace:
                raise ValueError("inplace=True needs no autograd (run under torch.no_grad())")
            return self._step_autograd(obs, group_index, hidden)
        if inplace:
            if not (h.is_contiguous() and c.is_contiguous()):
                raise ValueError("inplace=True needs contiguous hidden tensors")
            h_new, c_new = h, c
        else:
            h_new, c_new = torch.empty_like(h, memory_format=torch.contiguous_format), \
                torch.empty_like(c, memory_format=torch.contiguous_format)
        # rows in (coordinate, trajectory) order, as the memory is laid out
        rows = obs.transpose(0, 1).reshape(D * N, n_in)
        h2, c2 = h.reshape(D * N, H), c.reshape(D * N, H)
        h_out, c_out = h_new.view(D * N, H), c_new.view(D * N, H)
        mean = obs.new_empty(D * N)
        for gid, sel in self._plan(group_index):
            if isinstance(sel, slice):
                r = slice(sel.start * N, sel.stop * N)
                self._step_rows(rows[r], gid, h2[r], c2[r], h_out[r], c_out[r], mean[r])
            else:  # scattered coordinates: gather, step, scatter
                idx = (sel.to(rows.device)[:, None] * N
                       + torch.arange(N, device=rows.device)).reshape(-1)
                hg, cg, mg = h2[idx], c2[idx], mean.new_empty(idx.numel())
                self._step_rows(rows[idx], gid, hg, cg, hg, cg, mg)
                h_out[idx], c_out[idx], mean[idx] = hg, cg, mg
        return mean.view(D, N).T.contiguous(), (h_new, c_new)

    def _step_autograd(self, obs: torch.Tensor, group_index: torch.Tensor,
                       hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        """:meth:`step` through ``nn.LSTM`` (differentiable); arguments already checked."""
        N, D, n_in = obs.shape
        h, c = hidden
        H = self.config.hidden_size
        obs_dn = obs.transpose(0, 1)                                    # (D, N, n_in)
        mean = obs.new_empty(D, N)
        h_new, c_new = torch.empty_like(h), torch.empty_like(c)
        for gid, sel in self._plan(group_index):
            o = obs_dn[sel]
            Dg = o.shape[0]
            # all N·D_g coordinates of the group as one LSTM batch of a length-1 sequence
            m, (h1, c1) = self._run(o.reshape(1, Dg * N, n_in), gid,
                                    (h[sel].reshape(Dg * N, H), c[sel].reshape(Dg * N, H)))
            mean[sel] = m.reshape(Dg, N)
            h_new[sel] = h1.reshape(Dg, N, H)
            c_new[sel] = c1.reshape(Dg, N, H)
        return mean.T.contiguous(), (h_new, c_new)

    def forward_sequence(self, obs_seq: torch.Tensor, group_id: int | str | torch.Tensor,
                         hidden: Hidden | None = None, return_hidden: bool = False):
        """π's means along whole coordinate sequences, for training by BPTT.

        Args:
            obs_seq: ``(T, M, n_inputs)``: ``M`` coordinate sequences of length ``T``;
                cast to the module's dtype.
            group_id: one group (id or role) for all sequences, or ``(M,)`` ids.
            hidden: optional initial memory ``(h, c)``, each ``(M, hidden_size)``
                (zero if ``None``, as at ``t = 0``).
            return_hidden: also return the final memory.

        Returns:
            ``(T, M)`` means, and ``(h, c)`` each ``(M, hidden_size)`` if ``return_hidden``.
        """
        if obs_seq.ndim != 3 or obs_seq.shape[-1] != self.config.n_inputs:
            raise ValueError(f"obs_seq must be (T, M, {self.config.n_inputs}), "
                             f"got {tuple(obs_seq.shape)}")
        obs_seq = obs_seq.to(dtype=self._ref.dtype)  # computed in the module's precision
        T, M, _ = obs_seq.shape
        if isinstance(group_id, torch.Tensor) and group_id.ndim == 1:
            if group_id.shape != (M,):
                raise ValueError(f"group_id must be ({M},), got {tuple(group_id.shape)}")
            out = obs_seq.new_empty(T, M)
            hs = cs = None
            if return_hidden:
                hs = obs_seq.new_empty(M, self.config.hidden_size)
                cs = torch.empty_like(hs)
            for gid, sel in self._plan(group_id):
                hx = None if hidden is None else (hidden[0][sel], hidden[1][sel])
                m, (h, c) = self._run(obs_seq[:, sel], gid, hx)
                out[:, sel] = m
                if return_hidden:
                    hs[sel], cs[sel] = h, c
            return (out, (hs, cs)) if return_hidden else out
        gid = self.group_id(group_id.item() if isinstance(group_id, torch.Tensor) else group_id)
        out, (h, c) = self._run(obs_seq, gid, hidden)
        return (out, (h, c)) if return_hidden else out

    def forward(self, obs_seq: torch.Tensor, group_id: int | str | torch.Tensor,
                hidden: Hidden | None = None, return_hidden: bool = False):
        """``module(...)`` is :meth:`forward_sequence` (so hooks and ``functional_call`` work)."""
        return self.forward_sequence(obs_seq, group_id, hidden, return_hidden)


def _all_finite(f_hat: torch.Tensor, grads: Sequence[torch.Tensor]) -> bool:
    """Whether the loss and every gradient are finite (one synchronisation)."""
    flags = [torch.isfinite(f_hat).all()] + [torch.isfinite(g).all() for g in grads]
    return bool(torch.stack([f.to(flags[0].device) for f in flags]).all())


def _guess_roles(params: Sequence[torch.Tensor], names: Sequence[str | None]
                 ) -> tuple[dict[int, str], list[str]]:
    """Automatic roles of ``params`` (rules in :class:`PredictedStepDescent`'s docstring).

    Args:
        params: the tensors without an explicit role, in parameter order.
        names: their names (from named parameters), or ``None`` each.

    Returns:
        ``{id(tensor): role}``, and one line for each role the shapes did not settle.
    """
    def label(i: int) -> str:
        return (repr(names[i]) if names[i] else f"parameter {i}") + f" {tuple(params[i].shape)}"

    weights = [i for i, p in enumerate(params) if p.ndim >= 2]
    bias_of: dict[int, int] = {}  # weight index -> index of its layer's bias
    if params and all(names):
        # named: "<layer>.bias" belongs to the weight of the same layer
        layer = {}
        for i in weights:
            layer.setdefault(names[i].rpartition(".")[0], i)
        for i, p in enumerate(params):
            prefix, _, leaf = names[i].rpartition(".")
            w = layer.get(prefix)
            if (p.ndim == 1 and leaf == "bias" and w is not None and w not in bias_of
                    and params[w].shape[0] == p.numel()):
                bias_of[w] = i
    else:
        # unnamed: a bias is registered right after its weight, one entry per output
        for i in range(1, len(params)):
            w = params[i - 1]
            if params[i].ndim == 1 and w.ndim >= 2 and w.shape[0] == params[i].numel():
                bias_of[i - 1] = i
    guesses = []
    out = None
    if weights:
        def feeds(a: int, b: int) -> bool:
            """Layer ``b`` can read the outputs of layer ``a`` (a conv may be flattened)."""
            wa, wb = params[a], params[b]
            n_out, n_in = wa.shape[0], wb.shape[1]
            return n_in == n_out or (wa.ndim > 2 and wb.ndim == 2 and n_in % n_out == 0)

        # the output layer: the only one whose outputs no other layer reads
        sinks = [a for a in weights if not any(feeds(a, b) for b in weights if b != a)]
        if len(sinks) == 1:
            out = sinks[0]
        else:
            out = weights[-1]
            guesses.append(f"{label(out)} -> output_weight (the last weight: the shapes do not "
                           "tell which layer is the output layer)")
    roles = {}
    for i in weights:
        kind = "output" if i == out else "hidden"
        roles[id(params[i])] = f"{kind}_weight"
        if i in bias_of:
            roles[id(params[bias_of[i]])] = f"{kind}_bias"
    for i, p in enumerate(params):
        if id(p) not in roles:
            roles[id(p)] = "hidden_bias"
            guesses.append(f"{label(i)} -> hidden_bias (a tensor with fewer than 2 dimensions "
                           "that is no layer's bias, e.g. a normalisation layer's scale or shift)")
    return roles, guesses


class PredictedStepDescent(torch.optim.Optimizer):
    """A trained :class:`LSTMPolicy` as a ``torch.optim`` optimizer for any ``nn.Module``.

    Each step computes the observation Ψ of every parameter coordinate (one
    :class:`~l2o.features.ObservationTracker` per parameter tensor), runs π's LSTM on
    all coordinates at once, and applies the mean step ``x ← x + μ^π(o_t)``.  Because Ψ
    contains the relative change of the loss, :meth:`step` needs a closure returning it.

    Features: Ψ must be computed as in training.  A policy read by
    :func:`l2o.gps.load_policy` carries its :class:`~l2o.features.FeatureConfig`
    (``policy.feature_config``), which is used when ``feature_config`` is not given; a
    ``feature_config`` that differs from the policy's is an error.

    Roles: a param group may name one for all its tensors with the key ``"role"`` (one
    of the policy's groups, e.g. ``{"params": model.norm.parameters(), "role":
    "hidden_bias"}``).  The other tensors are matched automatically: a tensor with
    ``ndim ≥ 2`` is a layer's weight, a 1-D tensor right after it with one entry per
    output unit (or, with named parameters, ``<layer>.bias``) is that layer's bias.  The
    output layer is the one whose outputs no other layer reads, found from the shapes
    (so a head registered first is still the head), else the last weight.  Its weight
    and bias get ``output_weight`` and ``output_bias``; every other weight and bias
    ``hidden_weight`` and ``hidden_bias`` (book/design.md, D4).  A bias-free head leaves no
    ``output_bias``.  What the shapes cannot tell (1-D tensors that belong to no layer,
    such as BatchNorm or LayerNorm scales and shifts, which become ``hidden_bias``, or an
    output layer that had to be taken as the last weight) is logged once as a warning
    naming each guess; give such tensors an explicit role to silence it.

    Non-finite values: a step whose loss or any gradient is not finite is skipped, as
    ``torch.amp.GradScaler`` skips one: parameters, LSTM memory and feature history
    stay as they were, :attr:`skipped_steps` counts it, and a warning is logged the
    first time.

    Loss scale: Ψ's gradient feature divides by ``|earlier gradient| + 1`` (paper
    features), so multiplying the loss by a constant changes the steps (e.g. a summed
    instead of averaged loss; the README's "Robustness" section gives numbers).  Use the
    loss normalisation the policy was trained with: a mean over the minibatch.

    ``self.state[p]`` holds ``"tracker"``, the LSTM memory ``"h"``, ``"c"``
    (``(numel, 1, hidden_size)``, in the policy's dtype) and ``"step"``.
    :meth:`state_dict` stores the tracker as tensors, so the result can be read back
    with ``torch.load(..., weights_only=True)``.  :meth:`reset_state` starts a new
    trajectory.

    Args:
        params: parameters or parameter groups, as for any ``torch.optim`` optimizer
            (``model.named_parameters()`` gives names to the role warnings).
        policy: a trained :class:`LSTMPolicy` (not modified).
        feature_config: supplies Ψ's constants; default ``policy.feature_config``
            (``FeatureConfig()``, with a warning, for a policy that does not carry one).

    Raises:
        ValueError: ``feature_config`` differs from the features the policy carries, or
            a role is not one of the policy's groups.

    Example::

        opt = PredictedStepDescent.from_pretrained(model.parameters())
        # or: policy, features, _ = l2o.gps.load_policy(path)
        #     opt = PredictedStepDescent(model.parameters(), policy, features)

        def closure():
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            return loss

        opt.step(closure)
    """

    def __init__(self, params, policy: LSTMPolicy, feature_config: FeatureConfig | None = None):
        if not isinstance(policy, LSTMPolicy):
            raise TypeError(f"policy must be an LSTMPolicy, got {type(policy).__name__}")
        if policy.config.n_inputs != 3:
            raise ValueError(f"the policy must read the 3 observation features Ψ, "
                             f"it reads {policy.config.n_inputs}")
        if feature_config is not None and not isinstance(feature_config, FeatureConfig):
            raise TypeError(f"feature_config must be a FeatureConfig, "
                            f"got {type(feature_config).__name__}")
        carried = getattr(policy, "feature_config", None)
        if feature_config is None:
            if carried is None:
                logger.warning("PredictedStepDescent: the policy does not say which features it "
                               "was trained with (it was not read by l2o.gps.load_policy); "
                               "using FeatureConfig() - pass feature_config if it differs")
                carried = FeatureConfig()
            feature_config = carried
        elif carried is not None and feature_config != carried:
            diff = {f.name: (getattr(feature_config, f.name), getattr(carried, f.name))
                    for f in dataclasses.fields(FeatureConfig)
                    if getattr(feature_config, f.name) != getattr(carried, f.name)}
            raise ValueError(f"feature_config does not match the features the policy was "
                             f"trained with: {diff} (given, policy's); omit feature_config to "
                             "use the policy's")
        # set before Optimizer.__init__, which calls add_param_group
        self.policy = policy
        self.feature_config = feature_config
        self._warned_roles = False
        self._role_guesses: list[str] = []
        super().__init__(params, {"role": None})
        self._warn_role_guesses()  # once every initial group is in (a name may pair across groups)
        #: Steps skipped because the loss or a gradient was not finite.
        self.skipped_steps = 0
        self._warned_nonfinite = False
        if not bool(policy.normalization_fitted.all()):
            logger.warning("PredictedStepDescent: the policy's input statistics were never "
                           "fitted (untrained policy?)")

    @classmethod
    def from_pretrained(cls, params, path: str | os.PathLike | None = None
                        ) -> "PredictedStepDescent":
        """The optimizer with a saved policy and the features stored with it.

        Args:
            params: parameters or parameter groups.
            path: a file written by :func:`l2o.gps.save_policy`; default the shipped
                ``results/psd/psd_mnist48.pt`` (``$L2O_PSD_POLICY`` overrides it; see
                :func:`l2o.learned.pretrained_file`).

        Raises:
            l2o.gps.PolicyFileError: no such file, or not a readable policy file.
        """
        from l2o.gps import load_policy
        from l2o.learned import pretrained_file

        policy, features, _ = load_policy(pretrained_file("psd", path))
        return cls(params, policy, features)

    def add_param_group(self, param_group: dict) -> None:
        role = param_group.get("role")
        if role is not None and role not in self.policy.config.groups:
            raise ValueError(f"Invalid role {role!r}: the policy knows {self.policy.config.groups}")
        super().add_param_group(param_group)
        self._assign_roles()
        if hasattr(self, "skipped_steps"):  # a group added after construction
            self._warn_role_guesses()

    def _assign_roles(self) -> None:
        """Fill ``group["param_roles"]`` for every param group (see the class docstring)."""
        auto, labels = [], []
        for g in self.param_groups:
            if g.get("role") is None:
                auto += g["params"]
                labels += g.get("param_names") or [None] * len(g["params"])
        roles, guesses = _guess_roles(auto, labels)
        known = self.policy.config.groups
        for g in self.param_groups:
            if g.get("role") is not None:
                g["param_roles"] = [g["role"]] * len(g["params"])
                continue
            g["param_roles"] = [roles[id(p)] for p in g["params"]]
            for r in g["param_roles"]:
                if r not in known:
                    raise ValueError(f"automatic role {r!r} is not a group of the policy "
                                     f"{known}; give param groups an explicit 'role'")
        self._role_guesses = guesses

    def _warn_role_guesses(self) -> None:
        if self._role_guesses and not self._warned_roles:
            self._warned_roles = True
            logger.warning("PredictedStepDescent guessed parameter roles: %s. Give these "
                           "tensors a param group with an explicit 'role' to choose otherwise.",
                           "; ".join(self._role_guesses))

    def roles(self) -> list[tuple[torch.Tensor, str]]:
        """``(parameter, role)`` for every parameter, in order."""
        return [(p, r) for g in self.param_groups for p, r in zip(g["params"], g["param_roles"])]

    def state_dict(self) -> dict:
        """As ``torch.optim.Optimizer.state_dict``, with each feature tracker as tensors."""
        sd = super().state_dict()
        packed = {}
        for key, st in sd["state"].items():
            st = dict(st)  # the base class shares the live dicts
            if isinstance(st.get("tracker"), ObservationTracker):
                st["tracker"] = st["tracker"].state_dict()
            packed[key] = st
        sd["state"] = packed
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """As ``torch.optim.Optimizer.load_state_dict``; the LSTM memory stays in the
        policy's dtype (the base class would cast it to each parameter's)."""
        super().load_state_dict(state_dict)
        ref = self.policy._ref
        for p, st in self.state.items():
            for key in ("h", "c"):
                if isinstance(st.get(key), torch.Tensor):
                    st[key] = st[key].to(dtype=ref.dtype, device=ref.device)
            tracker = st.get("tracker")
            if isinstance(tracker, dict):
                st["tracker"] = ObservationTracker(1, p.numel(), self.feature_config,
                                                   dtype=p.dtype, device=p.device)
                st["tracker"].load_state_dict(tracker)

    def reset_state(self) -> None:
        """Forget observations and LSTM memory (the next step is ``t = 0``)."""
        self.state.clear()

    def _skip_step(self, f_hat: torch.Tensor) -> None:
        """Count a step skipped for a non-finite loss or gradient; warn the first time."""
        self.skipped_steps += 1
        if not self._warned_nonfinite:
            self._warned_nonfinite = True
            logger.warning("PredictedStepDescent: skipped a step with a non-finite %s; parameters, "
                           "LSTM memory and features are unchanged (warned once; "
                           "optimizer.skipped_steps counts them)",
                           "gradient" if bool(torch.isfinite(f_hat).all()) else "loss")

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """One step ``x ← x + μ^π(Ψ_t, h_{t−1})`` for every parameter with a gradient.

        Args:
            closure: re-evaluates the model: zeroes the gradients, computes the loss,
                calls ``backward()`` and returns the loss (required).

        Returns:
            The loss returned by the closure.  If it or any gradient is not finite the
            step is skipped: nothing changes but :attr:`skipped_steps`.
        """
        if closure is None:
            raise ValueError(
                "Predicted Step Descent needs the loss: its observation features include the "
                "relative change of the objective f̂. Call step(closure) with a closure that "
                "zeroes the gradients, computes the loss, calls backward() and returns the loss."
            )
        if not callable(closure):
            raise TypeError(f"closure must be callable, got {type(closure).__name__}")
        with torch.enable_grad():
            loss = closure()
        if loss is None:
            raise ValueError("the closure returned None; it must return the loss")
        f_hat = torch.as_tensor(loss).detach()
        if f_hat.numel() != 1:
            raise ValueError(f"the closure must return a scalar loss, "
                             f"got shape {tuple(f_hat.shape)}")
        policy = self.policy
        ref = policy._ref
        gid_of = {r: policy.group_id(r) for r in policy.config.groups}
        entries = []
        for p, role in self.roles():
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("PredictedStepDescent does not support sparse gradients")
            entries.append((gid_of[role], p))
        if not entries:
            return loss
        if not _all_finite(f_hat, [p.grad for _, p in entries]):
            self._skip_step(f_hat)
            return loss
        # Each tensor runs through its group's fused LSTM on its own memory, in place:
        # no concatenation of the coordinates, no copy of the memory.
        H = policy.config.hidden_size
        for gid, p in entries:
            st = self.state[p]
            k = p.numel()
            if "tracker" not in st:
                st["tracker"] = ObservationTracker(1, k, self.feature_config, dtype=p.dtype,
                                                   device=p.device)
                st["h"], st["c"] = policy.initial_hidden(1, k)
                st["step"] = 0
            tracker = st["tracker"]
            tracker.update(p.detach().reshape(1, k), f_hat.reshape(1).to(p.dtype),
                           p.grad.reshape(1, k))
            obs = tracker.observation()[0].to(dtype=ref.dtype, device=ref.device)
            mean = obs.new_empty(k)
            h, c = st["h"].view(k, H), st["c"].view(k, H)
            policy._step_rows(obs, gid, h, c, h, c, mean)
            st["step"] += 1
            p.add_(mean.view(p.shape).to(dtype=p.dtype, device=p.device))
        return loss
