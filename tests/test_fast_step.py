"""The fused steps of π, Predicted Step Descent and L2L against slow references.

The references below transcribe the step as the package computed it before the fused
path (commit bc08979): the input standardised, torch's ``nn.LSTM`` / ``nn.LSTMCell`` on
each group, the coordinates of all tensors concatenated.  In float64 the fused step must
agree to rounding (the algebra: folded statistics, reordered gates,
``tanh(u) = 1 − 2σ(−2u)``); with the shipped float32 policy files, a few optimizer steps
on a 48-48-10 net must agree within float32 tolerance.
"""

from pathlib import Path

import pytest
import torch
from torch import nn

from l2o import l2l, policy as policy_module
from l2o.features import FeatureConfig, literal_observation
from l2o.gps import load_policy
from l2o.l2l import L2LNet, L2LOptimizer, preprocess_gradients
from l2o.policy import (LSTMPolicy, PolicyConfig, PredictedStepDescent, fuse_lstm_gates,
                        fused_lstm_cell_)

ROOT = Path(__file__).resolve().parents[1]
PSD_FILE = ROOT / "results" / "psd" / "psd_mnist48.pt"
L2L_FILE = ROOT / "results" / "l2l" / "l2l_mnist48.pt"


# ------------------------------------------------------------------ slow references
def reference_policy_step(pol: LSTMPolicy, obs, group_index, hidden):
    """π's step as bc08979 computed it: per group, ``nn.LSTM`` on standardised inputs."""
    N, D, _ = obs.shape
    h, c = hidden
    H, G = pol.config.hidden_size, pol.config.n_groups
    mean = obs.new_empty(N, D)
    h_new, c_new = h.clone(), c.clone()
    for gid in range(G):
        sel = torch.nonzero(group_index == gid).squeeze(1)
        if sel.numel() == 0:
            continue
        k = 0 if pol.config.share_across_groups else gid
        lstm, head = pol.lstms[k], pol.heads[k]
        o = obs[:, sel].transpose(0, 1).reshape(1, -1, obs.shape[-1])     # (1, Dg·N, 3)
        z = (o - pol.obs_mean[gid]) / pol.obs_std[gid]
        if pol.config.share_across_groups:
            code = torch.zeros(*z.shape[:-1], G, dtype=z.dtype)
            code[..., gid] = 1.0
            z = torch.cat([z, code], -1)
        hx = (h[sel].reshape(1, -1, H), c[sel].reshape(1, -1, H))
        out, (h1, c1) = lstm(z, hx)
        m = head(out).squeeze(-1) * pol.output_scale[gid]
        mean[:, sel] = m.reshape(len(sel), N).T
        h_new[sel] = h1.reshape(len(sel), N, H)
        c_new[sel] = c1.reshape(len(sel), N, H)
    return mean, (h_new, c_new)


def reference_l2l_forward(net: L2LNet, grad, state):
    """L2L's step as bc08979 computed it: preprocessing, then ``nn.LSTMCell`` per layer."""
    inp = preprocess_gradients(grad, net.preprocess_p)
    hs, cs = [], []
    for i, cell in enumerate(net.cells):
        h, c = cell(inp, (state[0][i], state[1][i]))
        hs.append(h)
        cs.append(c)
        inp = h
    return net.head(inp).squeeze(-1) * net.output_scale, (torch.stack(hs), torch.stack(cs))


def make_policy(hidden=6, shared=False, seed=0, dtype=torch.float64):
    cfg = PolicyConfig(hidden_size=hidden, share_across_groups=shared)
    pol = LSTMPolicy(cfg, generator=torch.Generator().manual_seed(seed)).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    for gid in range(cfg.n_groups):
        obs = torch.randn(50, 3, generator=g, dtype=torch.float64) * (gid + 1) + gid
        pol.fit_normalization(obs, gid)
        pol.set_output_scale(gid, 0.1 * (gid + 1))
    return pol


def mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 10)).to(dtype)


