"""The coordinatewise LSTM policy π and the Predicted Step Descent optimizer."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from l2o.features import FeatureConfig, ObservationTracker, StateTracker
from l2o.policy import ROLES, LSTMPolicy, PolicyConfig, PredictedStepDescent
from l2o.problems import GROUP_NAMES, GROUP_ROLES, MLPProblem


def make_policy(hidden=5, shared=False, seed=0, fitted=True):
    """A float64 policy with non-trivial statistics and a different scale per group."""
    cfg = PolicyConfig(hidden_size=hidden, share_across_groups=shared)
    pol = LSTMPolicy(cfg, generator=torch.Generator().manual_seed(seed)).double()
    if fitted:
        g = torch.Generator().manual_seed(seed + 1)
        for gid in range(cfg.n_groups):
            obs = torch.randn(50, 3, generator=g, dtype=torch.float64) * (gid + 1) + gid
            pol.fit_normalization(obs, gid)
            pol.set_output_scale(gid, 0.1 * (gid + 1))
    return pol


# ---------------------------------------------------------------------- config
def test_config_defaults_and_validation():
    cfg = PolicyConfig()
    assert cfg.hidden_size == 128 and cfg.n_inputs == 3 and not cfg.share_across_groups
    assert cfg.groups == ROLES == tuple(GROUP_ROLES[g] for g in GROUP_NAMES)
    assert ROLES == ("hidden_weight", "hidden_bias", "output_weight", "output_bias")
    for bad in (dict(hidden_size=0), dict(n_inputs=0), dict(groups=()),
                dict(groups=("a", "a")), dict(output_scale=0.0), dict(std_floor=-1.0),
                dict(output_scale=float("nan"))):
        with pytest.raises(ValueError):
            PolicyConfig(**bad)
    pol = LSTMPolicy(cfg)
    assert len(pol.lstms) == 4 and pol.lstms[0].hidden_size == 128
    assert pol.group_id("output_bias") == 3 and pol.group_id(2) == 2
    with pytest.raises(ValueError):
        pol.group_id("conv_weight")
    with pytest.raises(ValueError):
        pol.group_id(4)


def test_generator_makes_initialisation_reproducible():
    a = LSTMPolicy(PolicyConfig(hidden_size=4), generator=torch.Generator().manual_seed(3))
    b = LSTMPolicy(PolicyConfig(hidden_size=4), generator=torch.Generator().manual_seed(3))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
        assert pa.abs().max() <= 0.5  # U(−1/√4, 1/√4)


# ------------------------------------------------------------- the two entry points
@pytest.mark.parametrize("shared", [False, True])
def test_rollout_step_by_step_equals_forward_sequence(shared):
    pol = make_policy(shared=shared)
    T, N = 9, 3
    group_index = torch.tensor([0, 0, 1, 2, 2, 2, 3, 0, 1])  # unsorted on purpose
    D = group_index.numel()
    obs = torch.randn(T, N, D, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    hidden = pol.initial_hidden(N, D)
    assert hidden[0].shape == (D, N, 5) and torch.all(hidden[0] == 0)
    steps = []
    with torch.no_grad():
        for t in range(T):
            mean, hidden = pol.step(obs[t], group_index, hidden)
            steps.append(mean)
        rolled = torch.stack(steps)                                        # (T, N, D)
        # the same coordinates as N·D sequences, with per-sequence group ids
        seq = pol.forward_sequence(obs.reshape(T, N * D, 3), group_index.repeat(N))
        torch.testing.assert_close(seq.reshape(T, N, D), rolled, rtol=0, atol=1e-13)
        # and group by group with a single id
        for gid in range(4):
            cols = (group_index == gid).nonzero().squeeze(1)
            one = pol.forward_sequence(obs[:, :, cols].reshape(T, -1, 3), ROLES[gid])
            torch.testing.assert_close(one.reshape(T, N, -1), rolled[:, :, cols],
                                       rtol=0, atol=1e-13)
        # sorted group index (contiguous blocks, the MLPProblem layout) gives the same
        order = torch.argsort(group_index, stable=True)
        hidden = pol.initial_hidden(N, D)
        for t in range(T):
            mean, hidden = pol.step(obs[t][:, order], group_index[order], hidden)
        torch.testing.assert_close(mean, rolled[-1][:, order], rtol=0, atol=1e-13)


def test_forward_sequence_carries_hidden_state():
    pol = make_policy()
    obs = torch.randn(10, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    full = pol.forward_sequence(obs, 2)
    first, hid = pol.forward_sequence(obs[:4], 2, return_hidden=True)
    second = pol.forward_sequence(obs[4:], 2, hidden=hid)
    torch.testing.assert_close(torch.cat([first, second]), full, rtol=0, atol=1e-13)


def test_step_is_deterministic_and_scaled_per_group():
    pol = make_policy()
    obs = torch.randn(2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    gi = torch.tensor([0, 1, 2, 3])
    a, _ = pol.step(obs, gi, pol.initial_hidden(2, 4))
    b, _ = pol.step(obs, gi, pol.initial_hidden(2, 4))
    assert torch.equal(a, b)
    # inputs are cast to the module's precision
    c, _ = pol.step(obs.float(), gi, pol.initial_hidden(2, 4))
    assert c.dtype == torch.float64
    with torch.no_grad():
        pol.output_scale[1] *= 2.0
    c, _ = pol.step(obs, gi, pol.initial_hidden(2, 4))
    torch.testing.assert_close(c[:, 1], 2 * a[:, 1], rtol=1e-15, atol=0)
    torch.testing.assert_close(c[:, [0, 2, 3]], a[:, [0, 2, 3]], rtol=0, atol=0)


@pytest.mark.parametrize("shared", [False, True])
def test_permutation_equivariance_within_groups(shared):
    """Permuting the coordinates of a group permutes π's steps the same way."""
    pol = make_policy(shared=shared)
    gi = torch.tensor([0] * 6 + [1] * 3 + [2] * 4 + [3] * 2)
    perm = torch.cat([torch.randperm(6, generator=torch.Generator().manual_seed(7)),
                      torch.tensor([8, 6, 7]), torch.tensor([12, 9, 11, 10]),
                      torch.tensor([14, 13])])
    assert torch.equal(gi[perm], gi)
    obs = torch.randn(6, 2, 15, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    ha, hb = pol.initial_hidden(2, 15), pol.initial_hidden(2, 15)
    with torch.no_grad():
        for t in range(6):
            a, ha = pol.step(obs[t], gi, ha)
            b, hb = pol.step(obs[t][:, perm], gi, hb)
            torch.testing.assert_close(a[:, perm], b, rtol=0, atol=1e-14)
    torch.testing.assert_close(ha[0][perm], hb[0], rtol=0, atol=1e-14)


def test_gradcheck_forward_sequence_inputs_and_parameters():
    pol = make_policy(hidden=4)
    names = [n for n, _ in pol.named_parameters() if n.startswith(("lstms.1.", "heads.1."))]
    params = tuple(dict(pol.named_parameters())[n].detach().clone().requires_grad_(True)
                   for n in names)
    obs = torch.randn(4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9),
                      requires_grad=True)

    def f(o, *ps):
        return functional_call(pol, dict(zip(names, ps)), (o, 1), strict=False)

    # every parameter really enters (a parameter functional_call failed to swap in
    # would pass gradcheck with a zero gradient)
    grads = torch.autograd.grad(f(obs, *params).sum(), params)
    assert all(g.abs().sum() > 0 for g in grads)
    assert torch.autograd.gradcheck(f, (obs, *params))


