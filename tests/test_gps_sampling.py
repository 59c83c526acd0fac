"""GPS's sampled rollouts split among workers: per-trajectory streams give the same samples
however they are split, in this process, on local processes or on a Dask cluster."""

import dataclasses

import numpy as np
import pytest
import torch

from l2o import gps, parallel
from l2o.features import FeatureConfig
from l2o.gps import ConvolutionalGPS, GPSConfig, GPSNumericalError
from tests.test_gps import CFG, PCFG, TEACHER, tiny_problem

PER_TRAJ = dataclasses.replace(CFG, sample_streams="per_trajectory", num_samples=5)


def make(executor=None, chunks=None, cfg=PER_TRAJ):
    return ConvolutionalGPS(tiny_problem(), cfg, FeatureConfig(), PCFG, TEACHER,
                            executor=executor, chunks=chunks)


def assert_same_samples(a, b):
    np.testing.assert_array_equal(a.true_loss, b.true_loss)
    np.testing.assert_array_equal(a.minibatch_loss, b.minibatch_loss)
    assert a.diverged == b.diverged and len(a.groups) == len(b.groups) == 4
    for ga, gb in zip(a.groups, b.groups):
        for name in ("X", "U", "grad"):
            np.testing.assert_array_equal(getattr(ga, name), getattr(gb, name), err_msg=name)
        assert torch.equal(ga.O, gb.O)


def one_iteration_samples(g):
    """The teacher's samples (initialisation), then ψ's samples of iteration 0."""
    stored = gps._coord_choice(g.problem, g.cfg.coords_per_group, np.random.default_rng(0))
    g.initialize()
    teacher = g._draw(0, stored, teacher=g.teacher)
    psi = g._draw(1, stored, psis=[v.psi for v in g.groups])
    return teacher, psi


def test_splitting_the_rollouts_does_not_change_the_samples():
    whole = one_iteration_samples(make())
    for chunks in (2, 5):
        parts = one_iteration_samples(make(chunks=chunks))
        for a, b in zip(whole, parts):
            assert_same_samples(a, b)


def test_trajectories_have_their_own_streams():
    seeds = gps.trajectory_seeds(3, 1, 0, 4)
    assert len(set(seeds)) == 4 and all(0 <= s < 2**63 for s in seeds)
    assert gps.trajectory_seeds(3, 1, 1, 4)[0] != seeds[0]     # a new draw each iteration
    assert gps.trajectory_seeds(3, 0, 0, 4)[0] != seeds[0]     # teacher vs ψ
    # a trajectory's samples are the same alone as among others
    g = make()
    g.initialize()
    stored = gps._coord_choice(g.problem, g.cfg.coords_per_group, np.random.default_rng(1))
    psis = [v.psi for v in g.groups]
    args = (g.problem, g.cost, g.cfg.horizon, g.fcfg)
    both = gps.sample_trajectories(*args, seeds[:2], stored, psis=psis)
    alone = gps.sample_trajectories(*args, seeds[1:2], stored, psis=psis)
    np.testing.assert_array_equal(both.true_loss[1], alone.true_loss[0])
    assert not np.array_equal(both.true_loss[0], both.true_loss[1])


def test_local_processes_give_the_in_process_iteration():
    serial = make()
    serial.run(num_iterations=1)
    with parallel.executor("local", workers=2) as ex:
        pooled = make(executor=ex, chunks=2)
        pooled.run(num_iterations=1)
    assert serial.history[0]["psi_cost"] == pooled.history[0]["psi_cost"]
    assert serial.history[0]["pi_cost"] == pooled.history[0]["pi_cost"]
    for (k, v), (_, w) in zip(serial.policy.state_dict().items(),
                              pooled.policy.state_dict().items()):
        assert torch.equal(v, w), k


def test_samples_on_a_dask_cluster_equal_in_process():
    """A 2-worker LocalCluster on the loopback interface draws the same samples."""
    distributed = pytest.importorskip("distributed")
    whole = one_iteration_samples(make())
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            parallel.executor("dask", scheduler=cluster.scheduler_address) as ex:
        remote = one_iteration_samples(make(executor=ex, chunks=2))
        ran = {name for name, prefix in cluster.scheduler.task_prefixes.items()
               if prefix.all_durations.get("compute", 0) > 0}
    assert ran == {"sample_trajectories"}   # on the cluster's workers
    for a, b in zip(whole, remote):
        assert_same_samples(a, b)


def test_a_shared_stream_cannot_be_split():
    with pytest.raises(ValueError, match="per_trajectory"):
        make(chunks=2, cfg=CFG)
    with pytest.raises(ValueError, match="chunks"):
        make(chunks=0)
    with pytest.raises(ValueError, match="sample_streams"):
        GPSConfig(sample_streams="per_worker")


def test_all_diverged_parts_are_reported_once_merged():
    g = make()
    g.initialize()
    stored = gps._coord_choice(g.problem, g.cfg.coords_per_group, np.random.default_rng(1))
    seeds = gps.trajectory_seeds(3, 1, 0, 2)
    bad = [dataclasses.replace(v.psi, k=v.psi.k + 1e300) for v in g.groups]
    args = (g.problem, g.cost, g.cfg.horizon, g.fcfg)
    part = gps.sample_trajectories(*args, seeds, stored, psis=bad)   # a part: no error
    assert part.diverged == 2 and part.groups[0].X.shape[0] == 0
    with pytest.raises(GPSNumericalError, match="every sampled trajectory"):
        gps.merge_samples([part, part])


def test_cli_asks_for_per_trajectory_streams(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        gps.main(["train", "--out", str(tmp_path / "r"), "--executor", "local"])
    assert e.value.code == 2
    assert "--sample-streams per_trajectory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gps.main(["train", "--out", str(tmp_path / "r"), "--scheduler", "tcp://x:1"])
    assert "--executor dask" in capsys.readouterr().err
