"""The two-layer-net objective: gradients, batching, layout."""

import pytest
import torch

from l2o.problems import GROUP_NAMES, MLPProblem


def make(M=50, d=5, h=4, c=3, B=7, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, d, generator=g, dtype=dtype)
    y = torch.randint(0, c, (M,), generator=g)
    return MLPProblem(x, y, n_hidden=h, n_classes=c, batch_size=B, init_std=0.5, chunk=16)


def test_layout_groups_cover_vector():
    p = make()
    assert [g.name for g in p.groups] == list(GROUP_NAMES)
    assert p.dim == 4 * 5 + 4 + 3 * 4 + 3
    assert p.groups[-1].stop == p.dim
    counts = torch.bincount(p.group_index)
    assert counts.tolist() == [g.size for g in p.groups]


def test_init_distribution_biases_zero():
    p = make(d=30, h=40)
    theta = p.init(torch.Generator().manual_seed(1), n=3)
    parts = p.unflatten(theta)
    assert torch.all(parts["b1"] == 0) and torch.all(parts["b2"] == 0)
    assert abs(parts["W1"].std().item() - 0.5) < 0.05


def test_gradcheck_minibatch_loss():
    p = make()
    theta = p.init(torch.Generator().manual_seed(2)).requires_grad_(True)
    idx = p.sample_indices(torch.Generator().manual_seed(3))
    assert torch.autograd.gradcheck(lambda t: p.torch_loss(t, idx), (theta,))
    loss, grad = p.minibatch_loss_and_grad(theta.detach(), idx)
    auto = torch.autograd.grad(p.torch_loss(theta, idx), theta)[0]
    torch.testing.assert_close(grad, auto, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss, p.torch_loss(theta, idx).detach())


def test_true_loss_and_gradient_match_autograd_full_batch():
    p = make()
    theta = p.init(torch.Generator().manual_seed(4)).requires_grad_(True)
    ref = p.torch_loss(theta)
    auto = torch.autograd.grad(ref, theta)[0]
    loss, grad = p.true_loss(theta.detach(), with_grad=True)  # chunked: 50 rows in chunks of 16
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, auto, rtol=1e-10, atol=1e-12)


def test_batched_equals_single():
    p = make()
    gen = torch.Generator().manual_seed(5)
    thetas = p.init(gen, n=4)
    idx = p.sample_indices(gen, n=4)
    loss_b, grad_b = p.minibatch_loss_and_grad(thetas, idx)
    true_b = p.true_loss(thetas)
    for i in range(4):
        loss_i, grad_i = p.minibatch_loss_and_grad(thetas[i], idx[i])
        torch.testing.assert_close(loss_b[i], loss_i)
        torch.testing.assert_close(grad_b[i], grad_i)
        torch.testing.assert_close(true_b[i], p.true_loss(thetas[i]))
    # a shared minibatch broadcasts over iterates
    shared, _ = p.minibatch_loss_and_grad(thetas, idx[0])
    torch.testing.assert_close(shared[2], p.minibatch_loss(thetas[2], idx[0]))


def test_initial_loss_near_log_classes():
    p = make(M=400, d=20, h=20, c=10)
    p2 = MLPProblem(p.x, p.y, 20, 10, init_std=0.01)
    loss = p2.true_loss(p2.init(torch.Generator().manual_seed(0)))
    assert abs(loss.item() - torch.log(torch.tensor(10.0)).item()) < 0.05


@pytest.mark.parametrize(
    "kwargs, msg",
    [({"n_hidden": 0}, "n_hidden"), ({"batch_size": 0}, "batch_size"), ({"init_std": -1.0}, "init_std")],
)
def test_validation(kwargs, msg):
    x, y = torch.zeros(5, 2), torch.zeros(5, dtype=torch.long)
    args = {"n_hidden": 3} | kwargs
    with pytest.raises(ValueError, match=msg):
        MLPProblem(x, y, **args)


def test_wrong_dimension_rejected():
    p = make()
    with pytest.raises(ValueError, match="coordinates"):
        p.true_loss(torch.zeros(p.dim + 1, dtype=torch.float64))
