"""State features Φ and observation features Ψ (paper section 3.6) against a literal
transcription of the formulas, hand-computed values of the clamped look-backs, and
properties (zero rule, permutation equivariance, incremental = from scratch)."""

import numpy as np
import pytest
import torch

from l2o.features import (
    FeatureConfig,
    ObservationTracker,
    StateTracker,
    literal_observation,
    literal_state,
)

TIMES = (0, 1, 2, 4, 5, 6, 9, 10, 11, 50, 131)

CONFIGS = {
    "default": FeatureConfig(),
    "grad26": FeatureConfig(n_grad_terms=26),
    "first_raw": FeatureConfig(objective_form="first_raw"),
    "grad26_first_raw": FeatureConfig(n_grad_terms=26, objective_form="first_raw"),
    "small": FeatureConfig(history=3, stride=2, window=2, n_grad_terms=4),
    "rms": FeatureConfig(grad_scale="rms"),
    "rms_small": FeatureConfig(history=3, stride=2, window=2, n_grad_terms=4,
                               grad_scale="rms", rms_decay=0.9),
}


def histories(T, N=2, D=5, seed=0):
    """Random histories: iterates, positive objective values, gradients; ``(T, N, ...)``."""
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(T, N, D)).cumsum(0) * 0.1
    fs = rng.uniform(0.5, 2.5, size=(T, N))
    gs = rng.normal(size=(T, N, D)) * rng.choice([0.01, 1.0, 10.0], size=(1, 1, D))
    return xs, fs, gs


def feed(tracker, xs, fs, gs, t):
    tracker.update(torch.as_tensor(xs[t]), torch.as_tensor(fs[t]), torch.as_tensor(gs[t]))


def lit(xs, fs, gs, n, t, cfg, kind="state"):
    fn = literal_state if kind == "state" else literal_observation
    return fn(list(xs[:, n]), list(fs[:, n]), list(gs[:, n]), t, cfg)


def bar(v, k, W=3):
    """An independent one-line average: mean of v[max(k−W+1, 0) .. k]."""
    return np.mean(v[max(k - W + 1, 0) : k + 1], axis=0)


# ---------------------------------------------------------------------- config
def test_config_defaults_layout_and_validation():
    cfg = FeatureConfig()
    assert (cfg.history, cfg.stride, cfg.window, cfg.n_grad_terms) == (25, 5, 3, 25)
    assert (cfg.grad_offset, cfg.iterate_offset) == (1.0, 0.1)
    assert cfg.objective_form == "both_averaged"
    assert cfg.state_dim == 76 and FeatureConfig(n_grad_terms=26).state_dim == 77
    lay = cfg.layout
    assert [(s.start, s.stop) for s in lay.values()] == [(0, 1), (1, 26), (26, 51), (51, 76)]
    assert cfg.xbar_lookback == 130 and cfg.gbar_lookback == 125
    for bad in (dict(history=0), dict(stride=0), dict(window=-1), dict(n_grad_terms=0),
                dict(history=2.5), dict(objective_form="raw"), dict(grad_offset=0.0),
                dict(iterate_offset=-0.1), dict(grad_scale="adam"), dict(rms_decay=1.0),
                dict(rms_decay=-0.1), dict(rms_eps=0.0)):
        with pytest.raises(ValueError):
            FeatureConfig(**bad)
    with pytest.raises(Exception):
        cfg.stride = 3  # frozen


