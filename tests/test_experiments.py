"""The runner, tuning, the resumable experiment grid and the summary table."""

import json
import math

import numpy as np
import pytest
import torch

from l2o import baselines, experiments
from l2o.experiments import (EVAL_SEEDS, FIGURES, TUNING_SEEDS, ExperimentSpec, RunResult,
                             figure_specs, format_summary, load_results, meta_loss,
                             pending_specs, run_grid, summary_table, train, train_many, tune)
from l2o.problems import MLPProblem

ELEMENTWISE = ["sgd", "momentum", "adam", "adagrad", "rmsprop"]
HPARAMS = {"sgd": {"lr": 0.5}, "momentum": {"lr": 0.1, "momentum": 0.9}, "adam": {"lr": 0.01},
           "adagrad": {"lr": 0.1}, "rmsprop": {"lr": 0.01}, "cg": {"lr": 0.05},
           "lbfgs": {"lr": 0.1}}


@pytest.fixture(autouse=True)
def no_tuned_file(tmp_path, monkeypatch):
    """Defaults come from the registry, whatever results/tuning holds."""
    monkeypatch.setenv(baselines.ENV_TUNED, str(tmp_path / "absent.json"))


def synthetic(M=120, d=6, h=5, c=3, B=8, dtype=torch.float64, seed=0, name="synthetic"):
    """A small learnable problem: labels from a random linear map of the inputs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, d, generator=g, dtype=dtype)
    y = (x @ torch.randn(d, c, generator=g, dtype=dtype)).argmax(-1)
    return MLPProblem(x, y, n_hidden=h, n_classes=c, batch_size=B, init_std=0.3, name=name,
                      chunk=50)


class SpyProblem(MLPProblem):
    """Records the minibatch indices of every gradient evaluation."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.seen = []

    def minibatch_loss_and_grad(self, theta, idx):
        self.seen.append(idx.clone())
        return super().minibatch_loss_and_grad(theta, idx)


# ------------------------------------------------------------------- runner
def test_meta_loss_sums_iterates_one_to_T():
    assert meta_loss([10.0, 1.0, 2.0, 3.0]) == 6.0
    assert meta_loss([1.0, 2.0, float("nan")]) == math.inf
    assert meta_loss([1.0]) == 0.0


def test_run_records_curves_and_learns():
    p = synthetic()
    r = train(p, "adam", 60, seed=3, hparams={"lr": 0.05})
    assert r.true_loss.shape == (61,) and r.minibatch_loss.shape == (60,)
    assert np.all(np.isfinite(r.true_loss)) and not r.diverged and r.diverged_at is None
    assert r.true_loss[-1] < 0.7 * r.true_loss[0]
    assert r.meta_loss == pytest.approx(r.true_loss[1:].sum())
    x0 = experiments.initial_iterate(p, 3)
    assert r.true_loss[0] == pytest.approx(float(p.true_loss(x0)), rel=1e-15)
    idx0 = experiments.minibatch_stream(p, 3, 1)[0]
    assert r.minibatch_loss[0] == pytest.approx(float(p.minibatch_loss(x0, idx0)), rel=1e-15)
    assert r.hparams["lr"] == 0.05 and r.optimizer == "adam" and r.seed == 3
    assert r.problem["architecture"] == "6-5-3" and r.grad_evals == 60


def test_divergence_is_recorded_not_raised():
    p = synthetic()
    r = train(p, "sgd", 50, seed=0, hparams={"lr": 1e5})
    assert r.diverged and r.diverged_at is not None and 1 <= r.diverged_at <= 50
    k = r.diverged_at
    assert np.all(np.isfinite(r.true_loss[:k])) and np.all(np.isnan(r.true_loss[k:]))
    assert np.all(np.isnan(r.minibatch_loss[k:]))
    assert r.meta_loss == math.inf and math.isnan(r.final_loss)


def test_divergence_threshold_relative_to_initial_loss():
    p = synthetic()
    r = train(p, "sgd", 30, seed=0, hparams={"lr": 20.0}, divergence_factor=1.5)
    assert r.diverged
    k = r.diverged_at
    assert np.all(r.true_loss[1:k] <= 1.5 * r.true_loss[0])
    off = train(p, "sgd", 30, seed=0, hparams={"lr": 20.0}, divergence_factor=None)
    assert off.diverged_at is None or off.diverged_at > k  # only non-finite values count