def minibatch(seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 48, generator=g, dtype=dtype), torch.randint(0, 10, (64,), generator=g)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of a few rows, so that every step runs several chunks and a partial one."""
    monkeypatch.setattr(policy_module, "STEP_CHUNK_ELEMENTS", 7 * 4 * 6)


# ------------------------------------------------------------------------ the cell
def test_fused_cell_is_torchs_lstm_cell():
    g = torch.Generator().manual_seed(0)
    H, I, n = 5, 3, 11
    cell = nn.LSTMCell(I, H).double()
    inp = torch.randn(n, I, generator=g, dtype=torch.float64) * 3
    h = torch.randn(n, H, generator=g, dtype=torch.float64)
    c = torch.randn(n, H, generator=g, dtype=torch.float64) * 2
    with torch.no_grad():
        h_ref, c_ref = cell(inp, (h, c))
        weight, bias = fuse_lstm_gates(cell.weight_ih, cell.weight_hh, cell.bias_ih + cell.bias_hh)
        x = torch.cat([h, inp], 1)
        h_out, c_out = torch.empty_like(h), c.clone()
        fused_lstm_cell_(x, c_out, weight, bias, h_out, c_out,
                         torch.empty(n, 4 * H, dtype=torch.float64),
                         torch.empty(n, H, dtype=torch.float64))
    torch.testing.assert_close(h_out, h_ref, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(c_out, c_ref, rtol=1e-13, atol=1e-14)


# ------------------------------------------------------------------------------ π
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("order", ["sorted", "scattered"])
@pytest.mark.parametrize("inplace", [False, True])
def test_policy_step_equals_reference(shared, order, inplace, small_chunks):
    pol = make_policy(shared=shared)
    gi = torch.tensor([0] * 9 + [1] * 3 + [2] * 8 + [3] * 2)
    if order == "scattered":
        gi = gi[torch.randperm(gi.numel(), generator=torch.Generator().manual_seed(2))]
    N, D = 3, gi.numel()
    g = torch.Generator().manual_seed(3)
    hidden = pol.initial_hidden(N, D)
    ref_hidden = pol.initial_hidden(N, D)
    with torch.no_grad():
        for _ in range(4):
            obs = torch.randn(N, D, 3, generator=g, dtype=torch.float64)
            before = hidden[0]
            mean, hidden = pol.step(obs, gi, hidden, inplace=inplace)
            assert (hidden[0] is before) == inplace
            ref, ref_hidden = reference_policy_step(pol, obs, gi, ref_hidden)
            torch.testing.assert_close(mean, ref, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(hidden[0], ref_hidden[0], rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(hidden[1], ref_hidden[1], rtol=1e-12, atol=1e-14)


def test_step_with_autograd_runs_the_reference_path():
    """With gradients wanted, step is differentiable and equals the fused step."""
    pol = make_policy()
    gi = torch.tensor([0, 0, 1, 2, 3, 3])
    obs = torch.randn(2, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    mean, _ = pol.step(obs, gi, pol.initial_hidden(2, 6))
    assert mean.requires_grad
    with torch.no_grad():
        fused, _ = pol.step(obs, gi, pol.initial_hidden(2, 6))
    torch.testing.assert_close(mean.detach(), fused, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="no_grad"):
        pol.step(obs, gi, pol.initial_hidden(2, 6), inplace=True)


def test_fused_weights_follow_training_and_statistics():
    """The cached fused weights are rebuilt when π's weights or statistics change."""
    pol = make_policy()
    gi = torch.tensor([0, 1, 2, 3])
    obs = torch.randn(1, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    def fused_and_reference():
        with torch.no_grad():
            a, _ = pol.step(obs, gi, pol.initial_hidden(1, 4))
            b, _ = reference_policy_step(pol, obs, gi, pol.initial_hidden(1, 4))
        return a, b

    first, _ = fused_and_reference()
    opt = torch.optim.SGD(pol.parameters(), lr=0.5)
    pol.forward_sequence(obs.reshape(1, 4, 3), gi).pow(2).sum().backward()
    opt.step()
    a, b = fused_and_reference()
    assert not torch.allclose(a, first)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    pol.set_output_scale(2, 7.0)
    pol.fit_normalization(torch.randn(20, 3, dtype=torch.float64), 1, overwrite=True)
    a, b = fused_and_reference()
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    pol.load_state_dict(make_policy(seed=9).state_dict())
    a, b = fused_and_reference()
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------- Predicted Step Descent
def reference_psd(model: nn.Module, pol: LSTMPolicy, fcfg: FeatureConfig, xb, yb, steps: int):
    """PSD by hand: the literal Ψ of all coordinates, then the reference step of π."""
    params = list(model.parameters())
    gids = torch.cat([torch.full((p.numel(),), gid) for p, gid in zip(params, [0, 1, 2, 3])])
    D = gids.numel()
    hidden = pol.initial_hidden(1, D)
    xs, fs, gs = [], [], []
    for t in range(steps):
        for p in params:
            p.grad = None
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        xs.append(torch.cat([p.detach().reshape(-1) for p in params]).double().numpy())
        gs.append(torch.cat([p.grad.reshape(-1) for p in params]).double().numpy())
        fs.append(float(loss.detach()))
        obs = torch.as_tensor(literal_observation(xs, fs, gs, t, fcfg), dtype=pol._ref.dtype)
        with torch.no_grad():
            step, hidden = reference_policy_step(pol, obs[None], gids, hidden)
            start = 0
            for p in params:
                p.add_(step[0, start:start + p.numel()].reshape(p.shape).to(p.dtype))
                start += p.numel()


def run_psd(model, pol, fcfg, xb, yb, steps):
    opt = PredictedStepDescent(model.parameters(), pol, fcfg)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        return loss

    states = []
    for _ in range(steps):
        opt.step(closure)
        states.append(opt.state[next(iter(model.parameters()))]["h"].data_ptr())
    assert len(set(states)) == 1  # the memory is updated in place
    return opt


@pytest.mark.parametrize("fcfg", [FeatureConfig(), FeatureConfig(grad_scale="rms")],
                         ids=["paper_features", "rms_features"])
def test_psd_equals_reference_float64(fcfg, small_chunks):
    pol = make_policy()
    model, ref = mlp(dtype=torch.float64), mlp(dtype=torch.float64)
    xb, yb = minibatch(dtype=torch.float64)
    run_psd(model, pol, fcfg, xb, yb, 5)
    reference_psd(ref, pol, fcfg, xb, yb, 5)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-11, atol=1e-13)


