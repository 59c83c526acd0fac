"""Objective functions: two-layer nets trained with softmax cross-entropy.

The paper (section 4) meta-trains and tests on the training loss of a net with one
hidden layer of ReLU units: ``input -> W1, b1 -> ReLU -> W2, b2 -> softmax``.  An
iterate ``x`` is the flat vector of all four parameter blocks; the blocks are the
*coordinate groups* of convolutional GPS (paper section 3.5): one group per weight
matrix and one per bias vector.

Every evaluation is batched over trajectories: ``theta`` may have any leading batch
shape ``(..., dim)`` and the loss comes back with shape ``(...)``.  Running N
trajectories in parallel is one batched matrix product, never a Python loop.

Shapes used below: ``M`` training examples, ``d`` inputs, ``h`` hidden units,
``c`` classes, ``B`` minibatch size, ``N`` trajectories.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GROUP_NAMES = ("W1", "b1", "W2", "b2")

#: Role of each group, used to match groups across architectures (book/design.md, D4).
GROUP_ROLES = {
    "W1": "hidden_weight",
    "b1": "hidden_bias",
    "W2": "output_weight",
    "b2": "output_bias",
}


@dataclass(frozen=True)
class Group:
    """One coordinate group: a contiguous slice of the flat parameter vector."""

    name: str
    start: int
    stop: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def role(self) -> str:
        return GROUP_ROLES[self.name]


def _log_softmax(z: torch.Tensor) -> torch.Tensor:
    """``log_softmax`` over the last axis, computed in a class-major layout.

    With few classes, torch's kernel over a short last axis is ~7x slower on CPU than
    the same reduction over a contiguous leading axis, and the full-training-set loss
    (evaluated at every iterate) is dominated by it.
    """
    zt = z.transpose(-1, -2).contiguous()
    return torch.log_softmax(zt, dim=-2).transpose(-1, -2)


class MLPProblem:
    """The training loss of a two-layer ReLU net, batched over iterates.

    Args:
        x: training inputs ``(M, d)``; its dtype sets the problem's precision.
        y: integer class labels ``(M,)`` in ``[0, n_classes)``.
        n_hidden: hidden units ``h``.
        n_classes: output units ``c``; default ``y.max() + 1``.
        batch_size: minibatch size ``B`` of the stochastic objective.
        init_std: standard deviation of the Gaussian initial weights
            (book/design.md, D8: weights ``N(0, init_std^2)``, biases zero).
        name: a label used in results and figures.
        chunk: rows of the training set evaluated at once by :meth:`true_loss`.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        n_hidden: int,
        n_classes: int | None = None,
        batch_size: int = 64,
        init_std: float = 0.01,
        name: str = "",
        chunk: int = 8192,
    ):
        if x.ndim != 2:
            raise ValueError(f"x must be (M, d), got shape {tuple(x.shape)}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"y must be ({x.shape[0]},), got shape {tuple(y.shape)}")
        if n_hidden < 1:
            raise ValueError(f"Invalid n_hidden: {n_hidden}")
        if batch_size < 1:
            raise ValueError(f"Invalid batch_size: {batch_size}")
        if init_std < 0:
            raise ValueError(f"Invalid init_std: {init_std}")
        self.x = x
        self.y = y.long()
        self.n_in = int(x.shape[1])
        self.n_hidden = int(n_hidden)
        self.n_classes = int(n_classes if n_classes is not None else int(self.y.max()) + 1)
        if int(self.y.min()) < 0 or int(self.y.max()) >= self.n_classes:
            raise ValueError("labels must lie in [0, n_classes)")
        self.batch_size = int(batch_size)
        self.init_std = float(init_std)
        self.name = name
        self.chunk = int(chunk)
        d, h, c = self.n_in, self.n_hidden, self.n_classes
        shapes = {"W1": (h, d), "b1": (h,), "W2": (c, h), "b2": (c,)}
        groups, start = [], 0
        for g in GROUP_NAMES:
            size = 1
            for s in shapes[g]:
                size *= s
            groups.append(Group(g, start, start + size, shapes[g]))
            start += size
        self.groups: tuple[Group, ...] = tuple(groups)
        self.dim = start
        # group id of every coordinate, used by per-group policies
        self.group_index = torch.cat(
            [torch.full((g.size,), i, dtype=torch.long) for i, g in enumerate(self.groups)]
        )

    # ------------------------------------------------------------------ layout
    @property
    def dtype(self) -> torch.dtype:
        return self.x.dtype

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def architecture(self) -> str:
        return f"{self.n_in}-{self.n_hidden}-{self.n_classes}"

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split ``theta (..., dim)`` into ``W1 (..., h, d)``, ``b1 (..., h)``, ``W2``, ``b2``."""
        if theta.shape[-1] != self.dim:
            raise ValueError(f"theta has {theta.shape[-1]} coordinates, the problem has {self.dim}")
        lead = theta.shape[:-1]
        return {g.name: theta[..., g.start : g.stop].reshape(*lead, *g.shape) for g in self.groups}

    def init(self, generator: torch.Generator, n: int | None = None) -> torch.Tensor:
        """Draw initial iterates ``x0 ~ D``: ``(dim,)`` or ``(n, dim)``.

        Weights are ``N(0, init_std^2)``, biases are zero (book/design.md, D8).
        """
        shape = (self.dim,) if n is None else (n, self.dim)
        theta = torch.randn(shape, generator=generator, dtype=self.dtype) * self.init_std
        for g in self.groups:
            if g.name.startswith("b"):
                theta[..., g.start : g.stop] = 0.0
        return theta.to(self.device)

    def sample_indices(self, generator: torch.Generator, n: int | None = None,
                       batch_size: int | None = None) -> torch.Tensor:
        """Minibatch indices drawn uniformly with replacement: ``(B,)`` or ``(n, B)``."""
        b = self.batch_size if batch_size is None else batch_size
        shape = (b,) if n is None else (n, b)
        return torch.randint(0, self.x.shape[0], shape, generator=generator).to(self.device)

    # -------------------------------------------------------------- evaluation
    def _forward_backward(self, theta, xb, yb, need_grad):
        """Mean cross-entropy over the last-but-one axis of ``xb``, and its gradient.

        ``theta (N, dim)``, ``xb (N, B, d)`` or ``(B, d)`` shared, ``yb (N, B)`` or ``(B,)``.
        Hand-written backprop: batched over N without autograd's graph overhead.
        """
        p = self.unflatten(theta)
        W1, b1, W2, b2 = p["W1"], p["b1"], p["W2"], p["b2"]
        z1 = torch.matmul(xb, W1.transpose(-1, -2)) + b1.unsqueeze(-2)  # (N, B, h)
        a1 = torch.relu(z1)
        z2 = torch.matmul(a1, W2.transpose(-1, -2)) + b2.unsqueeze(-2)  # (N, B, c)
        logp = _log_softmax(z2)
        if yb.ndim == 1:
            yb = yb.expand(z2.shape[:-1])
        nll = -logp.gather(-1, yb.unsqueeze(-1)).squeeze(-1)  # (N, B)
        loss = nll.mean(-1)
        if not need_grad:
            return loss, None
        B = z2.shape[-2]
        dz2 = logp.exp()
        dz2.scatter_add_(-1, yb.unsqueeze(-1), -torch.ones_like(nll).unsqueeze(-1))
        dz2 = dz2 / B
        dW2 = torch.matmul(dz2.transpose(-1, -2), a1)  # (N, c, h)
        db2 = dz2.sum(-2)
        dz1 = torch.matmul(dz2, W2) * (z1 > 0)  # (N, B, h)
        if xb.ndim == 2:
            dW1 = torch.matmul(dz1.transpose(-1, -2), xb)
        else:
            dW1 = torch.matmul(dz1.transpose(-1, -2), xb)  # (N, h, d)
        db1 = dz1.sum(-2)
        lead = theta.shape[:-1]
        grad = torch.cat(
            [dW1.reshape(*lead, -1), db1, dW2.reshape(*lead, -1), db2], dim=-1
        )
        return loss, grad

    def _as_batch(self, theta):
        single = theta.ndim == 1
        lead = theta.shape[:-1]
        flat = theta.reshape(-1, self.dim) if not single else theta.unsqueeze(0)
        return single, lead, flat

    def minibatch_loss_and_grad(self, theta: torch.Tensor, idx: torch.Tensor):
        """Stochastic objective ``f_hat`` and its gradient on the minibatch ``idx``.

        Args:
            theta: iterates ``(dim,)`` or ``(N, dim)``.
            idx: minibatch indices, ``(B,)`` (shared) or ``(N, B)`` (one per iterate).

        Returns:
            ``(loss, grad)`` with shapes ``()``/``(N,)`` and ``(dim,)``/``(N, dim)``.
        """
        single, lead, flat = self._as_batch(theta)
        if idx.ndim == 1:
            xb, yb = self.x[idx], self.y[idx]
        else:
            if idx.shape[0] != flat.shape[0]:
                raise ValueError("idx must have one row of indices per iterate")
            xb, yb = self.x[idx], self.y[idx]
        loss, grad = self._forward_backward(flat, xb, yb, True)
        if single:
            return loss[0], grad[0]
        return loss.reshape(lead), grad.reshape(*lead, self.dim)

    def minibatch_loss(self, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Stochastic objective only (no gradient)."""
        single, lead, flat = self._as_batch(theta)
        loss, _ = self._forward_backward(flat, self.x[idx], self.y[idx], False)
        return loss[0] if single else loss.reshape(lead)

    def true_loss(self, theta: torch.Tensor, with_grad: bool = False):
        """The true objective ``f``: mean loss over the whole training set.

        Evaluated in chunks of :attr:`chunk` examples so that many iterates fit in
        memory.  Returns ``loss`` (and ``grad`` when ``with_grad``), batched as
        :meth:`minibatch_loss_and_grad`.
        """
        single, lead, flat = self._as_batch(theta)
        M = self.x.shape[0]
        total = torch.zeros(flat.shape[0], dtype=self.dtype, device=self.device)
        gtotal = torch.zeros_like(flat) if with_grad else None
        for s in range(0, M, self.chunk):
            xb, yb = self.x[s : s + self.chunk], self.y[s : s + self.chunk]
            w = xb.shape[0] / M
            loss, grad = self._forward_backward(flat, xb, yb, with_grad)
            total += w * loss
            if with_grad:
                gtotal += w * grad
        if single:
            out = (total[0], gtotal[0]) if with_grad else total[0]
        else:
            out = (
                (total.reshape(lead), gtotal.reshape(*lead, self.dim))
                if with_grad
                else total.reshape(lead)
            )
        return out

    def torch_loss(self, theta: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable loss through autograd (used by tests and by L2L's meta-gradients)."""
        p = self.unflatten(theta)
        xb = self.x if idx is None else self.x[idx]
        yb = self.y if idx is None else self.y[idx]
        z1 = torch.matmul(xb, p["W1"].transpose(-1, -2)) + p["b1"].unsqueeze(-2)
        z2 = torch.matmul(torch.relu(z1), p["W2"].transpose(-1, -2)) + p["b2"].unsqueeze(-2)
        logp = _log_softmax(z2)
        if yb.ndim < logp.ndim - 1:
            yb = yb.expand(logp.shape[:-1])
        return -logp.gather(-1, yb.unsqueeze(-1)).squeeze(-1).mean(-1)

    def __repr__(self) -> str:
        return (
            f"MLPProblem({self.name or 'unnamed'}: {self.architecture}, M={self.x.shape[0]}, "
            f"batch_size={self.batch_size}, dim={self.dim}, dtype={self.dtype})"
        )