def test_same_seed_identical_different_seed_differs():
    p = synthetic()
    a = train(p, "momentum", 30, seed=5, hparams=HPARAMS["momentum"])
    b = train(p, "momentum", 30, seed=5, hparams=HPARAMS["momentum"])
    c = train(p, "momentum", 30, seed=6, hparams=HPARAMS["momentum"])
    assert np.array_equal(a.true_loss, b.true_loss)
    assert np.array_equal(a.minibatch_loss, b.minibatch_loss)
    assert not np.array_equal(a.true_loss, c.true_loss)


def test_every_optimizer_sees_the_same_x0_and_minibatches():
    base = synthetic()
    p = SpyProblem(base.x, base.y, n_hidden=5, n_classes=3, batch_size=8, init_std=0.3)
    streams, starts = {}, {}
    for name in ("sgd", "adam", "cg", "lbfgs"):
        p.seen.clear()
        first = []
        train(p, name, 12, seed=9, hparams=HPARAMS[name],
              callback=lambda t, x, f: first.append(x.clone()) if t == 0 else None)
        streams[name] = torch.stack(p.seen)
        starts[name] = first[0]
    for name in ("adam", "cg", "lbfgs"):
        assert torch.equal(streams[name], streams["sgd"])
        assert torch.equal(starts[name], starts["sgd"])
    assert streams["sgd"].shape == (12, 1, 8)


def test_stream_prefix_does_not_depend_on_horizon():
    p = synthetic()
    s10 = experiments.minibatch_stream(p, 4, 10)
    s30 = experiments.minibatch_stream(p, 4, 30)
    assert torch.equal(s10, s30[:10])


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_batched_seeds_equal_sequential_runs_exactly(name):
    p = synthetic()
    seeds = [0, 1, 2]
    batched = train_many(p, name, 25, seeds, hparams=HPARAMS[name], batched=True)
    for s, rb in zip(seeds, batched):
        rs = train(p, name, 25, seed=s, hparams=HPARAMS[name])
        assert rb.batched == 3 and rs.batched == 1
        assert np.array_equal(rb.true_loss, rs.true_loss, equal_nan=True)
        assert np.array_equal(rb.minibatch_loss, rs.minibatch_loss, equal_nan=True)
        assert rb.diverged_at == rs.diverged_at


def test_batched_rows_diverge_independently():
    p = synthetic()
    seeds = [0, 1, 2, 3]
    batched = train_many(p, "sgd", 30, seeds, hparams={"lr": 2.5}, divergence_factor=1.5,
                         batched=True)
    assert len({r.diverged_at for r in batched}) > 1  # rows stop at different steps
    for s, rb in zip(seeds, batched):
        rs = train(p, "sgd", 30, seed=s, hparams={"lr": 2.5}, divergence_factor=1.5)
        assert rb.diverged_at == rs.diverged_at
        assert np.array_equal(rb.true_loss, rs.true_loss, equal_nan=True)
        assert np.array_equal(rb.minibatch_loss, rs.minibatch_loss, equal_nan=True)


def test_coupled_optimizers_are_never_batched():
    p = synthetic()
    for name in ("cg", "lbfgs"):
        with pytest.raises(ValueError, match="cannot be batched"):
            train_many(p, name, 3, [0, 1], batched=True)
        assert all(r.batched == 1 for r in train_many(p, name, 3, [0, 1],
                                                      hparams=HPARAMS[name]))


def test_factory_plugs_in_like_a_registered_optimizer():
    p = synthetic()
    ref = train(p, "sgd", 20, seed=1, hparams={"lr": 0.5})
    mine = train(p, lambda params: torch.optim.SGD(params, lr=0.5), 20, seed=1, label="mine")
    assert mine.optimizer == "mine"
    assert np.array_equal(ref.true_loss, mine.true_loss)


def test_eval_every_leaves_gaps():
    p = synthetic()
    r = train(p, "adam", 10, seed=0, hparams={"lr": 0.01}, eval_every=4)
    assert list(r.evaluated_steps) == [0, 4, 8, 10]
    assert np.all(np.isfinite(r.true_loss[[0, 4, 8, 10]]))
    assert np.isnan(r.true_loss[[1, 2, 3, 5, 9]]).all()
    full = train(p, "adam", 10, seed=0, hparams={"lr": 0.01})
    assert np.array_equal(full.true_loss[[0, 4, 8, 10]], r.true_loss[[0, 4, 8, 10]])


