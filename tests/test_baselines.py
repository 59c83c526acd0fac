"""Hand-engineered optimizers: convergence, CG and L-BFGS theory, line searches, validation,
registry."""

import json
import logging
import math

import numpy as np
import pytest
import torch

from l2o import baselines
from l2o.baselines import (BASELINES, EXTRA_BASELINES, LBFGS, OPTIMIZERS, ConjugateGradient,
                           default_hparams, load_tuned_hparams, make_optimizer,
                           register_optimizer)

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
# tolerance of a few lr; torch's strong-Wolfe search stops refining once its interval
# times max|d| is below 1e-9, which leaves L-BFGS about 1e-8 from x*; the others
# converge to rounding level or close.
CONVERGENCE = [
    ("sgd", dict(lr=0.15), 300, 1e-10),
    ("momentum", dict(lr=0.05, momentum=0.5), 300, 1e-10),
    ("cg", dict(lr=0.05), 100, 1e-8),
    ("lbfgs", dict(lr=1.0), 60, 1e-10),
    ("adam", dict(lr=0.01), 3000, 1e-6),
    ("adagrad", dict(lr=0.5), 500, 1e-10),
    ("rmsprop", dict(lr=1e-3), 3000, 5e-3),
    ("lbfgs_wolfe", dict(lr=1.0, tolerance_change=0.0), 30, 1e-7),
    ("cg_pr_wolfe", dict(lr=1.0, c2=0.1), 60, 1e-10),
]