@pytest.mark.skipif(not PSD_FILE.exists(), reason="no shipped policy file")
def test_psd_equals_reference_with_the_shipped_policy():
    """Five steps of the shipped float32 π on 48-48-10: the steps agree to float32."""
    pol, fcfg, _ = load_policy(PSD_FILE)
    model, ref, start = mlp(), mlp(), mlp()
    xb, yb = minibatch()
    run_psd(model, pol, fcfg, xb, yb, 5)
    reference_psd(ref, pol, fcfg, xb, yb, 5)
    for p, q, p0 in zip(model.parameters(), ref.parameters(), start.parameters()):
        moved = (q - p0).detach()
        assert moved.abs().max() > 0
        torch.testing.assert_close(p - p0, moved, rtol=1e-5, atol=1e-5 * moved.abs().max())


# ------------------------------------------------------------------------------ L2L
def test_l2l_fused_step_equals_reference(small_chunks):
    net = L2LNet(hidden_size=6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    n = 23
    h, c = net.initial_state(n)
    ref_state = net.initial_state(n)
    out = torch.empty(n, dtype=torch.float64)
    for _ in range(4):
        grad = torch.randn(n, generator=g, dtype=torch.float64) * torch.logspace(-8, 1, n,
                                                                                 dtype=torch.float64)
        grad[3] = 0.0                                   # log 0: the clamped branch
        net.step_(grad, h, c, out)
        with torch.no_grad():
            ref, ref_state = reference_l2l_forward(net, grad, ref_state)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(h, ref_state[0], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(c, ref_state[1], rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(not L2L_FILE.exists(), reason="no shipped L2L file")
def test_l2l_optimizer_equals_reference_with_the_shipped_net():
    """Five steps of the shipped float32 L2L net on 48-48-10 agree to float32."""
    net = l2l.load_l2l(L2L_FILE)
    model, ref, start = mlp(), mlp(), mlp()
    xb, yb = minibatch()
    opt = L2LOptimizer(model.parameters(), net)
    params = list(ref.parameters())
    state = net.initial_state(sum(p.numel() for p in params))
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
        for p in params:
            p.grad = None
        nn.functional.cross_entropy(ref(xb), yb).backward()
        with torch.no_grad():   # all coordinates in one batch, as bc08979 did
            delta, state = reference_l2l_forward(net, torch.cat([p.grad.reshape(-1)
                                                                 for p in params]), state)
            start_k = 0
            for p in params:
                p.add_(delta[start_k:start_k + p.numel()].view_as(p))
                start_k += p.numel()
    for p, q, p0 in zip(model.parameters(), ref.parameters(), start.parameters()):
        moved = (q - p0).detach()
        torch.testing.assert_close(p - p0, moved, rtol=1e-5, atol=1e-5 * moved.abs().max())