def test_run_result_round_trip(tmp_path):
    r = train(synthetic(), "sgd", 20, seed=0, hparams={"lr": 1e5})
    r.save(tmp_path / "run")
    back = RunResult.load(tmp_path / "run.json")
    assert np.array_equal(back.true_loss, r.true_loss, equal_nan=True)
    assert back.metadata() == r.metadata()
    json.loads((tmp_path / "run.json").read_text())  # strict JSON (no NaN/Infinity)


def test_invalid_arguments():
    p = synthetic()
    with pytest.raises(ValueError, match="Unknown optimizer"):
        train(p, "newton", 3, 0)
    with pytest.raises(ValueError, match="Invalid horizon"):
        train(p, "sgd", -1, 0)
    with pytest.raises(ValueError, match="Invalid eval_every"):
        train(p, "sgd", 3, 0, eval_every=0)


# ------------------------------------------------------------------- tuning
def test_tuning_and_evaluation_seeds_are_disjoint():
    assert not set(TUNING_SEEDS) & set(EVAL_SEEDS)


def test_tune_smoke_writes_grid_chosen_provenance(tmp_path, monkeypatch):
    p = synthetic()
    grids = {"sgd": [{"lr": 0.1}, {"lr": 1e5}], "cg": [{"lr": 0.01}, {"lr": 0.05}]}
    res = tune(p, names=["sgd", "cg", "adam"], seeds=[1000, 1001], horizon=15, grids=grids,
               out_dir=tmp_path, workers=1, smoke=True, command="pytest", progress=False)
    grid = json.loads((tmp_path / "grid.json").read_text())
    chosen = json.loads((tmp_path / "chosen.json").read_text())
    prov = json.loads((tmp_path / "provenance.json").read_text())
    rows = grid["optimizers"]["sgd"]
    assert [r["hparams"] for r in rows] == grids["sgd"]
    for r in rows:
        assert len(r["meta_loss"]) == 2 and len(r["diverged"]) == 2
    assert rows[1]["diverged"] == [True, True] and rows[1]["mean_meta_loss"] is None
    assert rows[0]["mean_meta_loss"] == pytest.approx(np.mean(rows[0]["meta_loss"]))
    assert len(grid["optimizers"]["adam"]) == 2  # smoke: two points of the registry grid
    assert chosen["hparams"]["sgd"] == {"lr": 0.1}
    best_cg = min(grid["optimizers"]["cg"], key=lambda r: r["mean_meta_loss"])
    assert chosen["hparams"]["cg"] == best_cg["hparams"]
    assert set(chosen["hparams"]) == {"sgd", "cg", "adam"}
    assert res["chosen"] == chosen["hparams"]
    for key in ("command", "git_commit", "seeds", "wall_time_s", "machine", "horizon"):
        assert key in prov
    assert prov["command"] == "pytest" and prov["seeds"] == [1000, 1001]
    for key in ("platform", "cpu_count", "torch", "torch_threads_worker"):
        assert key in prov["machine"]
    # The tuned values become the defaults.
    monkeypatch.setenv(baselines.ENV_TUNED, str(tmp_path / "chosen.json"))
    assert baselines.default_hparams("sgd") == {"lr": 0.1}
    assert baselines.make_optimizer("cg", [torch.zeros(2)]).defaults["lr"] == \
        best_cg["hparams"]["lr"]


def test_tune_merges_with_previous_entries(tmp_path):
    p = synthetic()
    tune(p, names=["sgd"], seeds=[1000], horizon=5, grids={"sgd": [{"lr": 0.1}]},
         out_dir=tmp_path, workers=1, progress=False)
    tune(p, names=["adam"], seeds=[1000], horizon=5, grids={"adam": [{"lr": 0.01}]},
         out_dir=tmp_path, workers=1, progress=False)
    chosen = json.loads((tmp_path / "chosen.json").read_text())
    assert chosen["hparams"] == {"sgd": {"lr": 0.1}, "adam": {"lr": 0.01}}
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["merged_from_previous"] == ["sgd"]
    assert prov["optimizers"] == ["adam"] and prov["previous"]["optimizers"] == ["sgd"]
    assert "previous" not in prov["previous"]