def test_convergence_table_covers_every_baseline():
    assert sorted(c[0] for c in CONVERGENCE) == sorted(BASELINES + EXTRA_BASELINES)


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
    (lambda: ConjugateGradient(_p(), line_search="strong_wolfe", c1=0.0), "Invalid c1 value: 0"),
    (lambda: ConjugateGradient(_p(), line_search="armijo", c2=1.0), "Invalid c2 value: 1.0"),
    (lambda: ConjugateGradient(_p(), c1=0.5, c2=0.1), r"Invalid c2 value: 0.1 \(must be > c1"),
    (lambda: ConjugateGradient(_p(), max_ls=0), "Invalid max_ls value: 0"),
    (lambda: ConjugateGradient(_p(), line_search="armijo", lr=0), "Invalid learning rate: 0"),
    (lambda: make_optimizer("cg_pr_wolfe", _p(), c2=math.nan), "Invalid c2 value: nan"),
    (lambda: make_optimizer("cg_pr_wolfe", _p(), c2="0.9"), "Invalid c2 value: '0.9'"),
    (lambda: make_optimizer("cg_pr_wolfe", _p(), line_search="exact_quadratic"),
     "Invalid line_search"),
    (lambda: make_optimizer("cg_pr_wolfe", _p(), beta="fr"), "Unknown hyperparameter"),
    (lambda: make_optimizer("lbfgs_wolfe", _p(), history_size=2.5), "Invalid history_size"),
    (lambda: make_optimizer("lbfgs_wolfe", _p(), max_iter=0), "Invalid max_iter value: 0"),
    (lambda: make_optimizer("lbfgs_wolfe", _p(), max_eval=1),
     r"Invalid max_eval value: 1 \(must be > max_iter"),
    (lambda: make_optimizer("lbfgs_wolfe", _p(), tolerance_change=-1.0),
     "Invalid tolerance_change value: -1.0"),
    (lambda: make_optimizer("lbfgs_wolfe", _p(), line_search_fn=None), "Unknown hyperparameter"),
])
def test_invalid_hyperparameters_raise(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize("name", EXTRA_BASELINES)
@pytest.mark.parametrize("lr", [math.nan, math.inf, -1.0, "0.1", True])
def test_extras_validate_the_learning_rate_like_the_others(name, lr):
    with pytest.raises(ValueError, match="^Invalid learning rate: "):
        make_optimizer(name, _p(), tuned=False, lr=lr)


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
    momentum = OPTIMIZERS["momentum"].grid
    assert sorted({g["momentum"] for g in momentum}) == [0.0, 0.25, 0.5, 0.75, 0.9, 0.95]
    assert sorted({g["lr"] for g in momentum}) == [3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0]
    assert len(momentum) == 42  # the full product
    assert OPTIMIZERS["lbfgs"].defaults["history_size"] == 10
    assert {n for n in BASELINES if OPTIMIZERS[n].elementwise} == {
        "sgd", "momentum", "adam", "adagrad", "rmsprop"}


def test_extras_are_registered_beside_the_paper_variants():
    from l2o.plotting import METHOD_STYLE
    from l2o.report import SHORT

    assert EXTRA_BASELINES == ("lbfgs_wolfe", "cg_pr_wolfe")
    assert not set(EXTRA_BASELINES) & set(BASELINES)
    for name in EXTRA_BASELINES:
        entry = OPTIMIZERS[name]
        assert entry.grid and not entry.elementwise and entry.label, name
        assert name in METHOD_STYLE and name in SHORT, name
        for hp in entry.grid:  # every grid point builds
            make_optimizer(name, _p(), tuned=False, **hp)
    for name in ("cg", "lbfgs"):
        assert "the paper's variant" in OPTIMIZERS[name].description
    assert isinstance(make_optimizer("cg_pr_wolfe", _p()), ConjugateGradient)
    opt = make_optimizer("cg_pr_wolfe", _p())
    assert opt.defaults["beta"] == "pr+" and opt.defaults["line_search"] == "strong_wolfe"


def test_previous_momentum_choice_stays_available():
    # The GPS teacher's momentum before the grid was extended (results/tuning history).
    assert baselines.PREVIOUS_TUNED["momentum"] == {"lr": 0.3, "momentum": 0.5}


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


# ------------------------------------------------------------ line searches
def _along(f_and_grad, x, d):
    """``phi(t) = f(x + t d)`` in the line searches' convention."""
    def phi(t):
        f, g = f_and_grad(x + t * d)
        return float(f), float(g @ d), g
    return phi


def _logistic(seed=0, n=200, p=5, lam=1e-2):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, p, generator=g, dtype=torch.float64)
    y = (torch.rand(n, generator=g, dtype=torch.float64)
         < torch.sigmoid(X @ torch.randn(p, generator=g, dtype=torch.float64))).double()

    def f_and_grad(w):
        z = X @ w
        loss = torch.nn.functional.softplus(z).mean() - (y * z).mean() + 0.5 * lam * w @ w
        return loss, X.T @ (torch.sigmoid(z) - y) / n + lam * w

    return f_and_grad


def _rosenbrock(x):
    f = sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    g = torch.zeros_like(x)
    g[:-1] = -400 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    g[1:] += 200 * (x[1:] - x[:-1] ** 2)
    return f, g


LINE_PROBLEMS = {
    "logistic": (_logistic(), torch.tensor([2.0, -1.0, 0.5, 3.0, -2.0], dtype=torch.float64)),
    "rosenbrock": (_rosenbrock, torch.tensor([-1.2, 1.0, -0.5, 0.8], dtype=torch.float64)),
}


@pytest.mark.parametrize("problem", sorted(LINE_PROBLEMS))
@pytest.mark.parametrize("t_init", [1e-4, 1e-2, 1.0, 1e2])
@pytest.mark.parametrize("c2", [0.1, 0.9])
def test_strong_wolfe_step_satisfies_both_conditions(problem, t_init, c2):
    f_and_grad, x = LINE_PROBLEMS[problem]
    f0, g0 = f_and_grad(x)
    d = -g0  # a descent direction; the trial t_init is far too short or too long
    c1 = 1e-4
    res = baselines.strong_wolfe_line_search(_along(f_and_grad, x, d), float(f0),
                                             float(g0 @ d), t_init, c1=c1, c2=c2)
    f_t, g_t = f_and_grad(x + res.t * d)
    assert res.ok and res.t > 0 and 1 <= res.evals <= 25
    assert float(f_t) <= float(f0) + c1 * res.t * float(g0 @ d)          # Armijo
    assert abs(float(g_t @ d)) <= c2 * abs(float(g0 @ d))               # strong curvature
    assert res.f == float(f_t) and torch.equal(res.payload, g_t)


