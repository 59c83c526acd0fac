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

import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from l2o.features import FeatureConfig, ObservationTracker
from l2o.problems import GROUP_NAMES, GROUP_ROLES

logger = logging.getLogger(__name__)

__all__ = ["ROLES", "PolicyConfig", "LSTMPolicy", "PredictedStepDescent"]

#: Group roles in the order of :data:`l2o.problems.GROUP_NAMES` (so group id = index
#: into ``MLPProblem.groups``).
ROLES: tuple[str, ...] = tuple(GROUP_ROLES[g] for g in GROUP_NAMES)

Hidden = tuple[torch.Tensor, torch.Tensor]


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
    """

    def __init__(self, config: PolicyConfig = PolicyConfig(),
                 generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(config, PolicyConfig):
            raise TypeError(f"config must be a PolicyConfig, got {type(config).__name__}")
        self.config = config
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

    def step(self, obs: torch.Tensor, group_index: torch.Tensor,
             hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        """One time step of π's mean for every coordinate of every trajectory.

        Args:
            obs: observations Ψ_t ``(N, D, n_inputs)``; cast to the module's dtype.
            group_index: group id of every coordinate ``(D,)`` (e.g.
                ``MLPProblem.group_index``).
            hidden: ``(h, c)``, each ``(D, N, hidden_size)``, from :meth:`initial_hidden`
                at ``t = 0`` and from the previous call afterwards.

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


class PredictedStepDescent(torch.optim.Optimizer):
    """A trained :class:`LSTMPolicy` as a ``torch.optim`` optimizer for any ``nn.Module``.

    Each step computes the observation Ψ of every parameter coordinate (one
    :class:`~l2o.features.ObservationTracker` per parameter tensor), runs π's LSTM on
    all coordinates at once, and applies the mean step ``x ← x + μ^π(o_t)``.  Because Ψ
    contains the relative change of the loss, :meth:`step` needs a closure returning it.

    Roles: a param group may name one for all its tensors with the key ``"role"`` (one
    of the policy's groups).  Otherwise tensors with ``ndim ≥ 2`` are weights and the
    others biases; the last weight and the last bias (in parameter order, over the
    groups without an explicit role) get the roles ``output_weight`` and
    ``output_bias``, all earlier ones ``hidden_weight`` and ``hidden_bias``
    (book/design.md, D4).

    ``self.state[p]`` holds ``"tracker"``, the LSTM memory ``"h"``, ``"c"``
    (``(numel, 1, hidden_size)``) and ``"step"``.  :meth:`reset_state` starts a new
    trajectory.

    Args:
        params: parameters or parameter groups, as for any ``torch.optim`` optimizer.
        policy: a trained :class:`LSTMPolicy` (not modified).
        feature_config: supplies Ψ's constants (defaults: 1 and 0.1, as in training).

    Example::

        opt = PredictedStepDescent(model.parameters(), policy)

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
        feature_config = FeatureConfig() if feature_config is None else feature_config
        if not isinstance(feature_config, FeatureConfig):
            raise TypeError(f"feature_config must be a FeatureConfig, "
                            f"got {type(feature_config).__name__}")
        # set before Optimizer.__init__, which calls add_param_group
        self.policy = policy
        self.feature_config = feature_config
        super().__init__(params, {"role": None})
        if not bool(policy.normalization_fitted.all()):
            logger.warning("PredictedStepDescent: the policy's input statistics were never "
                           "fitted (untrained policy?)")

    def add_param_group(self, param_group: dict) -> None:
        role = param_group.get("role")
        if role is not None and role not in self.policy.config.groups:
            raise ValueError(f"Invalid role {role!r}: the policy knows {self.policy.config.groups}")
        super().add_param_group(param_group)
        self._assign_roles()

    def _assign_roles(self) -> None:
        """Fill ``group["param_roles"]`` for every param group (see the class docstring)."""
        auto = [p for g in self.param_groups if g.get("role") is None for p in g["params"]]
        weights = [p for p in auto if p.ndim >= 2]
        biases = [p for p in auto if p.ndim < 2]
        roles = {}
        for kind, members in (("weight", weights), ("bias", biases)):
            for k, p in enumerate(members):
                roles[id(p)] = f"{'output' if k == len(members) - 1 else 'hidden'}_{kind}"
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

    def roles(self) -> list[tuple[torch.Tensor, str]]:
        """``(parameter, role)`` for every parameter, in order."""
        return [(p, r) for g in self.param_groups for p, r in zip(g["params"], g["param_roles"])]

    def reset_state(self) -> None:
        """Forget observations and LSTM memory (the next step is ``t = 0``)."""
        self.state.clear()

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """One step ``x ← x + μ^π(Ψ_t, h_{t−1})`` for every parameter with a gradient.

        Args:
            closure: re-evaluates the model: zeroes the gradients, computes the loss,
                calls ``backward()`` and returns the loss (required).

        Returns:
            The loss returned by the closure.
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
        # sorted by group, the coordinates of a group are one block for policy.step
        entries.sort(key=lambda e: e[0])
        obs, hs, cs, gidx = [], [], [], []
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
            obs.append(tracker.observation()[0].to(dtype=ref.dtype, device=ref.device))
            hs.append(st["h"])
            cs.append(st["c"])
            gidx.append(torch.full((k,), gid, dtype=torch.long, device=ref.device))
        o = torch.cat(obs, 0).unsqueeze(0)                               # (1, D, 3)
        mean, (h, c) = policy.step(o, torch.cat(gidx), (torch.cat(hs), torch.cat(cs)))
        start = 0
        for gid, p in entries:
            k = p.numel()
            st = self.state[p]
            st["h"], st["c"] = h[start:start + k].clone(), c[start:start + k].clone()
            st["step"] += 1
            p.add_(mean[0, start:start + k].reshape(p.shape).to(dtype=p.dtype, device=p.device))
            start += k
        return loss