def test_tune_in_worker_processes_matches_in_process(tmp_path):
    p = synthetic()
    kw = dict(names=["sgd", "lbfgs"], seeds=[1000, 1001], horizon=8, out_dir=None,
              grids={"sgd": [{"lr": 0.1}, {"lr": 0.3}], "lbfgs": [{"lr": 0.1}]})
    one = tune(p, workers=1, progress=False, **kw)
    two = tune(p, workers=2, progress=False, **kw)
    for name, rows in one["grid"].items():
        for row, other in zip(rows, two["grid"][name]):
            assert row["hparams"] == other["hparams"]
            assert row["meta_loss"] == other["meta_loss"]  # bitwise: one thread everywhere
    assert one["chosen"] == two["chosen"]


def test_tune_cli_smoke_on_mnist(data_dir, tmp_path):
    code = experiments.main(["tune", "--smoke", "--out", str(tmp_path), "--workers", "2",
                             "--no-progress", "--data-dir", str(data_dir),
                             "--optimizers", "sgd", "cg"])
    assert code == 0
    chosen = json.loads((tmp_path / "chosen.json").read_text())
    assert set(chosen["hparams"]) == {"sgd", "cg"}
    assert chosen["horizon"] == 20 and chosen["seeds"] == [TUNING_SEEDS[0]]
    assert chosen["objective"]["architecture"] == "48-48-10"


# --------------------------------------------------------------------- grid
@pytest.fixture
def fake_data(monkeypatch):
    """Specs resolve to small synthetic problems (no dataset files needed)."""
    problems = {}

    def problem_for(spec, data_dir):
        key = (spec.dataset, spec.n_in, spec.n_hidden, spec.batch_size)
        if key not in problems:
            problems[key] = synthetic(d=spec.n_in, h=spec.n_hidden, B=spec.batch_size,
                                      name=spec.dataset, seed=len(problems))
        return problems[key]

    monkeypatch.setattr(experiments, "_problem_for", problem_for)


@pytest.fixture
def count_runs(monkeypatch):
    counter = {"runs": 0, "tasks": 0}
    original = experiments._run_specs

    def counting(specs, results_dir, data_dir):
        counter["tasks"] += 1
        counter["runs"] += len(specs)
        return original(specs, results_dir, data_dir)

    monkeypatch.setattr(experiments, "_run_specs", counting)
    return counter


def small_specs(**kw):
    return figure_specs(1, seeds=[0, 1], optimizers=["sgd", "cg"], datasets=["faces"],
                        n_in=6, n_hidden=5, batch_size=8, horizon=10, **kw)


def test_run_grid_resumes_and_reruns_corrupt_results(tmp_path, fake_data, count_runs):
    specs = small_specs()
    first = run_grid(specs, tmp_path, workers=1, progress=False, batch_seeds=True)
    assert count_runs == {"runs": 4, "tasks": 3}  # sgd seeds batched, cg one task per seed
    assert [(r.optimizer, r.seed) for r in first] == [(s.optimizer, s.seed) for s in specs]
    assert [r.config for r in first] == [s.config() for s in specs]
    assert len(list(tmp_path.glob("*.npz"))) == 4 and len(list(tmp_path.glob("*.json"))) == 4

    again = run_grid(specs, tmp_path, workers=1, progress=False)
    assert count_runs["runs"] == 4  # nothing ran
    assert pending_specs(specs, tmp_path) == []
    for a, b in zip(first, again):
        assert np.array_equal(a.true_loss, b.true_loss, equal_nan=True)

    victim = experiments.result_path(specs[0], tmp_path).with_suffix(".npz")
    victim.write_bytes(victim.read_bytes()[:-20] + b"x" * 20)  # damaged curve file
    other = experiments.result_path(specs[3], tmp_path).with_suffix(".json")
    other.write_text("{ not json")  # damaged metadata
    rerun = run_grid(specs, tmp_path, workers=1, progress=False)
    assert count_runs["runs"] == 6
    assert np.array_equal(rerun[0].true_loss, first[0].true_loss)
    assert np.array_equal(rerun[3].true_loss, first[3].true_loss)


def test_changed_hyperparameters_get_a_new_result(tmp_path, fake_data, count_runs):
    specs = small_specs()[:1]
    run_grid(specs, tmp_path, workers=1, progress=False)
    changed = [ExperimentSpec(**{**specs[0].__dict__, "hparams": {"lr": 0.01}})]
    assert changed[0].stem() != specs[0].stem()
    res = run_grid(changed, tmp_path, workers=1, progress=False)
    assert count_runs["runs"] == 2 and res[0].hparams["lr"] == 0.01