def test_strong_wolfe_is_exact_on_a_quadratic():
    # phi(t) = (t - 0.6)^2 - 0.36: the cubic through two trials is phi itself.
    def phi(t):
        return (t - 0.6) ** 2 - 0.36, 2 * (t - 0.6), None

    res = baselines.strong_wolfe_line_search(phi, 0.0, -1.2, 1.0, c1=1e-12, c2=1e-9)
    assert res.ok and res.evals == 2 and res.t == pytest.approx(0.6, rel=1e-14)
    # a first trial far too short: extrapolation (at most 10x per trial) reaches it
    res = baselines.strong_wolfe_line_search(phi, 0.0, -1.2, 1e-3, c1=1e-12, c2=1e-9)
    assert res.ok and res.evals <= 6 and res.t == pytest.approx(0.6, rel=1e-12)


def test_strong_wolfe_treats_non_finite_values_as_too_long():
    def phi(t):  # finite only below t = 2, minimum at t = 1
        return ((t - 1) ** 2 - 1, 2 * (t - 1), None) if t < 2 else (math.inf, math.nan, None)

    res = baselines.strong_wolfe_line_search(phi, 0.0, -2.0, 50.0, c2=0.5)
    assert res.ok and 0.75 <= res.t <= 1.25


def test_line_searches_return_zero_when_nothing_decreases():
    def phi(t):  # the slope at 0 promises a decrease that never comes (noise)
        return 1.0 + t, 1.0, None

    for search in (baselines.strong_wolfe_line_search, baselines.armijo_line_search):
        res = search(phi, 1.0, -1.0, 1.0, max_ls=10)
        assert res.t == 0 and not res.ok and res.evals == 10 and res.f == 1.0


def test_armijo_backtracking_returns_first_sufficient_decrease():
    f_and_grad, x = LINE_PROBLEMS["rosenbrock"]
    f0, g0 = f_and_grad(x)
    d, c1 = -g0, 1e-4
    res = baselines.armijo_line_search(_along(f_and_grad, x, d), float(f0), float(g0 @ d),
                                       1.0, c1=c1, shrink=0.5)
    k = round(math.log2(1.0 / res.t))
    assert res.ok and res.t == 0.5 ** k and res.evals == k + 1

    def armijo(t):
        return float(f_and_grad(x + t * d)[0]) <= float(f0) + c1 * t * float(g0 @ d)

    assert armijo(res.t) and not armijo(2 * res.t)  # the trial before failed


@pytest.mark.parametrize("search", [baselines.strong_wolfe_line_search,
                                    baselines.armijo_line_search])
def test_line_search_needs_a_descent_direction(search):
    with pytest.raises(ValueError, match="not a descent direction"):
        search(lambda t: (0.0, 0.0, None), 0.0, 0.5, 1.0)


# ------------------------------------------------- CG with a line search (PR+)
@pytest.mark.parametrize("beta", ["fr", "pr", "pr+"])
def test_cg_strong_wolfe_with_tiny_c2_solves_quadratic_in_n_steps(beta):
    # c2 -> 0 makes the strong-Wolfe step the exact minimiser along d: textbook CG,
    # for which PR, PR+ and FR coincide on a quadratic.
    n = 8
    A, b, x_star = quadratic(n=n, cond=100.0, seed=1)
    kw = dict(lr=1.0, beta=beta, line_search="strong_wolfe", c1=1e-12, c2=1e-9)
    before, _ = run_quadratic(ConjugateGradient, A, b, n - 1, **kw)
    after, _ = run_quadratic(ConjugateGradient, A, b, n, **kw)
    assert torch.linalg.norm(before - x_star) > 1e-6
    assert torch.linalg.norm(after - x_star) < 1e-9 * torch.linalg.norm(x_star)