def test_step_and_sequence_are_differentiable_alike():
    pol = make_policy(hidden=4)
    obs = torch.randn(3, 1, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    gi = torch.tensor([0, 1, 2, 3])
    h = pol.initial_hidden(1, 4)
    loss = 0.0
    for t in range(3):
        m, h = pol.step(obs[t], gi, h)
        loss = loss + m.pow(2).sum()
    g_step = torch.autograd.grad(loss, list(pol.parameters()))
    seq = pol.forward_sequence(obs.reshape(3, 4, 3), gi)
    g_seq = torch.autograd.grad(seq.pow(2).sum(), list(pol.parameters()))
    for a, b in zip(g_step, g_seq):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------ frozen statistics
def test_normalization_is_fitted_once_and_saved():
    pol = make_policy(fitted=False)
    obs = torch.tensor([[1.0, 2.0, 5.0], [3.0, 2.0, 7.0], [float("nan"), 0.0, 0.0]],
                       dtype=torch.float64)
    pol.fit_normalization(obs, "hidden_bias")
    torch.testing.assert_close(pol.obs_mean[1], torch.tensor([2.0, 2.0, 6.0], dtype=torch.float64))
    # std floor 1e-3 on the constant column; the non-finite row is ignored
    torch.testing.assert_close(pol.obs_std[1], torch.tensor([1.0, 1e-3, 1.0], dtype=torch.float64))
    assert pol.normalization_fitted.tolist() == [False, True, False, False]
    with pytest.raises(RuntimeError, match="frozen"):
        pol.fit_normalization(obs, 1)
    pol.fit_normalization(obs * 2, 1, overwrite=True)
    pol.fit_normalization_groups([obs] * 4, overwrite=True)
    assert bool(pol.normalization_fitted.all())
    with pytest.raises(ValueError):
        pol.set_output_scale(0, 0.0)
    rms = pol.fit_output_scale(torch.tensor([3.0, -4.0]), "output_weight")
    assert rms == pytest.approx(12.5 ** 0.5) and float(pol.output_scale[2]) == pytest.approx(rms)
    # buffers travel with the state dict; the statistics get no gradient
    other = LSTMPolicy(pol.config).double()
    other.load_state_dict(pol.state_dict())
    o = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(other.forward_sequence(o, 2), pol.forward_sequence(o, 2))
    assert all(not b.requires_grad for b in pol.buffers())
    assert len(list(pol.parameters())) == 4 * 6


def test_group_parameters_and_sharing():
    sep = LSTMPolicy(PolicyConfig(hidden_size=3))
    assert {id(p) for p in sep.group_parameters(0)}.isdisjoint(
        {id(p) for p in sep.group_parameters(1)})
    sh = LSTMPolicy(PolicyConfig(hidden_size=3, share_across_groups=True))
    assert len(sh.lstms) == 1 and sh.lstms[0].input_size == 3 + 4
    assert [id(p) for p in sh.group_parameters(0)] == [id(p) for p in sh.group_parameters(3)]


def test_step_validates_shapes():
    pol = make_policy()
    h = pol.initial_hidden(2, 3)
    with pytest.raises(ValueError):
        pol.step(torch.zeros(2, 3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.long), h)
    with pytest.raises(ValueError):
        pol.step(torch.zeros(2, 3, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.long), h)
    with pytest.raises(ValueError):
        pol.step(torch.zeros(2, 3, 3, dtype=torch.float64), torch.tensor([0, 1, 7]), h)
    with pytest.raises(ValueError):
        pol.step(torch.zeros(2, 3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.long),
                 pol.initial_hidden(3, 2))


def test_rollout_on_an_mlp_problem():
    """π driven by the tracker's Ψ on the objective's own group layout (as GPS does)."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(40, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    prob = MLPProblem(x, y, n_hidden=3, n_classes=3, batch_size=8)
    pol = make_policy()
    N = 2
    theta = prob.init(g, N)
    tr = StateTracker(N, prob.dim, FeatureConfig())
    hidden = pol.initial_hidden(N, prob.dim)
    for t in range(6):
        f, grad = prob.minibatch_loss_and_grad(theta, prob.sample_indices(g, N))
        tr.update(theta, f, grad)
        with torch.no_grad():
            step, hidden = pol.step(tr.observation(), prob.group_index, hidden)
        assert step.shape == (N, prob.dim) and torch.isfinite(step).all()
        theta = theta + step


# ----------------------------------------------------------- Predicted Step Descent
def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(),
                         nn.Linear(4, 3)).double()


def data(seed=1):
    g = torch.Generator().manual_seed(seed)
    xb = torch.randn(16, 5, generator=g, dtype=torch.float64)
    return xb, torch.randint(0, 3, (16,), generator=g)


def closure_for(model, opt, xb, yb):
    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        return loss
    return closure


def test_psd_assigns_roles_and_steps_any_module():
    model = mlp()
    opt = PredictedStepDescent(model.parameters(), make_policy())
    roles = [r for _, r in opt.roles()]
    assert roles == ["hidden_weight", "hidden_bias", "hidden_weight", "hidden_bias",
                     "output_weight", "output_bias"]
    xb, yb = data()
    before = [p.detach().clone() for p in model.parameters()]
    closure = closure_for(model, opt, xb, yb)
    for _ in range(3):
        loss = opt.step(closure)
        assert torch.isfinite(loss)
    for p, b in zip(model.parameters(), before):
        assert not torch.equal(p, b)
        st = opt.state[p]
        assert st["step"] == 3 and st["h"].shape == (p.numel(), 1, 5)
    opt.reset_state()
    assert len(opt.state) == 0


@pytest.mark.parametrize("fcfg", [FeatureConfig(), FeatureConfig(grad_scale="rms")],
                         ids=["paper_features", "rms_features"])
def test_psd_equals_the_policy_run_by_hand(fcfg):
    """Three steps of the optimizer = trackers + policy.step on the roles' group ids."""
    pol = make_policy()
    model, ref = mlp(), mlp()
    xb, yb = data()
    opt = PredictedStepDescent(model.parameters(), pol, fcfg)
    closure = closure_for(model, opt, xb, yb)
    params = list(ref.parameters())
    gids = torch.cat([torch.full((p.numel(),), gid) for p, gid in zip(params, [0, 1, 0, 1, 2, 3])])
    D = gids.numel()
    tracker = ObservationTracker(1, D, fcfg)
    hidden = pol.initial_hidden(1, D)
    for _ in range(3):
        opt.step(closure)
        for p in params:
            p.grad = None
        loss = nn.functional.cross_entropy(ref(xb), yb)
        loss.backward()
        flat = torch.cat([p.detach().reshape(-1) for p in params])[None]
        grad = torch.cat([p.grad.reshape(-1) for p in params])[None]
        tracker.update(flat, loss.detach().reshape(1), grad)
        with torch.no_grad():
            step, hidden = pol.step(tracker.observation(), gids, hidden)
            start = 0
            for p in params:
                p.add_(step[0, start:start + p.numel()].reshape(p.shape))
                start += p.numel()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_psd_respects_roles_and_explicit_roles():
    pol = make_policy()
    with torch.no_grad():
        pol.output_scale[3] = 0.0  # the output-bias head does nothing
    model = mlp()
    opt = PredictedStepDescent(model.parameters(), pol)
    xb, yb = data()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step(closure_for(model, opt, xb, yb))
    changed = [not torch.equal(p, b) for p, b in zip(model.parameters(), before)]
    assert changed == [True, True, True, True, True, False]
    # an explicit role for a param group overrides the automatic one
    model = mlp()
    last_bias = model[4].bias
    groups = [{"params": [p for p in model.parameters() if p is not last_bias]},
              {"params": [last_bias], "role": "hidden_bias"}]
    opt = PredictedStepDescent(groups, pol)
    roles = [r for _, r in opt.roles()]
    # among the automatic ones the head has no bias now: model[2].bias stays a hidden
    # bias (issue 15: it used to become the output bias)
    assert roles == ["hidden_weight", "hidden_bias", "hidden_weight", "hidden_bias",
                     "output_weight", "hidden_bias"]
    before = last_bias.detach().clone()
    opt.step(closure_for(model, opt, xb, yb))
    assert not torch.equal(last_bias, before)
    with pytest.raises(ValueError, match="role"):
        PredictedStepDescent([{"params": [last_bias], "role": "conv_kernel"}], pol)


def test_psd_validates_inputs():
    model = mlp()
    pol = make_policy()
    opt = PredictedStepDescent(model.parameters(), pol)
    with pytest.raises(ValueError, match="Predicted Step Descent needs the loss"):
        opt.step()
    with pytest.raises(TypeError):
        opt.step(closure=3.0)
    with pytest.raises(ValueError, match="scalar"):
        opt.step(lambda: torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="None"):
        opt.step(lambda: None)
    with pytest.raises(TypeError):
        PredictedStepDescent(model.parameters(), nn.LSTM(3, 4))
    with pytest.raises(ValueError):
        PredictedStepDescent(model.parameters(), LSTMPolicy(PolicyConfig(n_inputs=2)))
    # parameters without a gradient are left alone
    frozen = mlp()
    frozen[0].weight.requires_grad_(False)
    opt = PredictedStepDescent([p for p in frozen.parameters()], pol)
    w = frozen[0].weight.detach().clone()
    xb, yb = data()
    opt.step(closure_for(frozen, opt, xb, yb))
    assert torch.equal(frozen[0].weight, w)
