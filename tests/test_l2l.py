"""The L2L baseline: preprocessing, meta-gradient, torch.optim wrapper, training, files."""

import math

import pytest
import torch
from torch import nn

from l2o import l2l
from l2o.l2l import L2LCheckpointError, L2LConfig, L2LNet, L2LOptimizer
from l2o.problems import MLPProblem


def toy_problem(seed=0, M=128, dtype=torch.float64):
    """A fixed 4-4-3 classification problem: Gaussian inputs, labels of a linear teacher."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, 4, generator=g, dtype=dtype)
    teacher = torch.randn(4, 3, generator=g, dtype=dtype)
    y = (x @ teacher).argmax(1)
    return MLPProblem(x, y, n_hidden=4, n_classes=3, batch_size=16, init_std=0.1)


def toy_config(**kw):
    base = dict(horizon=20, unroll=5, batch_size=16, lr=1e-2, eval_every=5,
                eval_seeds=(30000, 30001, 30002, 30003))
    base.update(kw)
    return L2LConfig(**base)


# ------------------------------------------------------------------ preprocessing
def paper_preprocess(g: float, p: float) -> tuple[float, float]:
    """Literal transcription of the two branches of Andrychowicz et al., appendix A."""
    if abs(g) >= math.exp(-p):
        return math.log(abs(g)) / p, math.copysign(1.0, g)
    return -1.0, math.exp(p) * g


@pytest.mark.parametrize(
    "g, p, expected",
    [
        (1.0, 10.0, (0.0, 1.0)),                               # |g| >= e^-p: (log|g|/p, sgn g)
        (-math.exp(-5.0), 10.0, (-0.5, -1.0)),
        (3.0, 10.0, (math.log(3.0) / 10.0, 1.0)),
        (1e-6, 10.0, (-1.0, math.exp(10.0) * 1e-6)),          # |g| < e^-p: (-1, e^p g)
        (-2e-5, 10.0, (-1.0, -2e-5 * math.exp(10.0))),
        (0.0, 10.0, (-1.0, 0.0)),
        (1e-3, 5.0, (-1.0, math.exp(5.0) * 1e-3)),            # the code's k = 5
        (0.5, 5.0, (math.log(0.5) / 5.0, 1.0)),
    ],
)
def test_preprocess_hand_picked(g, p, expected):
    out = l2l.preprocess_gradients(torch.tensor([g], dtype=torch.float64), p)
    assert out.shape == (1, 2)
    torch.testing.assert_close(out[0], torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)


def test_preprocess_matches_paper_formula_over_magnitudes():
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(500, generator=gen, dtype=torch.float64) * 10.0 ** torch.randint(
        -9, 3, (500,), generator=gen)
    for p in (10.0, 5.0):
        out = l2l.preprocess_gradients(g, p)
        ref = torch.tensor([paper_preprocess(float(v), p) for v in g], dtype=torch.float64)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    # both branches were exercised
    assert (g.abs() < math.exp(-10)).any() and (g.abs() >= math.exp(-10)).any()


# ------------------------------------------------------------------------ config
def test_config_defaults_and_validation():
    c = L2LConfig()
    assert (c.hidden_size, c.num_layers, c.preprocess_p, c.output_scale) == (20, 2, 10.0, 0.01)
    assert (c.horizon, c.unroll, c.batch_size, c.lr) == (400, 20, 64, 1e-3)
    with pytest.raises(ValueError, match="Invalid lr"):
        L2LConfig(lr=-1.0)
    with pytest.raises(ValueError, match="Invalid unroll"):
        L2LConfig(unroll=0)
    with pytest.raises(ValueError, match="Invalid eval_seeds"):
        L2LConfig(eval_seeds=())
    assert L2LConfig(eval_seeds=[1, 2]).eval_seeds == (1, 2)
    assert L2LConfig.from_dict(c.to_dict()) == c


def test_net_is_coordinatewise_and_shared():
    net = L2LNet(generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = torch.randn(7, dtype=torch.float64)
    delta, (h, c) = net(g, net.initial_state(7))
    assert delta.shape == (7,) and h.shape == (2, 7, 20) and c.shape == (2, 7, 20)
    # permuting coordinates permutes the output (one net shared by all coordinates)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    delta_p, _ = net(g[perm], net.initial_state(7))
    torch.testing.assert_close(delta_p, delta[perm])
    # the weights depend only on the generator, not on the global RNG
    torch.manual_seed(123)
    a = L2LNet(generator=torch.Generator().manual_seed(5)).state_dict()
    torch.manual_seed(456)
    b = L2LNet(generator=torch.Generator().manual_seed(5)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ meta-gradient
def test_meta_gradient_flows_through_iterates_with_constant_gradients():
    """Exact check of the head-bias meta-gradient.

    The LSTM sees only (constant) optimizee gradients, so its hidden states do not depend
    on the head bias b; each step adds s*b to every coordinate (s = output_scale).  Hence
    x_t = x_0 + s*t*b + (terms free of b), and
    dL/db = s * sum_{t=1}^U t * mean_n sum_j d_j f_hat(x_t; idx[t-1]).
    """
    p = toy_problem()
    net = L2LNet(generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    n, U = 2, 4
    x0 = p.init(gen, n)
    first = p.sample_indices(gen, n)
    _, g0 = p.minibatch_loss_and_grad(x0, first)
    idx = torch.stack([p.sample_indices(gen, n) for _ in range(U)])
    loss, x, state = l2l.unroll_meta_loss(net, p, x0, net.initial_state(n * p.dim),
                                          torch.cat([first[None], idx]))
    loss.backward()
    # forward again without autograd to get the iterates and their minibatch gradients
    with torch.no_grad():
        xs, gt, st = x0, g0, net.initial_state(n * p.dim)
        expected = torch.zeros((), dtype=torch.float64)
        for t in range(U):
            d, st = net(gt.reshape(-1), st)
            xs = xs + d.view(n, p.dim)
            _, gt = p.minibatch_loss_and_grad(xs, idx[t])
            expected += (t + 1) * gt.sum(1).mean()
        expected *= net.output_scale
    torch.testing.assert_close(net.head.bias.grad[0], expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(x.detach(), xs)
    assert all(prm.grad is not None and prm.grad.abs().sum() > 0 for prm in net.parameters())


# -------------------------------------------------------------- torch.optim API
def test_optimizer_steps_arbitrary_module():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3), nn.ReLU(), nn.Linear(3, 2))
    before = [prm.detach().clone() for prm in model.parameters()]
    net = L2LNet(generator=torch.Generator().manual_seed(0))
    opt = L2LOptimizer(model.parameters(), net)
    xb, yb = torch.randn(8, 5), torch.randint(0, 2, (8,))

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert torch.is_tensor(loss)
    for prm, old in zip(model.parameters(), before):
        assert not torch.equal(prm.detach(), old)
        st = opt.state[prm]
        assert st["step"] == 1 and st["h"].shape == (2, prm.numel(), 20)
    opt.step(closure)
    assert all(opt.state[prm]["step"] == 2 for prm in model.parameters())
    opt.reset_state()
    assert len(opt.state) == 0


def test_optimizer_matches_batched_rollout():
    """The torch.optim wrapper on an nn.Module reproduces the batched rollout exactly."""
    p = toy_problem()
    net = L2LNet(generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x0, idx = l2l.seeded_streams(p, [7], horizon=6)
    ref = l2l.rollout(net, p, x0, idx)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    parts = p.unflatten(x0[0])
    with torch.no_grad():
        for prm, key in zip(model.parameters(), ("W1", "b1", "W2", "b2")):
            prm.copy_(parts[key])
    opt = L2LOptimizer(model.parameters(), net)
    for t in range(idx.shape[0]):
        opt.zero_grad()
        b = idx[t, 0]
        loss = nn.functional.cross_entropy(model(p.x[b]), p.y[b])
        loss.backward()
        torch.testing.assert_close(loss.detach(), ref["minibatch_loss"][0, t])
        opt.step()
    flat = torch.cat([prm.detach().reshape(-1) for prm in model.parameters()])
    torch.testing.assert_close(flat, ref["x"][0], rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ meta-training
def test_meta_training_reduces_meta_loss():
    p = toy_problem()
    res = l2l.meta_train(p, toy_config(), seed=0, epochs=30, progress=False)
    ev = res["history"]["eval"]
    untrained = ev[0]["meta_loss"]
    assert ev[0]["epoch"] == 0 and len(res["history"]["train_meta_loss"]) == 30
    assert res["best"]["epoch"] > 0
    assert res["best"]["meta_loss"] < 0.75 * untrained
    # the returned net is the best one: re-evaluating it gives the recorded value
    again = l2l.evaluate(res["net"], p, toy_config())["meta_loss"]
    assert again == pytest.approx(res["best"]["meta_loss"], rel=1e-12)


def test_resume_equals_uninterrupted(tmp_path):
    p = toy_problem()
    cfg = toy_config(eval_every=4, trajectories=2)
    full = l2l.meta_train(p, cfg, seed=1, epochs=10, checkpoint=tmp_path / "a.pt",
                          progress=False)

    class Interrupt(Exception):
        pass

    def crash(info):
        if info["epoch"] == 6:  # after the checkpoint of epoch 4: epochs 5-6 are lost
            raise Interrupt

    ck = tmp_path / "b.pt"
    with pytest.raises(Interrupt):
        l2l.meta_train(p, cfg, seed=1, epochs=10, checkpoint=ck, callback=crash, progress=False)
    assert torch.load(ck, weights_only=True)["epoch"] == 4
    resumed = l2l.meta_train(p, cfg, seed=1, epochs=10, checkpoint=ck, resume=True,
                             progress=False)
    for key in ("net", "last_net"):
        a, b = full[key].state_dict(), resumed[key].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), key
    assert resumed["history"] == full["history"]
    assert resumed["best"] == full["best"]
    # and the resumed run refuses a different configuration or seed
    with pytest.raises(L2LCheckpointError, match=r"lr: file has 0.01, expected 0.02"):
        l2l.meta_train(p, toy_config(eval_every=4, trajectories=2, lr=2e-2), seed=1,
                       epochs=12, checkpoint=ck, resume=True, progress=False)
    with pytest.raises(L2LCheckpointError, match="seed 1, expected 2"):
        l2l.meta_train(p, cfg, seed=2, epochs=12, checkpoint=ck, resume=True, progress=False)


# ------------------------------------------------------------------------- files
def test_save_load_roundtrip_and_checkpoint(tmp_path):
    p = toy_problem()
    res = l2l.meta_train(p, toy_config(), seed=0, epochs=5, checkpoint=tmp_path / "ck.pt",
                         progress=False)
    path = l2l.save_l2l(res["net"], tmp_path / "net.pt", toy_config(), {"note": "test"})
    a = l2l.load_l2l(path, config=L2LConfig(), dtype=torch.float64)
    b = l2l.load_l2l(tmp_path / "ck.pt", dtype=torch.float64)  # best weights of the checkpoint
    g = torch.randn(11, dtype=torch.float64)
    for net in (a, b):
        d, _ = net(g, net.initial_state(11))
        ref, _ = res["net"](g, res["net"].initial_state(11))
        torch.testing.assert_close(d, ref.detach(), rtol=1e-6, atol=1e-9)  # stored as float32
    opt = L2LOptimizer([nn.Parameter(torch.zeros(3))], path)
    assert isinstance(opt.net, L2LNet)


def test_corrupt_file_gives_clear_error(tmp_path):
    path = l2l.save_l2l(L2LNet(), tmp_path / "net.pt")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    for bad in (truncated, garbage):
        with pytest.raises(L2LCheckpointError, match="corrupt or truncated"):
            l2l.load_l2l(bad)
    with pytest.raises(L2LCheckpointError, match="no such file"):
        l2l.load_l2l(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(L2LCheckpointError, match="without a 'format' tag"):
        l2l.load_l2l(other)


def test_config_mismatch_gives_clear_error(tmp_path):
    small = L2LNet(hidden_size=8, preprocess_p=5.0)
    path = l2l.save_l2l(small, tmp_path / "small.pt")
    with pytest.raises(L2LCheckpointError) as err:
        l2l.load_l2l(path, config=L2LConfig())
    msg = str(err.value)
    assert "hidden_size: file has 8, expected 20" in msg
    assert "preprocess_p: file has 5.0, expected 10.0" in msg
    assert l2l.load_l2l(path).hidden_size == 8  # without an expected config it loads
    # weights that do not fit the stored config
    obj = torch.load(path, weights_only=True)
    obj["config"]["hidden_size"] = 20
    torch.save(obj, tmp_path / "inconsistent.pt")
    with pytest.raises(L2LCheckpointError, match=r"weights do not match.*expected \(80, 2\)"):
        l2l.load_l2l(tmp_path / "inconsistent.pt")