def test_cg_pr_plus_fixed_step_matches_literal_recursion():
    # beta_k = max(0, g_k^T (g_k - g_{k-1}) / |g_{k-1}|^2); random gradients make
    # beta_PR negative on some steps, where PR+ restarts with d_k = -g_k.
    gen = torch.Generator().manual_seed(12)
    grads = torch.randn(12, 4, generator=gen, dtype=torch.float64)
    grads[1::2] = 0.5 * grads[::2] + 0.1 * grads[1::2]  # shorter than its projection
    x = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = ConjugateGradient([x], lr=0.1, beta="pr+")
    d, clamped = None, 0
    for k, g in enumerate(grads):
        x.grad = g.clone()
        opt.step()
        if k == 0:
            d = -g
        else:
            beta_pr = g @ (g - grads[k - 1]) / (grads[k - 1] @ grads[k - 1])
            clamped += int(beta_pr < 0)
            d = -g + max(float(beta_pr), 0.0) * d
        torch.testing.assert_close(opt.state[x]["d"], d, rtol=1e-13, atol=1e-15)
    assert clamped >= 2  # the test exercised the restart


def test_cg_line_search_restarts_when_direction_is_not_descent():
    A, b, _ = quadratic(n=4, seed=9)
    x = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = ConjugateGradient([x], lr=1.0, beta="fr", line_search="strong_wolfe", c2=0.5)

    def closure():
        with torch.no_grad():
            x.grad = A @ x - b
            return 0.5 * x @ A @ x - b @ x

    g0 = -b  # gradient at x = 0
    state = opt.state[x]  # pretend a previous step left d_prev pointing uphill
    state.update(step=1, d=10 * g0, gg_prev=g0 @ g0, g_prev=g0)
    opt.step(closure)  # FR: beta = 1, d = -g + 10 g = 9 g, not a descent direction
    assert state["restarts"] == 1
    torch.testing.assert_close(state["d"], b)  # restarted along -g
    step = x.detach() / b
    torch.testing.assert_close(step, torch.full_like(step, state["last_alpha"]))


def test_cg_failed_line_search_stays_put_then_restarts():
    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    calls = []

    def noisy_closure():  # the gradient promises a decrease; the loss rises off x0
        with torch.no_grad():
            x.grad = torch.ones(3, dtype=torch.float64)
            calls.append(x.detach().clone())
            return 1.0 + float((x.detach() - 1).abs().sum())

    opt = ConjugateGradient([x], lr=0.5, beta="pr+", line_search="armijo", max_ls=5)
    opt.step(noisy_closure)
    state = opt.state[x]
    assert torch.equal(x.detach(), torch.ones(3, dtype=torch.float64))
    assert state["last_alpha"] == 0 and state["ls_failures"] == 1 and state["ls_evals"] == 5
    assert len(calls) == 6 and state["restart_next"]


def _wolfe_holds(f_and_grad, x_prev, x_new, d, c1, c2):
    f0, g0 = f_and_grad(x_prev)
    f1, g1 = f_and_grad(x_new)
    return (float(f1) <= float(f0) + c1 * float(g0 @ (x_new - x_prev))
            and abs(float(g1 @ d)) <= c2 * abs(float(g0 @ d)))