def test_run_grid_in_worker_processes(tmp_path, fake_data):
    specs = small_specs()
    par = run_grid(specs, tmp_path / "par", workers=2, progress=False)
    seq = run_grid(specs, tmp_path / "seq", workers=1, progress=False)
    for a, b in zip(par, seq):
        assert np.array_equal(a.true_loss, b.true_loss, equal_nan=True)


def test_load_results_filters(tmp_path, fake_data):
    run_grid(small_specs(), tmp_path, workers=1, progress=False)
    assert len(load_results(tmp_path)) == 4
    assert {r.seed for r in load_results(tmp_path, optimizer="cg")} == {0, 1}
    assert len(load_results(tmp_path, optimizer=["sgd", "cg"], seed=1)) == 2
    assert load_results(tmp_path, dataset="cifar10") == []


def test_load_results_current_only_drops_runs_of_old_defaults(tmp_path, fake_data, monkeypatch):
    specs = small_specs()
    run_grid(specs, tmp_path, workers=1, progress=False)
    tuned = tmp_path / "chosen.json"
    tuned.write_text(json.dumps({"hparams": {"sgd": {"lr": 0.02}}}))
    monkeypatch.setenv(baselines.ENV_TUNED, str(tuned))
    run_grid(specs, tmp_path, workers=1, progress=False)  # sgd re-runs with the new default
    assert len(load_results(tmp_path)) == 6
    current = load_results(tmp_path, current_only=True)
    assert len(current) == 4
    assert {r.hparams["lr"] for r in current if r.optimizer == "sgd"} == {0.02}


def test_figure_specs_match_the_paper():
    expected = {1: (48, 48, 64, 400), 2: (100, 200, 64, 400), 3: (48, 48, 10, 400),
                4: (100, 200, 10, 400), 5: (100, 200, 64, 800)}
    for fig, (n_in, n_hidden, b, T) in expected.items():
        specs = figure_specs(fig, seeds=[0, 1], optimizers=list(baselines.BASELINES))
        assert len(specs) == 3 * 7 * 2
        assert {s.dataset for s in specs} == {"faces", "cifar10", "cifar100"}
        assert {(s.n_in, s.n_hidden, s.batch_size, s.horizon) for s in specs} == \
            {(n_in, n_hidden, b, T)}
    assert FIGURES[1]["horizon"] == 400
    # the default is the paper's seven; the line-search extras are opt-in rows
    assert {s.optimizer for s in figure_specs(1, seeds=[0])} == set(baselines.BASELINES)
    extra = figure_specs(1, seeds=[0], optimizers=[*baselines.BASELINES,
                                                   *baselines.EXTRA_BASELINES])
    assert len(extra) == 3 * 9
    with pytest.raises(ValueError, match="Invalid figure"):
        figure_specs(6)
    with pytest.raises(ValueError, match="Unknown optimizer"):
        figure_specs(1, optimizers=["newton"])


def test_spec_validation_and_key():
    spec = ExperimentSpec("faces", 48, 48, 64, 400, "adam", 0)
    assert spec.stem().startswith("faces_48-48_b64_T400_adam_seed0_")
    assert spec.key() == ExperimentSpec("faces", 48, 48, 64, 400, "adam", 0).key()
    assert spec.key() != ExperimentSpec("faces", 48, 48, 64, 400, "adam", 1).key()
    with pytest.raises(ValueError, match="Invalid batch_size"):
        ExperimentSpec("faces", 48, 48, 0, 400, "adam", 0)
    with pytest.raises(ValueError, match="Invalid dtype"):
        ExperimentSpec("faces", 48, 48, 64, 400, "adam", 0, dtype="float16")


# ------------------------------------------------------------------ summary
def fake_result(opt, seed, curve, diverged_at=None):
    curve = np.asarray(curve, dtype=np.float64)
    return RunResult(true_loss=curve, minibatch_loss=curve[:-1], optimizer=opt, hparams={},
                     seed=seed, problem={"name": "P", "architecture": "1-1-2", "batch_size": 4},
                     horizon=len(curve) - 1, wall_time=0.0, diverged=diverged_at is not None,
                     diverged_at=diverged_at)


