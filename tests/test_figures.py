"""Figure runs of the learned optimizers are cached by policy-file hash; the grid's tasks."""

import numpy as np
import pytest
import torch

from l2o import experiments, figures, record
from l2o.baselines import BASELINES
from l2o.features import FeatureConfig
from l2o.gps import save_policy
from l2o.policy import LSTMPolicy, PolicyConfig


def test_learned_cache_is_keyed_by_policy_file(tmp_path, data_dir):
    policy = LSTMPolicy(PolicyConfig(hidden_size=4), generator=torch.Generator().manual_seed(0))
    f = tmp_path / "psd.pt"
    save_policy(f, policy, FeatureConfig())
    setting = dict(n_in=48, n_hidden=48, batch_size=64, horizon=3)
    runs = figures.learned_results("psd", "faces", setting, [0], f, tmp_path / "cache")
    assert len(runs) == 1 and runs[0].true_loss.shape == (4,)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1
    # the same file: read back from the cache, identical curve
    again = figures.learned_results("psd", "faces", setting, [0], f, tmp_path / "cache")
    assert (again[0].true_loss == runs[0].true_loss).all()
    # a different policy file: a new cache entry, never the stale curves
    with torch.no_grad():
        policy.output_scale.mul_(3.0)
    save_policy(f, policy, FeatureConfig())
    figures.learned_results("psd", "faces", setting, [0], f, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2


def test_table_readers_and_verdict():
    table = [{"optimizer": "adam", "rank": 2}, {"optimizer": "psd", "rank": 1},
             {"optimizer": "sgd", "rank": 3}, {"optimizer": "l2l", "rank": 4}]
    assert figures.rank_of(table, "sgd") == 3
    assert figures.best_method(table) == "psd"
    assert figures.hand_engineered_order(table) == ["adam", "sgd"]
    assert figures.row_of(table, "l2l")["rank"] == 4
    assert [figures.verdict(k, 3) for k in (3, 1, 0)] == [
        "reproduced", "partly reproduced", "not reproduced"]


# ------------------------------------------------------------- curve measures
import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from l2o.experiments import RunResult  # noqa: E402


def _run(optimizer, curve, seed=0, dataset="toy"):
    curve = np.asarray(curve, dtype=np.float64)
    return RunResult(true_loss=curve, minibatch_loss=curve[:-1].copy(), optimizer=optimizer,
                     hparams={}, seed=seed, horizon=curve.size - 1, wall_time=0.0,
                     problem={"name": dataset, "architecture": "1-1-1", "batch_size": 1},
                     diverged=bool(~np.isfinite(curve).all()))


def test_oscillation_is_the_mean_rise_per_iteration():
    # steps -1, +0.5, -1.5: one rise of 0.5 over three steps
    assert figures.oscillation([3.0, 2.0, 2.5, 1.0]) == pytest.approx(0.5 / 3)
    assert figures.oscillation([3.0, 2.0, 1.0]) == 0.0           # steady descent
    assert figures.oscillation([1.0, 1.0, 1.0]) == 0.0
    assert figures.oscillation([1.0, 2.0, 1.0, 2.0, 1.0]) == 0.5  # rises 1, 0, 1, 0
    assert figures.oscillation([1.0, 4.0, 1.0, 4.0, 1.0]) == 1.5  # grows with amplitude
    # the window start..stop includes both ends; steps touching NaN are left out
    assert figures.oscillation([3.0, 2.0, 2.5, 1.0], start=1, stop=2) == 0.5
    assert figures.oscillation([3.0, 2.0, 2.5, 1.0], start=2) == 0.0
    assert figures.oscillation([3.0, 4.0, np.nan, np.nan]) == 1.0
    assert math.isnan(figures.oscillation([np.nan, np.nan, 1.0]))
    # several seeds: the median of the per-seed means; shift-invariant, scales linearly
    rows = np.array([[3.0, 2.0, 2.5, 1.0], [3.0, 2.0, 1.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    assert figures.oscillation(rows) == pytest.approx(0.5 / 3)
    assert figures.oscillation(10 * rows + 7) == pytest.approx(5 / 3)
    # a literal loop over the definition, on a random walk
    walk = np.cumsum(np.random.default_rng(0).normal(size=50))
    slow = sum(max(walk[t + 1] - walk[t], 0.0) for t in range(10, 30)) / 20
    assert figures.oscillation(walk, 10, 30) == pytest.approx(slow)


def test_trend_is_the_least_squares_slope():
    t = np.arange(11.0)
    assert figures.trend(2.0 - 0.5 * t) == pytest.approx(-0.5)
    assert figures.trend(3.0 + 0.25 * t, start=4) == pytest.approx(0.25)
    # a V: down then up; the window after the turn rises
    v = np.abs(t - 5.0)
    assert figures.trend(v, start=5) == pytest.approx(1.0)
    assert figures.trend(v, stop=5) == pytest.approx(-1.0)
    assert figures.trend(np.where(t < 8, t, np.nan)) == pytest.approx(1.0)
    assert math.isnan(figures.trend([1.0, np.nan]))


def test_lead_from_and_rank_at():
    medians = {"psd": np.array([5.0, 6.0, 2.0, 1.0, 0.5]),
               "adam": np.array([5.0, 3.0, 2.5, 1.5, 1.0]),
               "l2l": np.array([5.0, 4.0, np.inf, np.inf, np.inf])}
    assert figures.lead_from(medians, "psd") == 2      # behind at t = 1, leads from 2
    assert figures.lead_from(medians, "adam") is None  # not lowest at the end
    assert figures.lead_from({"psd": medians["psd"]}, "psd") == 0
    assert [figures.rank_at(medians, "psd", t) for t in (0, 1, 2, 4)] == [1, 3, 1, 1]
    assert figures.rank_at(medians, "l2l", 4) == 3     # a diverged median is last
    assert figures.rank_at(medians, "adam", 1) == 1


def test_margin_over():
    table = [{"optimizer": "psd", "final_mean": 1.0}, {"optimizer": "adam", "final_mean": 1.5},
             {"optimizer": "sgd", "final_mean": 2.0}, {"optimizer": "l2l", "final_mean": 0.8},
             {"optimizer": "lbfgs", "final_mean": math.nan}]
    assert figures.margin_over(table) == pytest.approx(-0.2)   # trails L2L by 0.2
    hand = ["adam", "sgd", "lbfgs"]                            # NaN (all diverged) skipped
    assert figures.margin_over(table, others=hand) == pytest.approx(0.5)
    assert figures.margin_over(table, "adam", others=["sgd"]) == pytest.approx(0.5)
    assert math.isnan(figures.margin_over(table, "lbfgs"))


def _figure_data(datasets=("a", "b")):
    results = {d: [_run("psd", [3.0, 2.0, 1.0], 0, d), _run("psd", [3.0, 2.5, 2.0], 1, d),
                   _run("psd", [3.0, np.nan, np.nan], 2, d),
                   _run("adam", [3.0, 2.2, 1.5], 0, d)] for d in datasets}
    tables = {d: figures.experiments.summary_table(r) for d, r in results.items()}
    return figures.FigureData(2, {"horizon": 2}, [0, 1, 2], list(datasets),
                              {d: d.upper() for d in datasets}, results, tables)


def test_curves_of_and_median_curves():
    fd = _figure_data()
    assert figures.curves_of(fd, "a", "psd").shape == (3, 3)
    with pytest.raises(KeyError):
        figures.curves_of(fd, "a", "sgd")
    med = figures.median_curves(fd)
    assert set(med) == {"a", "b"} and set(med["a"]) == {"psd", "adam"}
    # the diverged seed counts +inf: medians of {2, 2.5, inf} and {1, 2, inf}
    assert med["a"]["psd"].tolist() == [3.0, 2.5, 2.0]
    assert med["b"]["adam"].tolist() == [3.0, 2.2, 1.5]


def test_load_figure_on_a_subset_of_datasets(monkeypatch, data_dir):
    seen = {}

    def fake_results(figure, seeds, datasets, **kw):
        seen.update(figure=figure, seeds=list(seeds), datasets=list(datasets), **kw)
        return {d: [_run("adam", [2.0, 1.0], s, d) for s in seeds] for d in datasets}

    monkeypatch.setattr(figures, "figure_results", fake_results)
    fd = figures.load_figure(5, n_seeds=2, horizon=7, workers=1, datasets=["cifar10"])
    assert seen["datasets"] == ["cifar10"] and seen["horizon"] == 7
    assert fd.datasets == ["cifar10"] and list(fd.tables) == ["cifar10"]
    assert fd.setting == dict(figures.experiments.FIGURES[5], horizon=7)
    assert figures.load_figure(5, n_seeds=1).datasets == list(figures.experiments.FIGURE_DATASETS)


def test_seconds_per_step_counts_batched_seeds_once():
    fd = _figure_data(("a",))
    for r in fd.results["a"]:
        r.wall_time, r.batched = (6.0, 3) if r.optimizer == "psd" else (1.0, 1)
    # psd: three seeds run together in one 6 s call; adam: one 1 s run; horizon 2
    assert figures.seconds_per_step(fd, "a", "psd") == pytest.approx(3.0)
    assert figures.seconds_per_step(fd, "a") == pytest.approx(3.5)
    with pytest.raises(KeyError):
        figures.seconds_per_step(fd, "a", "sgd")


def test_plot_figure_passes_panel_options():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fd = _figure_data(("a",))
    fig, axes, summaries = figures.plot_figure(fd, figsize=(8.0, 3.0))
    assert len(axes) == 1 and set(summaries["a"]) == {"psd", "adam"}
    assert tuple(fig.get_size_inches()) == (8.0, 3.0)
    plt.close(fig)


def test_figure_results_in_parallel_equal_serial(tmp_path, data_dir):
    """Learned optimizers run in worker processes give the serial curves, cached alike."""
    kw = dict(seeds=[0, 1], datasets=["faces"], horizon=2)
    serial = figures.figure_results(1, results_dir=tmp_path / "g1", learned_dir=tmp_path / "l1",
                                    workers=1, **kw)
    parallel = figures.figure_results(1, results_dir=tmp_path / "g2",
                                      learned_dir=tmp_path / "l2", workers=2, **kw)
    a, b = serial["faces"], parallel["faces"]
    assert [r.optimizer for r in a] == [r.optimizer for r in b]
    assert {"psd", "l2l"} <= {r.optimizer for r in a}
    for ra, rb in zip(a, b):
        assert ra.seed == rb.seed
        assert (ra.true_loss == rb.true_loss).all()
    assert len(list((tmp_path / "l2").glob("*.json"))) == 4  # 2 learned x 2 seeds


def test_cli_rejects_figure_and_all_together():
    import pytest

    with pytest.raises(SystemExit):
        figures.main(["--figure", "1", "--all"])
    with pytest.raises(SystemExit):
        figures.main([])


def _same_runs(a, b):
    assert [(r.optimizer, r.seed) for r in a] == [(r.optimizer, r.seed) for r in b]
    for ra, rb in zip(a, b):
        assert np.array_equal(ra.true_loss, rb.true_loss, equal_nan=True)
        assert np.array_equal(ra.minibatch_loss, rb.minibatch_loss, equal_nan=True)


def test_grid_on_a_dask_cluster_equals_in_process(tmp_path, data_dir):
    """A 2-worker LocalCluster on the loopback interface runs a small grid bit for bit.

    The cluster is reached by its address, as ``--scheduler ADDRESS`` does; the
    driver writes the same cache files as an in-process run.
    """
    distributed = pytest.importorskip("distributed")
    kw = dict(seeds=[0, 1], datasets=["faces"], horizon=3)
    serial = figures.figure_results(1, results_dir=tmp_path / "g1", learned_dir=tmp_path / "l1",
                                    workers=1, **kw)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        remote = figures.figure_results(1, results_dir=tmp_path / "g2",
                                        learned_dir=tmp_path / "l2", executor="dask",
                                        scheduler=cluster.scheduler_address, **kw)
        ran = {name for name, prefix in cluster.scheduler.task_prefixes.items()
               if prefix.all_durations.get("compute", 0) > 0}
    assert ran == {"compute_specs", "learned_runs"}   # on the cluster's workers
    _same_runs(serial["faces"], remote["faces"])
    for a, b in (("g1", "g2"), ("l1", "l2")):
        assert sorted(p.name for p in (tmp_path / a).iterdir()) == \
            sorted(p.name for p in (tmp_path / b).iterdir())


def test_grid_tasks_cover_the_pending_runs_and_weigh_them(tmp_path, data_dir):
    panels = [(1, ["faces"], 2), (2, ["faces"], 2)]
    tasks = figures.grid_tasks(panels, [0, 1], tmp_path / "g", tmp_path / "l")
    kinds = [t.kind for t in tasks]
    assert kinds.count("psd") == kinds.count("l2l") == 2
    assert kinds.count("baseline") == 2 * 7 * 2     # one task per baseline run
    costs = [t.cost() for t in tasks]
    assert costs == sorted(costs, reverse=True) and min(costs) > 0
    # the larger net costs more, PSD more than L2L on the same panel
    psd = {t.dim: t.cost() for t in tasks if t.kind == "psd"}
    l2l_ = {t.dim: t.cost() for t in tasks if t.kind == "l2l"}
    assert len(psd) == 2 and max(psd) > min(psd) and psd[max(psd)] > psd[min(psd)]
    assert all(psd[d] > l2l_[d] for d in psd)
    figures.run_tasks(tasks[-3:], workers=1, progress=False)
    left = figures.grid_tasks(panels, [0, 1], tmp_path / "g", tmp_path / "l")
    assert len(left) == len(tasks) - 3


def test_default_dask_executor_starts_and_stops_a_local_cluster():
    pytest.importorskip("distributed")
    with figures.grid_executor("dask", workers=1) as ex:
        assert ex.submit(max, 2, 5).result() == 5
    with pytest.raises(ValueError, match="executor"):
        with figures.grid_executor("ray"):
            pass


def test_makespan_schedules_longest_first():
    assert figures.makespan([3, 3, 2, 2, 2], 2) == 7   # greedy: 3+2+2 | 3+2 (not optimal 6)
    assert figures.makespan([5, 1, 1], 1) == 7
    assert figures.makespan([4, 4, 4], 8) == 4


# ------------------------------------------------------------------ extra rows
def _outer_run(root, name, best):
    folder = root / figures.OUTER_RUNS[name]
    folder.mkdir(parents=True)
    policy = LSTMPolicy(PolicyConfig(hidden_size=4), generator=torch.Generator().manual_seed(1))
    save_policy(folder / f"{name}.pt", policy, FeatureConfig())
    figures.record.atomic_write_json(folder / "history.json", {"best": {"meta_loss": best}})
    return folder / f"{name}.pt"


def test_outer_policy_is_the_run_best_on_validation(tmp_path):
    assert figures.outer_policy(tmp_path) is None
    _outer_run(tmp_path, "pi_bptt", 218.8)
    es = _outer_run(tmp_path, "pi_es", 213.5)
    assert figures.outer_policy(tmp_path) == ("pi_es", es)
    names, pis = figures.default_extras(tmp_path)
    assert names == figures.EXTRA_BASELINES and pis == {"pi_es": es}
    # a run without a finite validation score is never chosen
    figures.record.atomic_write_json(es.parent / "history.json", {"best": {"meta_loss": None}})
    assert figures.outer_policy(tmp_path)[0] == "pi_bptt"


def test_extra_rows_are_cached_under_their_own_names(tmp_path, data_dir):
    pi = _outer_run(tmp_path, "pi_es", 1.0)
    panels = [(1, ["faces"], 2)]
    tasks = figures.grid_tasks(panels, [0, 1], tmp_path / "g", tmp_path / "l",
                               extras=["cg_pr_wolfe"], extra_learned={"pi_es": pi},
                               paper_rows=False)
    # the extra rows only: one baseline task per seed and one batched π task
    assert sorted(t.kind for t in tasks) == ["baseline", "baseline", "psd"]
    assert any("pi_es" in t.label for t in tasks)
    res = figures.figure_results(1, [0, 1], ["faces"], horizon=2, results_dir=tmp_path / "g",
                                 learned_dir=tmp_path / "l", workers=1,
                                 extras=["cg_pr_wolfe"], extra_learned={"pi_es": pi})
    names = [r.optimizer for r in res["faces"]]
    assert names.count("pi_es") == names.count("cg_pr_wolfe") == names.count("psd") == 2
    assert len(names) == 2 * 11
    table = figures.experiments.summary_table(res["faces"])
    # the π of the extra row is not hand-engineered; the line-search baseline is
    order = figures.hand_engineered_order(table)
    assert "pi_es" not in order and "cg_pr_wolfe" in order and len(order) == 8
    # a second call computes nothing: every run is cached
    assert figures.grid_tasks(panels, [0, 1], tmp_path / "g", tmp_path / "l",
                              extras=["cg_pr_wolfe"], extra_learned={"pi_es": pi}) == []


def test_tuning_sensitivity_needs_the_per_dataset_tuning(tmp_path, data_dir):
    fd = figures.FigureData(1, dict(figures.experiments.FIGURES[1], horizon=2), [0], ["faces"],
                            {"faces": "faces"}, {"faces": []}, {"faces": []})
    with pytest.raises(FileNotFoundError, match="tune --dataset faces"):
        figures.tuning_sensitivity(fd, tmp_path / "none", tmp_path / "g", workers=1)
    fd2 = figures.FigureData(2, dict(figures.experiments.FIGURES[2]), [0], ["faces"],
                             {"faces": "faces"}, {"faces": []}, {"faces": []})
    with pytest.raises(ValueError, match="48-48"):
        figures.tuning_sensitivity(fd2, tmp_path / "none", tmp_path / "g", workers=1)


def test_tuning_sensitivity_reruns_the_baselines_with_the_dataset_tuning(tmp_path, data_dir):
    import json

    kw = dict(seeds=[0], datasets=["faces"], horizon=2)
    res = figures.figure_results(1, results_dir=tmp_path / "g", learned_dir=tmp_path / "l",
                                 workers=1, **kw)
    tables = {d: figures.experiments.summary_table(r) for d, r in res.items()}
    fd = figures.FigureData(1, dict(figures.experiments.FIGURES[1], horizon=2), [0],
                            ["faces"], {"faces": "faces"}, res, tables)
    tuned = {o: figures.experiments.default_hparams(o) for o in figures.BASELINES}
    tuned["sgd"] = {"lr": 1e-6}                      # a tuning that all but stops SGD
    (tmp_path / "t" / "faces").mkdir(parents=True)
    (tmp_path / "t" / "faces" / "chosen.json").write_text(json.dumps({"hparams": tuned}))
    ts = figures.tuning_sensitivity(fd, tmp_path / "t", tmp_path / "g", workers=1)
    own = {r.optimizer: r for r in ts.own["faces"]}
    mnist = {r.optimizer: r for r in res["faces"]}
    assert own["sgd"].hparams["lr"] == 1e-6 and ts.hparams["faces"]["sgd"]["own"] == {"lr": 1e-6}
    assert abs(own["sgd"].true_loss[-1] - own["sgd"].true_loss[0]) < 1e-4
    # an unchanged tuning gives the same curve; PSD's runs are shared
    assert np.array_equal(own["adam"].true_loss, mnist["adam"].true_loss)
    assert own["psd"] is mnist["psd"]
    assert set(ts.psd_ranks()) == {"faces"}


def _same_rows(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb)
        for k in ra:
            x, y = ra[k], rb[k]
            assert x == y or (isinstance(x, float) and np.isnan(x) and np.isnan(y)), (ra, k)


def test_training_setting_gives_the_committed_comparison(data_dir):
    """``--training`` (the setting "training" of the figure runner) reads the runs behind
    results/psd/comparison.json from the caches and summarises them into its rows, bit
    for bit (the comparison was written by a script before the runner had the setting)."""
    comp = record.read_json(figures.COMPARISON_FILE)
    if not comp:
        pytest.skip("no committed comparison")
    seeds = comp["seeds"]
    if figures.grid_tasks([("training", ("mnist",), None)], seeds):
        pytest.skip("the runs behind the comparison are not all in the caches")
    runs = figures.training_comparison(seeds, workers=1)
    _same_rows(experiments.summary_table(runs), comp["rows"])
    assert {r.optimizer for r in runs} == {*BASELINES, "psd", "l2l"}


def test_training_command_line_checks(capsys, tmp_path):
    for argv, msg in ((["--figure", "1", "--out", str(tmp_path / "c.json")], "--out needs"),
                      (["--training", "--psd", str(tmp_path / "none.pt")], "no file"),
                      (["--all", "--horizon", "5"], "apply to --figure")):
        with pytest.raises(SystemExit) as e:
            figures.main(argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err
    with pytest.raises(ValueError, match="Invalid figure"):
        experiments.setting_of("train")
    assert experiments.setting_of("training")["horizon"] == 400