def test_cg_pr_wolfe_steps_satisfy_strong_wolfe_and_converge():
    f_and_grad = _logistic(seed=3)
    w = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = make_optimizer("cg_pr_wolfe", [w], lr=1.0, c2=0.1)

    def closure():
        with torch.no_grad():
            loss, w.grad = f_and_grad(w)
            return loss

    for _ in range(12):  # until rounding, not the search, limits the conditions
        if float(f_and_grad(w.detach())[1].norm()) < 1e-6:
            break
        x_prev = w.detach().clone()
        opt.step(closure)
        state = opt.state[w]
        assert state["ls_ok"] and state["last_alpha"] > 0
        assert _wolfe_holds(f_and_grad, x_prev, w.detach(), state["d"], 1e-4, 0.1)
    assert float(f_and_grad(w.detach())[1].norm()) < 1e-6


# --------------------------------------- L-BFGS with torch's strong-Wolfe search
def test_lbfgs_wolfe_is_torch_lbfgs_one_iteration_per_step():
    opt = make_optimizer("lbfgs_wolfe", _p())
    assert type(opt) is torch.optim.LBFGS
    assert opt.defaults["line_search_fn"] == "strong_wolfe"
    assert opt.defaults["max_iter"] == 1 and opt.defaults["max_eval"] == 25
    assert opt.defaults["history_size"] == 10 and opt.defaults["lr"] == 1.0


def test_lbfgs_wolfe_steps_equal_one_torch_lbfgs_run():
    # On a deterministic objective, k steps of one iteration each (what the runner does,
    # one minibatch per step) are torch.optim.LBFGS run for k iterations in one call.
    f_and_grad = _logistic(seed=4)

    def closure_for(w):
        def closure():
            with torch.no_grad():
                loss, w.grad = f_and_grad(w)
                return loss
        return closure

    w = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    ours = make_optimizer("lbfgs_wolfe", [w], lr=1.0, history_size=3, tolerance_change=0.0)
    for k in range(1, 9):
        x_prev = w.detach().clone()
        ours.step(closure_for(w))
        ref = torch.zeros(5, dtype=torch.float64, requires_grad=True)
        torch.optim.LBFGS([ref], lr=1.0, max_iter=k, max_eval=1000, history_size=3,
                          tolerance_change=0.0, line_search_fn="strong_wolfe"
                          ).step(closure_for(ref))
        assert torch.equal(w.detach(), ref.detach()), k
        d = ours.state[w]["d"]
        assert _wolfe_holds(f_and_grad, x_prev, w.detach(), d, 1e-4, 0.9), k


def test_lbfgs_wolfe_runner_equals_hand_loop_on_minibatches():
    from l2o import experiments
    from tests.test_experiments import synthetic

    p = synthetic()
    T, seed = 15, 2
    run = experiments.train(p, "lbfgs_wolfe", T, seed, hparams={"lr": 0.5})
    x = experiments.initial_iterate(p, seed).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=0.5, max_iter=1, max_eval=25, history_size=10,
                            line_search_fn="strong_wolfe")
    curve = [float(p.true_loss(x.detach()[None])[0])]
    for idx in experiments.minibatch_stream(p, seed, T):
        def closure():
            with torch.no_grad():
                loss, grad = p.minibatch_loss_and_grad(x.detach()[None], idx[None])
            x.grad = grad[0]
            return loss.sum()
        opt.step(closure)
        curve.append(float(p.true_loss(x.detach()[None])[0]))
    np.testing.assert_array_equal(run.true_loss, curve)
    assert run.grad_evals > T  # the line search evaluated the minibatch more than once


def test_a_registered_optimizer_is_named_and_styled_by_its_label():
    from l2o import baselines
    from l2o.plotting import method_style, short_label

    baselines.register_optimizer("my_sgd", lambda params, lr=0.1: torch.optim.SGD(params, lr=lr),
                                 {"lr": 0.1}, label="My SGD", overwrite=True)
    try:
        assert short_label("my_sgd") == "My SGD" and short_label("adam") == "Adam"
        assert method_style("my_sgd")["label"] == "My SGD"
        with pytest.raises(KeyError, match="registered optimizer"):
            method_style("nobody")
    finally:
        baselines.OPTIMIZERS.pop("my_sgd")
