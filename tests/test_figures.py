"""Figure runs of the learned optimizers are cached by policy-file hash."""

import torch

from l2o import figures
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