# ------------------------------------------------------------- against the literal
@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_and_observation_equal_literal(name):
    cfg = CONFIGS[name]
    xs, fs, gs = histories(max(TIMES) + 1, seed=1)
    N, D = xs.shape[1:]
    tr = StateTracker(N, D, cfg)
    for t in range(max(TIMES) + 1):
        feed(tr, xs, fs, gs, t)
        if t not in TIMES:
            continue
        s, o = tr.state().numpy(), tr.observation().numpy()
        assert s.shape == (N, D, cfg.state_dim) and o.shape == (N, D, 3)
        for n in range(N):
            np.testing.assert_allclose(s[n], lit(xs, fs, gs, n, t, cfg), rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(o[n], lit(xs, fs, gs, n, t, cfg, "obs"),
                                       rtol=1e-12, atol=1e-13)


def test_incremental_equals_from_scratch_every_step():
    """The ring buffers wrap around (t > 130) without losing anything."""
    cfg = FeatureConfig()
    T = 2 * 131 + 7
    xs, fs, gs = histories(T, N=2, D=3, seed=2)
    tr = StateTracker(2, 3, cfg)
    for t in range(T):
        feed(tr, xs, fs, gs, t)
        if t <= 140 or t % 13 == 0 or t == T - 1:
            s = tr.state().numpy()
            for n in range(2):
                np.testing.assert_allclose(s[n], lit(xs, fs, gs, n, t, cfg),
                                           rtol=1e-12, atol=1e-13)


def test_rms_scale_by_hand():
    """``grad_scale="rms"``: one coordinate, two steps, worked out on paper.

    g(0) = 3, g(1) = −1, β = 0.5, ε = 1e-8:  v(0) = 4.5, r(0) = sqrt(4.5/0.5) = 3;
    v(1) = 2.25 + 0.5 = 2.75, r(1) = sqrt(2.75/0.75).  Ψ_2 = g/r and G_0 = ḡ(t)/r(t).
    """
    cfg = FeatureConfig(grad_scale="rms", rms_decay=0.5, rms_eps=1e-8)
    tr = StateTracker(1, 1, cfg)
    tr.update(torch.zeros(1, 1), torch.ones(1), torch.full((1, 1), 3.0, dtype=torch.float64))
    g = cfg.layout["gradient"].start
    assert tr.observation()[0, 0, 1].item() == pytest.approx(3 / (3 + 1e-8))
    assert tr.state()[0, 0, g].item() == pytest.approx(1.0)
    tr.update(torch.zeros(1, 1), torch.ones(1), torch.full((1, 1), -1.0, dtype=torch.float64))
    r1 = np.sqrt(2.75 / 0.75)
    assert tr.observation()[0, 0, 1].item() == pytest.approx(-1 / r1)
    assert tr.state()[0, 0, g].item() == pytest.approx(1.0 / r1)   # ḡ(1) = (3 − 1)/2
    # the gradient features are bounded by 1/sqrt(1−β)·(1−β^(t+1))^½, whatever the scale
    xs, fs, gs = histories(60, seed=7)
    tr = ObservationTracker(2, 5, FeatureConfig(grad_scale="rms"))
    for t in range(60):
        feed(tr, xs, fs, gs * 1e-6, t)
        assert tr.observation()[..., 1].abs().max() <= np.sqrt(1 / (1 - 0.999)) + 1e-9


def test_reset_restarts_the_history():
    xs, fs, gs = histories(40, seed=3)
    a, b = StateTracker(2, 5), StateTracker(2, 5)
    for t in range(40):
        feed(a, xs, fs, gs, t)
    a.reset()
    assert a.t == -1
    for t in range(12):
        feed(a, xs, fs, gs, t)
        feed(b, xs, fs, gs, t)
    torch.testing.assert_close(a.state(), b.state(), rtol=0, atol=0)
    torch.testing.assert_close(a.observation(), b.observation(), rtol=0, atol=0)


# -------------------------------------------------- the zero rule and clamped indices
def test_zero_where_time_indices_are_negative():
    cfg = FeatureConfig()
    lay = cfg.layout
    xs, fs, gs = histories(20, seed=4)
    tr = StateTracker(2, 5, cfg)
    for t in range(20):
        feed(tr, xs, fs, gs, t)
        s = tr.state()
        q = t // 5
        F, G, R = s[..., lay["objective"]], s[..., lay["gradient"]], s[..., lay["iterate"]]
        # F_i and R_i need t − 5(i+1) ≥ 0; G_i needs t − 5i ≥ 0
        assert torch.all(F[..., q:] == 0) and torch.all(R[..., q:] == 0)
        assert torch.all(G[..., q + 1 :] == 0)
        assert torch.all(F[..., :q] != 0) and torch.all(G[..., : q + 1] != 0)
        assert torch.all(R[..., :q] != 0)
        # the objective features are global: the same in every coordinate
        assert torch.all(F == F[:, :1])
        torch.testing.assert_close(s[..., 0], torch.as_tensor(xs[t]), rtol=0, atol=0)


def test_clamped_lookbacks_by_hand():
    """The max(t−5(i+1), t mod 5) and max(·, t mod 5 + 5) clauses, worked out by hand."""
    cfg = FeatureConfig()
    lay = cfg.layout
    xs, fs, gs = histories(13, N=1, D=4, seed=5)
    x, f, g = xs[:, 0], fs[:, 0], gs[:, 0]
    tr = StateTracker(1, 4, cfg)
    got = {}
    for t in range(13):
        feed(tr, xs, fs, gs, t)
        got[t] = tr.state()[0].numpy()
    G = lambda t, i: got[t][:, lay["gradient"].start + i]
    R = lambda t, i: got[t][:, lay["iterate"].start + i]
    F = lambda t, i: got[t][0, lay["objective"].start + i]
    # t = 0: G_0 = ḡ(0)/(|ḡ(0)|+1) = g(0)/(|g(0)|+1)
    np.testing.assert_allclose(G(0, 0), g[0] / (np.abs(g[0]) + 1), rtol=1e-14)
    # t = 3: the denominator index max(−2, 3) = 3 is the numerator's own
    np.testing.assert_allclose(G(3, 0), bar(g, 3) / (np.abs(bar(g, 3)) + 1), rtol=1e-14)
    # t = 5: R_0 = |x̄(max(0, 5)) − x̄(max(−5, 0))| / (|x̄(5) − x̄(0)| + 0.1)
    d50 = np.abs(bar(x, 5) - bar(x, 0))
    np.testing.assert_allclose(R(5, 0), d50 / (d50 + 0.1), rtol=1e-14)
    np.testing.assert_allclose(F(5, 0), (bar(f, 5) - bar(f, 0)) / bar(f, 0), rtol=1e-14)
    # t = 12 (t mod 5 = 2): G_1 = ḡ(7)/(|ḡ(2)|+1), G_2 = ḡ(2)/(|ḡ(max(−3, 2))|+1)
    np.testing.assert_allclose(G(12, 1), bar(g, 7) / (np.abs(bar(g, 2)) + 1), rtol=1e-14)
    np.testing.assert_allclose(G(12, 2), bar(g, 2) / (np.abs(bar(g, 2)) + 1), rtol=1e-14)
    # R_0 at t = 12: a = max(7, 7) = 7, b = max(2, 2) = 2:
    # |x̄(7) − x̄(2)| / (|x̄(12) − x̄(7)| + 0.1)
    np.testing.assert_allclose(
        R(12, 0), np.abs(bar(x, 7) - bar(x, 2)) / (np.abs(bar(x, 12) - bar(x, 7)) + 0.1),
        rtol=1e-14)
    # R_1 at t = 12: a = max(2, 7) = 7, b = max(−3, 2) = 2; denominator |x̄(7) − x̄(2)| + 0.1
    d72 = np.abs(bar(x, 7) - bar(x, 2))
    np.testing.assert_allclose(R(12, 1), d72 / (d72 + 0.1), rtol=1e-14)
    # "first_raw": the first term of F_i is the raw f̂
    raw = StateTracker(1, 4, FeatureConfig(objective_form="first_raw"))
    for t in range(13):
        feed(raw, xs, fs, gs, t)
    F_raw = raw.state()[0, 0, lay["objective"]].numpy()
    np.testing.assert_allclose(F_raw[1], (f[7] - bar(f, 2)) / bar(f, 2), rtol=1e-14)


def test_observation_by_hand_at_the_start():
    xs, fs, gs = histories(4, N=1, D=3, seed=6)
    x, f, g = xs[:, 0], fs[:, 0], gs[:, 0]
    tr = ObservationTracker(1, 3)
    obs = []
    for t in range(4):
        feed(tr, xs, fs, gs, t)
        obs.append(tr.observation()[0].numpy())
    # t = 0: only the gradient term is defined, with max(t−1, 0) = 0
    np.testing.assert_allclose(obs[0][:, 0], 0.0)
    np.testing.assert_allclose(obs[0][:, 1], g[0] / (np.abs(g[0]) + 1), rtol=1e-14)
    np.testing.assert_allclose(obs[0][:, 2], 0.0)
    # t = 1: numerator |x(max(0, 1)) − x(max(−1, 0))| = |x(1) − x(0)|
    d10 = np.abs(x[1] - x[0])
    np.testing.assert_allclose(obs[1][:, 0], (f[1] - f[0]) / f[0], rtol=1e-14)
    np.testing.assert_allclose(obs[1][:, 1], g[1] / (np.abs(g[0]) + 1), rtol=1e-14)
    np.testing.assert_allclose(obs[1][:, 2], d10 / (d10 + 0.1), rtol=1e-14)
    # t = 2 and 3: the previous step over the current step
    np.testing.assert_allclose(obs[2][:, 2], d10 / (np.abs(x[2] - x[1]) + 0.1), rtol=1e-14)
    np.testing.assert_allclose(obs[3][:, 2], np.abs(x[2] - x[1]) / (np.abs(x[3] - x[2]) + 0.1),
                               rtol=1e-14)


# ------------------------------------------------------------------- properties
def test_observation_tracker_equals_state_tracker_and_copies_inputs():
    xs, fs, gs = histories(12, seed=7)
    st, ob = StateTracker(2, 5), ObservationTracker(2, 5)
    for t in range(12):
        x = torch.as_tensor(xs[t]).clone()
        g = torch.as_tensor(gs[t]).clone()
        f = torch.as_tensor(fs[t]).clone()
        st.update(x, f, g)
        ob.update(x, f, g)
        ref = ob.observation().clone()
        x.add_(100.0)  # in-place changes after the update must not leak in (optimizers do this)
        g.mul_(-3.0)
        f.add_(1.0)
        torch.testing.assert_close(ob.observation(), ref, rtol=0, atol=0)
        torch.testing.assert_close(st.observation(), ref, rtol=0, atol=0)
        np.testing.assert_allclose(st.state()[..., 0].numpy(), xs[t])


@pytest.mark.parametrize("tracker_cls", [StateTracker, ObservationTracker])
def test_permutation_equivariance_within_a_group(tracker_cls):
    """Permuting the coordinates of a group permutes the features the same way."""
    xs, fs, gs = histories(60, N=2, D=7, seed=8)
    group_index = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    perm = torch.tensor([2, 0, 3, 1, 5, 4, 6])  # within groups
    assert torch.equal(group_index[perm], group_index)
    a, b = tracker_cls(2, 7), tracker_cls(2, 7)
    for t in range(60):
        x, f, g = (torch.as_tensor(v[t]) for v in (xs, fs, gs))
        a.update(x, f, g)
        b.update(x[:, perm], f, g[:, perm])
        if t in (0, 3, 7, 31, 59):
            outs = [(a.observation(), b.observation())]
            if tracker_cls is StateTracker:
                outs.append((a.state(), b.state()))
            for ua, ub in outs:
                torch.testing.assert_close(ua[:, perm], ub, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_inputs(dtype):
    xs, fs, gs = histories(8, seed=9)
    st, ob = StateTracker(2, 5), ObservationTracker(2, 5)
    for t in range(8):
        x, f, g = (torch.as_tensor(v[t]).to(dtype) for v in (xs, fs, gs))
        st.update(x, f, g)
        ob.update(x, f, g)
    assert st.state().dtype == dtype and st.observation().dtype == dtype
    assert ob.observation().dtype == dtype
    # an explicit dtype wins over the inputs'
    fixed = StateTracker(2, 5, dtype=torch.float64)
    fixed.update(*(torch.as_tensor(v[0]).float() for v in (xs, fs, gs)))
    assert fixed.state().dtype == torch.float64


def test_state_out_buffer_is_fully_rewritten():
    xs, fs, gs = histories(30, seed=10)
    tr = StateTracker(2, 5)
    buf = torch.full((2, 5, 76), float("nan"), dtype=torch.float64)
    for t in range(30):
        feed(tr, xs, fs, gs, t)
        out = tr.state(out=buf)
        assert out is buf
        torch.testing.assert_close(buf, tr.state(), rtol=0, atol=0)
    with pytest.raises(ValueError):
        tr.state(out=torch.zeros(2, 5, 75, dtype=torch.float64))


def test_input_validation():
    tr = StateTracker(2, 3)
    with pytest.raises(RuntimeError):
        tr.state()
    with pytest.raises(RuntimeError):
        tr.observation()
    z = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="x must be"):
        tr.update(torch.zeros(3, 2), torch.ones(2), z)
    with pytest.raises(ValueError, match="f_hat"):
        tr.update(z, torch.ones(3), z)
    with pytest.raises(ValueError, match="grad"):
        tr.update(z, torch.ones(2), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        StateTracker(0, 3)
    with pytest.raises(TypeError):
        StateTracker(2, 3, config={"history": 25})


def test_literal_refuses_short_history():
    xs, fs, gs = histories(3, seed=11)
    with pytest.raises(ValueError):
        literal_state(list(xs[:, 0]), list(fs[:, 0]), list(gs[:, 0]), 5)


def test_memory_at_paper_size():
    """N = 20 trajectories of the 48-48-10 net (D = 2842) stay well under 1 GB."""
    N, D = 20, 2842
    tr = StateTracker(N, D, FeatureConfig(n_grad_terms=26), dtype=torch.float64)
    z = torch.zeros(N, D, dtype=torch.float64)
    tr.update(z, torch.ones(N, dtype=torch.float64), z)
    state_bytes = N * D * tr.state_dim * 8
    assert tr.buffer_bytes + state_bytes < 250 * 2**20