def test_summary_table_statistics_and_ranks():
    nan = np.nan
    results = [
        fake_result("a", 0, [3, 2, 1]), fake_result("a", 1, [3, 1, 1]),      # meta 3, 2
        fake_result("b", 0, [3, 1, 0.5]), fake_result("b", 1, [3, 0.5, 0.5]),  # meta 1.5, 1
        fake_result("c", 0, [3, 0.1, nan], diverged_at=2), fake_result("c", 1, [3, 1, 1]),
    ]
    rows = {r["optimizer"]: r for r in summary_table(results)}
    assert rows["b"]["rank"] == 1 and rows["a"]["rank"] == 2 and rows["c"]["rank"] == 3
    assert rows["a"]["meta_loss_mean"] == pytest.approx(2.5)
    assert rows["a"]["meta_loss_std"] == pytest.approx(np.std([3, 2], ddof=1))
    assert rows["b"]["final_mean"] == pytest.approx(0.5) and rows["b"]["final_std"] == 0
    assert rows["c"]["n_diverged"] == 1 and rows["c"]["meta_loss_mean"] == pytest.approx(2.0)
    assert rows["c"]["best_mean"] == pytest.approx(0.55)  # min 0.1 before divergence, and 1
    table = format_summary(summary_table(results))
    assert table.count("\n") == 2 + 3 - 1 and "1/2" in table
    compact = format_summary(summary_table(results), compact=True).splitlines()
    assert compact[0] == "| rank | optimizer | meta-loss | final f | best f | diverged |"
    assert len(compact) == 2 + 3 and all(line.count("|") == 7 for line in compact)


def test_grid_cli_on_real_data(data_dir, tmp_path, capsys):
    argv = ["grid", "--figure", "1", "--seeds", "0", "1", "--optimizers", "sgd", "cg",
            "--datasets", "faces", "--horizon", "5", "--workers", "1", "--no-progress",
            "--results-dir", str(tmp_path), "--data-dir", str(data_dir)]
    assert experiments.main(argv) == 0
    assert len(list(tmp_path.glob("faces_48-48_b64_T5_*.json"))) == 4
    out = capsys.readouterr().out
    assert "| sgd |" in out and "| cg |" in out
    results = load_results(tmp_path, optimizer="sgd")
    assert {r.problem["architecture"] for r in results} == {"48-48-7"}


def test_line_search_extras_run_and_tune_like_the_baselines():
    p = synthetic()
    for name in baselines.EXTRA_BASELINES:
        with pytest.raises(ValueError, match="cannot be batched"):
            train_many(p, name, 3, [0, 1], batched=True)
        run = train(p, name, 20, seed=0)
        assert not run.diverged and run.true_loss[-1] < run.true_loss[0], name
        assert run.grad_evals >= 40, name  # a line search: two evaluations or more a step
    res = tune(p, names=list(baselines.EXTRA_BASELINES), seeds=[1000], horizon=10,
               out_dir=None, workers=1, smoke=True, progress=False)
    for name in baselines.EXTRA_BASELINES:
        assert res["chosen"][name] in [r["hparams"] for r in res["grid"][name]]
        assert len(res["grid"][name]) == 2


def test_tune_on_a_figure_dataset(tmp_path, data_dir, capsys):
    """``tune --dataset NAME``: the same protocol on that dataset's 48-48 objective, never
    merged into the package's MNIST tuning."""
    from l2o import experiments

    res = experiments.tune(names=["sgd"], seeds=[1000], horizon=2, out_dir=tmp_path / "t",
                           workers=1, progress=False, smoke=True, dataset="faces",
                           data_dir=data_dir)
    obj = res["provenance"]["objective"]
    assert obj["architecture"] == "48-48-7" and obj["batch_size"] == 64
    assert (tmp_path / "t" / "chosen.json").exists()
    with pytest.raises(SystemExit) as exc:
        experiments.main(["tune", "--dataset", "faces", "--update-chosen"])
    assert exc.value.code == 2
    assert "own folder" in capsys.readouterr().err


def test_console_script_short_forms(capsys):
    """``l2o tune ...`` is ``l2o experiments tune ...``; errors name the real command."""
    from l2o import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["tune", "--dataset", "faces", "--update-chosen"])
    assert exc.value.code == 2
    assert "python -m l2o.experiments tune" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["grid", "--figure", "9"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "tune" in capsys.readouterr().out
