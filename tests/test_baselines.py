"""Hand-engineered optimizers: convergence, CG and L-BFGS theory, validation, registry."""

import json
import logging

import numpy as np
import pytest
import torch

from l2o import baselines
from l2o.baselines import (BASELINES, LBFGS, OPTIMIZERS, ConjugateGradient, default_hparams,
                           load_tuned_hparams, make_optimizer, register_optimizer)

scipy_optimize = pytest.importorskip("scipy.optimize")


@pytest.fixture(autouse=True)
def no_tuned_file(tmp_path, monkeypatch):
    """Tests never depend on a results/tuning/chosen.json that may exist in the checkout."""
    monkeypatch.setenv(baselines.ENV_TUNED, str(tmp_path / "absent.json"))


def quadratic(n=10, cond=10.0, seed=0):
    """``f(x) = 1/2 x^T A x - b^T x`` with eigenvalues spread over ``[1, cond]``."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(torch.linspace(1.0, cond, n, dtype=torch.float64)) @ Q.T
    b = torch.randn(n, generator=g, dtype=torch.float64)
    return A, b, torch.linalg.solve(A, b)


def run_quadratic(opt_or_name, A, b, steps, x0=None, **hparams):
    """Minimise the quadratic with a closure that sets ``.grad`` (the runner's contract)."""
    x = (torch.zeros(len(b), dtype=torch.float64) if x0 is None else x0.clone())
    x.requires_grad_(True)
    opt = (make_optimizer(opt_or_name, [x], **hparams) if isinstance(opt_or_name, str)
           else opt_or_name([x], **hparams))

    def closure():
        with torch.no_grad():
            x.grad = A @ x - b
            return 0.5 * x @ A @ x - b @ x

    for _ in range(steps):
        opt.step(closure)
    return x.detach(), opt


# (name, hparams, steps, tolerance on |x - x*|).  Constant-step RMSprop moves by about
# lr per coordinate even at the minimum (its step is lr g / RMS(g)), hence its
# tolerance of a few lr; the others converge to rounding level or close.
CONVERGENCE = [
    ("sgd", dict(lr=0.15), 300, 1e-10),
    ("momentum", dict(lr=0.05, momentum=0.5), 300, 1e-10),
    ("cg", dict(lr=0.05), 100, 1e-8),
    ("lbfgs", dict(lr=1.0), 60, 1e-10),
    ("adam", dict(lr=0.01), 3000, 1e-6),
    ("adagrad", dict(lr=0.5), 500, 1e-10),
    ("rmsprop", dict(lr=1e-3), 3000, 5e-3),
]


def test_convergence_table_covers_every_baseline():
    assert sorted(c[0] for c in CONVERGENCE) == sorted(BASELINES)


@pytest.mark.parametrize("name,hparams,steps,tol", CONVERGENCE, ids=[c[0] for c in CONVERGENCE])
def test_reaches_minimum_of_well_conditioned_quadratic(name, hparams, steps, tol):
    A, b, x_star = quadratic(n=10, cond=10.0)
    x, _ = run_quadratic(name, A, b, steps, **hparams)
    assert torch.linalg.norm(x - x_star) < tol


# ------------------------------------------------------------------ CG theory
@pytest.mark.parametrize("beta", ["fr", "pr", "pr+"])
def test_cg_fixed_step_one_step_on_isotropic_quadratic(beta):
    # f = a/2 |x - c|^2: d_0 = -g_0 = -a (x_0 - c), so a step of 1/a lands on c.
    a = 4.0
    c = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    A, b = a * torch.eye(4, dtype=torch.float64), a * c
    x, _ = run_quadratic(ConjugateGradient, A, b, 1, lr=1 / a, beta=beta)
    torch.testing.assert_close(x, c, rtol=0, atol=1e-14)


def test_cg_fixed_step_matches_literal_recursion():
    A, b, _ = quadratic(n=6, cond=5.0, seed=3)
    lr = 0.07
    x = torch.zeros(6, dtype=torch.float64)
    g_old, d = None, None
    for _ in range(5):  # d_k = -g_k + |g_k|^2/|g_{k-1}|^2 d_{k-1};  x += lr d_k
        g = A @ x - b
        d = -g if d is None else -g + (g @ g) / (g_old @ g_old) * d
        x = x + lr * d
        g_old = g
    ours, _ = run_quadratic(ConjugateGradient, A, b, 5, lr=lr)
    torch.testing.assert_close(ours, x, rtol=1e-13, atol=1e-14)


def test_cg_fixed_step_fr_direction_closed_form():
    # Unrolling beta_k = |g_k|^2/|g_{k-1}|^2 gives d_k = -|g_k|^2 sum_{j<=k} g_j/|g_j|^2:
    # with noisy gradients the sum grows with k, which is why fixed-step FR diverges
    # on minibatch objectives unless lr is tiny.
    gen = torch.Generator().manual_seed(11)
    grads = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    x = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = ConjugateGradient([x], lr=0.1)
    for k, g in enumerate(grads):
        x.grad = g.clone()
        opt.step()
        d = opt.state[x]["d"]
        expected = -(g @ g) * sum(gj / (gj @ gj) for gj in grads[: k + 1])
        torch.testing.assert_close(d, expected, rtol=1e-12, atol=1e-14)


def test_cg_restart_every_step_is_gradient_descent():
    A, b, _ = quadratic(n=6, cond=5.0, seed=4)
    cg, _ = run_quadratic(ConjugateGradient, A, b, 20, lr=0.1, restart=1)
    sgd, _ = run_quadratic(torch.optim.SGD, A, b, 20, lr=0.1)
    assert torch.equal(cg, sgd)


@pytest.mark.parametrize("beta", ["fr", "pr"])
def test_cg_exact_line_search_solves_quadratic_in_n_steps(beta):
    # Textbook CG: with exact line searches the iterates reach x* after n steps.
    n = 8
    A, b, x_star = quadratic(n=n, cond=100.0, seed=1)
    before, _ = run_quadratic(ConjugateGradient, A, b, n - 1, lr=1e-2, beta=beta,
                              line_search="exact_quadratic")
    after, _ = run_quadratic(ConjugateGradient, A, b, n, lr=1e-2, beta=beta,
                             line_search="exact_quadratic")
    assert torch.linalg.norm(before - x_star) > 1e-6
    assert torch.linalg.norm(after - x_star) < 1e-9 * torch.linalg.norm(x_star)


def test_cg_state_dict_round_trip_resumes_exactly():
    A, b, _ = quadratic(n=5, seed=2)
    x_ref, _ = run_quadratic(ConjugateGradient, A, b, 6, lr=0.05)
    x_mid, opt = run_quadratic(ConjugateGradient, A, b, 3, lr=0.05)
    x = x_mid.clone().requires_grad_(True)
    resumed = ConjugateGradient([x], lr=0.05)
    resumed.load_state_dict(opt.state_dict())

    def closure():
        with torch.no_grad():
            x.grad = A @ x - b
            return 0.0

    for _ in range(3):
        resumed.step(closure)
    assert torch.equal(x.detach(), x_ref)


# -------------------------------------------------------------- L-BFGS theory
def test_lbfgs_agrees_with_scipy_on_quadratic():
    A, b, _ = quadratic(n=10, cond=10.0, seed=5)
    x, _ = run_quadratic(LBFGS, A, b, 100, lr=1.0, history_size=10)
    An, bn = A.numpy(), b.numpy()
    ref = scipy_optimize.minimize(lambda z: (0.5 * z @ An @ z - bn @ z, An @ z - bn),
                                  np.zeros(10), jac=True, method="L-BFGS-B",
                                  options=dict(gtol=1e-12, ftol=0, maxiter=1000))
    np.testing.assert_allclose(x.numpy(), ref.x, rtol=0, atol=1e-6)


def test_lbfgs_agrees_with_scipy_on_logistic_regression():
    g = torch.Generator().manual_seed(7)
    X = torch.randn(200, 5, generator=g, dtype=torch.float64)
    w_true = torch.tensor([1.0, -2.0, 0.5, 0.0, 1.5], dtype=torch.float64)
    y = (torch.rand(200, generator=g, dtype=torch.float64) < torch.sigmoid(X @ w_true)).double()
    lam = 1e-2

    def loss_grad(w):
        z = X @ w
        loss = torch.nn.functional.softplus(z).mean() - (y * z).mean() + 0.5 * lam * w @ w
        return loss, X.T @ (torch.sigmoid(z) - y) / len(y) + lam * w

    w = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = LBFGS([w], lr=1.0, history_size=10)

    def closure():
        with torch.no_grad():
            loss, w.grad = loss_grad(w)
            return loss

    for _ in range(100):
        opt.step(closure)
    ref = scipy_optimize.minimize(lambda z: tuple(t.numpy() if t.ndim else float(t)
                                                  for t in loss_grad(torch.from_numpy(z))),
                                  np.zeros(5), jac=True, method="L-BFGS-B",
                                  options=dict(gtol=1e-12, ftol=0, maxiter=1000))
    np.testing.assert_allclose(w.detach().numpy(), ref.x, rtol=0, atol=1e-6)


def test_lbfgs_same_batch_equals_consecutive_for_deterministic_gradients():
    A, b, _ = quadratic(n=6, seed=6)
    x1, _ = run_quadratic(LBFGS, A, b, 15, lr=0.5, curvature="consecutive")
    x2, _ = run_quadratic(LBFGS, A, b, 15, lr=0.5, curvature="same_batch")
    torch.testing.assert_close(x1, x2, rtol=1e-12, atol=1e-14)


def test_lbfgs_first_step_is_a_gradient_step_and_history_is_bounded():
    A, b, _ = quadratic(n=6, seed=8)
    x1, _ = run_quadratic(LBFGS, A, b, 1, lr=0.3)
    torch.testing.assert_close(x1, 0.3 * b, rtol=0, atol=1e-15)  # x0 = 0, g0 = -b
    _, opt = run_quadratic(LBFGS, A, b, 12, lr=0.3, history_size=3)
    assert len(opt.state[opt.param_groups[0]["params"][0]]["s_hist"]) == 3


def test_lbfgs_skips_pair_with_negative_curvature():
    # f = -x^2 / 2 on one coordinate: y^T s = -lr^2 < 0, so the pair is rejected.
    x, opt = run_quadratic(LBFGS, -torch.ones(1, 1, dtype=torch.float64),
                           torch.zeros(1, dtype=torch.float64), 2,
                           x0=torch.ones(1, dtype=torch.float64), lr=0.1)
    state = opt.state[opt.param_groups[0]["params"][0]]
    assert state["skipped"] == 1 and state["s_hist"] == []


# ------------------------------------------------------------------ validation
def _p():
    return [torch.zeros(3, requires_grad=True)]


@pytest.mark.parametrize("build,message", [
    (lambda: ConjugateGradient(_p(), lr=-1), "Invalid learning rate: -1"),
    (lambda: LBFGS(_p(), lr=-1), "Invalid learning rate: -1"),
    (lambda: LBFGS(_p(), history_size=0), "Invalid history_size: 0"),
    (lambda: LBFGS(_p(), eps=-1.0), "Invalid eps: -1.0"),
    (lambda: LBFGS(_p(), curvature="exact"), "Invalid curvature"),
    (lambda: ConjugateGradient(_p(), beta="hs"), "Invalid beta"),
    (lambda: ConjugateGradient(_p(), restart=0), "Invalid restart period: 0"),
    (lambda: ConjugateGradient(_p(), line_search="wolfe"), "Invalid line_search"),
    (lambda: make_optimizer("sgd", _p(), lr=-1), "Invalid learning rate: -1"),
    (lambda: make_optimizer("lbfgs", _p(), history_size=0), "Invalid history_size: 0"),
    (lambda: make_optimizer("adam", _p(), momentum=0.9), "Unknown hyperparameter"),
    (lambda: make_optimizer("newton", _p()), "Unknown optimizer 'newton'"),
])
def test_invalid_hyperparameters_raise(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        make_optimizer("nope", _p())
    for name in BASELINES:
        assert repr(name) in str(info.value)


def test_flat_optimizers_reject_parameter_groups():
    groups = [{"params": _p()}, {"params": _p(), "lr": 0.1}]
    for cls in (ConjugateGradient, LBFGS):
        with pytest.raises(ValueError, match="parameter groups"):
            cls(groups)


def test_line_search_needs_closure():
    x = torch.zeros(2, requires_grad=True)
    x.grad = torch.ones(2)
    with pytest.raises(RuntimeError, match="closure"):
        ConjugateGradient([x], line_search="exact_quadratic").step()


# -------------------------------------------------------------------- registry
def test_registry_has_the_seven_baselines_with_grids():
    assert BASELINES == ("sgd", "momentum", "cg", "lbfgs", "adam", "adagrad", "rmsprop")
    for name in BASELINES:
        entry = OPTIMIZERS[name]
        assert entry.grid, name
        lrs = sorted({g["lr"] for g in entry.grid})
        assert all(v > 0 for v in lrs) and len(lrs) >= 5, name
        assert set(entry.defaults) <= set(entry.grid[0]) | {"history_size"}, name
    assert sorted({g["momentum"] for g in OPTIMIZERS["momentum"].grid}) == [0.5, 0.9, 0.95, 0.99]
    assert OPTIMIZERS["lbfgs"].defaults["history_size"] == 10
    assert {n for n in BASELINES if OPTIMIZERS[n].elementwise} == {
        "sgd", "momentum", "adam", "adagrad", "rmsprop"}


def test_built_classes_and_hyperparameters():
    assert type(make_optimizer("momentum", _p(), lr=0.2, momentum=0.95)) is torch.optim.SGD
    opt = make_optimizer("momentum", _p(), lr=0.2, momentum=0.95)
    assert opt.defaults["momentum"] == 0.95 and opt.defaults["lr"] == 0.2
    assert make_optimizer("sgd", _p()).defaults["momentum"] == 0
    assert isinstance(make_optimizer("cg", _p()), ConjugateGradient)
    assert isinstance(make_optimizer("lbfgs", _p()), LBFGS)
    assert type(make_optimizer("adam", _p())) is torch.optim.Adam
    assert type(make_optimizer("adagrad", _p())) is torch.optim.Adagrad
    assert type(make_optimizer("rmsprop", _p())) is torch.optim.RMSprop


def test_tuned_file_becomes_the_default(tmp_path, monkeypatch):
    path = tmp_path / "chosen.json"
    path.write_text(json.dumps({"hparams": {"adam": {"lr": 0.0123},
                                            "momentum": {"lr": 0.03, "momentum": 0.95}}}))
    monkeypatch.setenv(baselines.ENV_TUNED, str(path))
    assert make_optimizer("adam", _p()).defaults["lr"] == 0.0123
    assert make_optimizer("adam", _p(), lr=0.5).defaults["lr"] == 0.5
    assert default_hparams("momentum") == {"lr": 0.03, "momentum": 0.95}
    assert default_hparams("sgd") == OPTIMIZERS["sgd"].defaults  # not tuned: registry value
    assert default_hparams("adam", tuned=False) == OPTIMIZERS["adam"].defaults


def test_missing_tuned_file_warns_and_falls_back(tmp_path, caplog):
    path = tmp_path / "nowhere" / "chosen.json"
    with caplog.at_level(logging.WARNING, logger="l2o.baselines"):
        assert load_tuned_hparams(path) == {}
    assert "registry defaults" in caplog.text
    assert default_hparams("adam", tuned_path=path) == dict(OPTIMIZERS["adam"].defaults)


def test_register_optimizer_hook():
    def factory(params, lr=0.5):
        return torch.optim.SGD(params, lr=lr)

    try:
        register_optimizer("my_sgd", factory, {"lr": 0.25}, elementwise=True)
        assert make_optimizer("my_sgd", _p()).defaults["lr"] == 0.25
        with pytest.raises(ValueError, match="already registered"):
            register_optimizer("my_sgd", factory, {})
        with pytest.raises(ValueError, match="Unknown hyperparameter"):
            make_optimizer("my_sgd", _p(), beta=1)
    finally:
        OPTIMIZERS.pop("my_sgd", None)
