"""Issue 15: the learned optimizers and the tools under bad input.

One test (or a few) per item of the issue; each failed on commit bc08979.  Plus two
guards that held before and must keep holding: the shipped optimizers take
bit-identical steps on finite inputs, and the shipped files are unchanged.
"""

import hashlib
import json
import logging
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from l2o import baselines, experiments, figures, gps, l2l
from l2o import data as l2o_data
from l2o.features import FeatureConfig
from l2o.gps import ConvolutionalGPS, GPSConfig, PolicyFileError, load_policy, save_policy
from l2o.l2l import L2LOptimizer
from l2o.policy import LSTMPolicy, PolicyConfig, PredictedStepDescent
from l2o.problems import MLPProblem

ROOT = Path(__file__).resolve().parents[1]
PSD_FILE = ROOT / "results" / "psd" / "psd_mnist48.pt"
L2L_FILE = ROOT / "results" / "l2l" / "l2l_mnist48.pt"


# ------------------------------------------------------------------------- helpers
class RunsCode:
    """Pickles as a call of ``os.system`` that would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def small_policy(fcfg=None, seed=0):
    """A fitted float32 policy with 6 hidden units (what save_policy stores)."""
    pol = LSTMPolicy(PolicyConfig(hidden_size=6), generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    for gid in range(4):
        pol.fit_normalization(torch.randn(40, 3, generator=g) * (gid + 1), gid)
        pol.set_output_scale(gid, 0.01 * (gid + 1))
    if fcfg is not None:
        pol.feature_config = fcfg
    return pol


def mlp(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
    xb = torch.randn(12, 5, generator=g, dtype=torch.float64).to(dtype)
    return model, xb, torch.randint(0, 3, (12,), generator=g)


def closure_for(model, opt, xb, yb, scale=1.0, bad=None):
    """The usual closure; ``bad(loss)`` may replace the loss or spoil the gradients."""
    def closure():
        opt.zero_grad()
        loss = scale * F.cross_entropy(model(xb), yb)
        loss.backward()
        return bad(loss) if bad is not None else loss
    return closure


def tiny_gps(ckpt_dir):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g)
    y = (x[:, 0] > 0).long()
    problem = MLPProblem(x, y, n_hidden=3, n_classes=2, batch_size=8, init_std=0.1, name="toy")
    cfg = GPSConfig(horizon=6, num_samples=2, num_iterations=2, inner_iterations=1,
                    coords_per_group=4, cost_subset=0, policy_steps=2, policy_batch=4,
                    pretrain_steps=2, eval_samples=1, seed=1)
    return ConvolutionalGPS(problem, cfg, FeatureConfig(), PolicyConfig(hidden_size=4),
                            {"lr": 0.2, "momentum": 0.5}, checkpoint_dir=ckpt_dir)


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


# ------------------------------------------------- 1. files that cannot execute code
def test_policy_file_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "policy.pt"
    torch.save({"format": "l2o-psd-v1", "policy": RunsCode(marker), "policy_config": {},
                "feature_config": {}, "meta": {}}, bad)
    with pytest.raises(PolicyFileError) as exc:
        load_policy(bad)
    assert not marker.exists(), "loading the policy file ran code from it"
    assert "Python objects" in str(exc.value)
    # the same file as an L2L net or a GPS checkpoint: refused, nothing runs either
    with pytest.raises(l2l.L2LCheckpointError):
        l2l.load_l2l(bad)
    (tmp_path / "ck").mkdir()
    torch.save({"config": {}, "policy": RunsCode(marker)}, tmp_path / "ck" / "checkpoint.pt")
    with pytest.raises(ValueError, match="refusing"):
        tiny_gps(tmp_path / "ck").resume()
    assert not marker.exists(), "resuming the GPS checkpoint ran code from it"


def test_gps_checkpoints_are_safe_and_old_ones_still_resume(tmp_path):
    full = tiny_gps(tmp_path / "full")
    full.run()
    part = tiny_gps(tmp_path / "part")
    part.run(num_iterations=1)
    ck = tmp_path / "part" / "checkpoint.pt"
    blob = torch.load(ck, weights_only=True)  # tensors and plain values only
    assert blob["format"] == gps.CHECKPOINT_FORMAT
    # an old checkpoint (numpy arrays and LQG containers pickled as objects) resumes
    old = gps.from_safe(blob)
    old.pop("format")
    assert isinstance(old["groups"][0]["K"], np.ndarray)
    torch.save(old, ck)
    resumed = tiny_gps(tmp_path / "part")
    assert resumed.resume() and resumed.iteration == 1
    resumed.run()
    for a, b in zip(full.policy.state_dict().values(), resumed.policy.state_dict().values()):
        assert torch.equal(a, b)
    torch.load(ck, weights_only=True)  # rewritten in the safe format


# ---------------------------------------------- 2. a non-finite loss or gradient
@pytest.mark.parametrize("spoil", ["loss", "gradient"])
def test_psd_skips_a_step_with_a_non_finite_loss_or_gradient(spoil, caplog):
    policy, fcfg, _ = load_policy(PSD_FILE)
    model, xb, yb = mlp()
    opt = PredictedStepDescent(model.parameters(), policy, fcfg)

    def bad(loss):
        if spoil == "loss":
            return loss + math.inf
        for p in model.parameters():
            p.grad[0] = math.nan
        return loss

    for _ in range(3):
        opt.step(closure_for(model, opt, xb, yb))
    before = params_of(model)
    memory = {id(p): (s["h"].clone(), s["c"].clone(), s["step"], s["tracker"].t)
              for p, s in opt.state.items()}
    with caplog.at_level(logging.WARNING, logger="l2o.policy"):
        opt.step(closure_for(model, opt, xb, yb, bad=bad))
        opt.step(closure_for(model, opt, xb, yb, bad=bad))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    for p, s in opt.state.items():
        h, c, step, t = memory[id(p)]
        assert torch.equal(s["h"], h) and torch.equal(s["c"], c)
        assert s["step"] == step and s["tracker"].t == t
    assert opt.skipped_steps == 2
    assert sum("skipped a step" in r.getMessage() for r in caplog.records) == 1  # once
    for _ in range(3):  # later steps continue, finite
        opt.step(closure_for(model, opt, xb, yb))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


# --------------------------------------------- 3. the policy carries its features
def test_policy_file_carries_its_features_and_a_mismatch_is_an_error(tmp_path):
    rms = FeatureConfig(grad_scale="rms")
    save_policy(tmp_path / "rms.pt", small_policy(rms), rms)
    policy, fcfg, _ = load_policy(tmp_path / "rms.pt")
    assert fcfg == rms and policy.feature_config == rms
    model, _, _ = mlp()
    assert PredictedStepDescent(model.parameters(), policy).feature_config == rms
    with pytest.raises(ValueError, match="does not match"):
        PredictedStepDescent(model.parameters(), policy, FeatureConfig())
    with pytest.raises(ValueError, match="differs"):
        save_policy(tmp_path / "other.pt", policy, FeatureConfig())


def test_from_pretrained_loads_the_shipped_files(tmp_path, monkeypatch):
    model, xb, yb = mlp()
    opt = PredictedStepDescent.from_pretrained(model.parameters())
    assert opt.feature_config == load_policy(PSD_FILE)[1]
    opt.step(closure_for(model, opt, xb, yb))
    opt = L2LOptimizer.from_pretrained(model.parameters())
    opt.step(closure_for(model, opt, xb, yb))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(PolicyFileError, match="no policy file"):
        PredictedStepDescent.from_pretrained(model.parameters(), tmp_path / "none.pt")
    # nowhere to be found: one clear message that says where it looked and what to do
    monkeypatch.setattr(experiments, "ROOT", tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("L2O_PSD_POLICY", raising=False)
    monkeypatch.delenv("L2O_L2L_NET", raising=False)
    with pytest.raises(PolicyFileError, match="L2O_PSD_POLICY"):
        PredictedStepDescent.from_pretrained(model.parameters())
    with pytest.raises(l2l.L2LCheckpointError, match="L2O_L2L_NET"):
        L2LOptimizer.from_pretrained(model.parameters())
    monkeypatch.setenv("L2O_PSD_POLICY", str(PSD_FILE))
    PredictedStepDescent.from_pretrained(model.parameters())


# ------------------------------------------------------------- 4. optimizer state
@pytest.mark.parametrize("which", ["psd", "l2l"])
def test_state_dict_round_trip_with_float64_params_and_weights_only(which, tmp_path):
    if which == "psd":
        policy, fcfg, _ = load_policy(PSD_FILE)
    else:
        net = l2l.load_l2l(L2L_FILE)

    def make(ps):
        return PredictedStepDescent(ps, policy, fcfg) if which == "psd" else L2LOptimizer(ps, net)

    model, xb, yb = mlp(torch.float64)
    twin, _, _ = mlp(torch.float64)
    opt, opt_twin = make(model.parameters()), make(twin.parameters())
    for _ in range(3):
        opt.step(closure_for(model, opt, xb, yb))
        opt_twin.step(closure_for(twin, opt_twin, xb, yb))
    torch.save(opt.state_dict(), tmp_path / "state.pt")
    restored = make(twin.parameters())
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    for _ in range(2):
        opt.step(closure_for(model, opt, xb, yb))
        restored.step(closure_for(twin, restored, xb, yb))
    for a, b in zip(model.parameters(), twin.parameters()):
        assert a.dtype == torch.float64 and torch.equal(a, b)


# --------------------------------------------------------- 5. damaged policy files
def test_load_policy_rejects_non_finite_weights_and_bad_statistics(tmp_path):
    save_policy(tmp_path / "ok.pt", small_policy(FeatureConfig()), FeatureConfig())
    blob = torch.load(tmp_path / "ok.pt", weights_only=True)
    for key, value, message in (("lstms.0.weight_ih_l0", math.nan, "non-finite"),
                                ("heads.2.bias", math.inf, "non-finite"),
                                ("obs_std", 0.0, "obs_std must be positive"),
                                ("output_scale", -1.0, "output_scale must be positive")):
        bad = {**blob, "policy": {k: v.clone() for k, v in blob["policy"].items()}}
        bad["policy"][key].view(-1)[0] = value
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(PolicyFileError, match=message):
            load_policy(tmp_path / "bad.pt")


# ------------------------------------------------------------------------ 6. tune
def test_a_partial_tune_never_overwrites_or_mixes_the_committed_choice(tmp_path):
    committed = tmp_path / "tuning"
    committed.mkdir()
    (committed / "chosen.json").write_bytes((ROOT / "results/tuning/chosen.json").read_bytes())
    before = (committed / "chosen.json").read_bytes()
    problem = MLPProblem(torch.randn(40, 4, dtype=torch.float64),
                         torch.randint(0, 3, (40,)), n_hidden=3, n_classes=3, batch_size=8,
                         init_std=0.3, name="MNIST")
    with pytest.raises(ValueError, match="another setting"):
        experiments.tune(problem, names=["sgd"], seeds=[1000], horizon=5, out_dir=committed,
                         grids={"sgd": [{"lr": 0.1}]}, workers=1, progress=False)
    assert (committed / "chosen.json").read_bytes() == before


def test_tune_cli_writes_a_run_folder_and_updates_only_when_asked(tmp_path, monkeypatch, capsys):
    committed = tmp_path / "tuning"
    committed.mkdir()
    (committed / "chosen.json").write_bytes((ROOT / "results/tuning/chosen.json").read_bytes())
    before = (committed / "chosen.json").read_bytes()
    monkeypatch.setattr(experiments, "TUNING_DIR", committed)
    calls = []

    def fake_tune(**kw):
        calls.append(kw)
        return {"chosen": {"sgd": {"lr": 3.0}}, "details": {"sgd": {
            "mean_meta_loss": 1.0, "at_grid_edge": []}}, "provenance": {"wall_time_s": 0.0}}

    monkeypatch.setattr(experiments, "tune", fake_tune)
    argv = ["tune", "--optimizers", "sgd", "--seeds", "1000", "--horizon", "5", "--no-progress"]
    assert experiments.main(argv) == 0
    out = Path(calls[0]["out_dir"])
    assert out.parent == committed / "runs" and out.name.endswith("_T5")
    assert (committed / "chosen.json").read_bytes() == before
    # --update-chosen with another horizon: refused before any run
    with pytest.raises(SystemExit) as exc:
        experiments.main(argv + ["--update-chosen"])
    assert exc.value.code == 2 and "another setting" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        experiments.main(["tune", "--horizon", "0"])
    assert exc.value.code == 2
    assert len(calls) == 1 and (committed / "chosen.json").read_bytes() == before


# ------------------------------------------------------------------------ 7. roles
def roles_of(params):
    opt = PredictedStepDescent(params, small_policy(FeatureConfig()))
    return [r for _, r in opt.roles()]


def test_roles_of_a_bias_free_head_and_a_head_registered_first():
    bias_free = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3, bias=False))
    assert roles_of(bias_free.parameters()) == ["hidden_weight", "hidden_bias", "output_weight"]

    class HeadFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(8, 3)
            self.body = nn.Linear(5, 8)

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))

    assert roles_of(HeadFirst().parameters()) == ["output_weight", "output_bias",
                                                  "hidden_weight", "hidden_bias"]


def test_roles_with_normalisation_layers_are_named_in_one_warning(caplog):
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3),
                          nn.LayerNorm(3))
    with caplog.at_level(logging.WARNING, logger="l2o.policy"):
        roles = roles_of(model.named_parameters())
    assert roles == ["hidden_weight", "hidden_bias", "hidden_bias", "hidden_bias",
                     "output_weight", "output_bias", "hidden_bias", "hidden_bias"]
    warnings = [r.getMessage() for r in caplog.records if "guessed parameter roles" in r.getMessage()]
    assert len(warnings) == 1
    for name in ("'1.weight'", "'1.bias'", "'4.weight'", "'4.bias'"):
        assert name in warnings[0]
    # an explicit role settles it, without a warning
    caplog.clear()
    groups = [{"params": [p for n, p in model.named_parameters() if not n.startswith(("1.", "4."))]},
              {"params": list(model[1].parameters()) + list(model[4].parameters()),
               "role": "hidden_bias"}]
    with caplog.at_level(logging.WARNING, logger="l2o.policy"):
        roles_of(groups)
    assert not [r for r in caplog.records if "guessed" in r.getMessage()]


# ---------------------------------------------------------- 8. hyperparameters
def test_make_optimizer_validates_every_optimizer_alike():
    accepted = []
    for name in baselines.BASELINES:
        for lr in (math.nan, math.inf, -1.0, "0.1", True):
            try:
                baselines.make_optimizer(name, [torch.zeros(2, requires_grad=True)],
                                         tuned=False, lr=lr)
                accepted.append((name, lr))
            except ValueError as exc:
                assert str(exc).startswith("Invalid learning rate: "), (name, lr, exc)
    assert not accepted, f"accepted invalid learning rates: {accepted}"
    for kw, message in (({"momentum": 1.5}, "Invalid momentum value: 1.5"),
                        ({"momentum": math.nan}, "Invalid momentum value: nan"),
                        ({"weight_decay": -1.0}, "Invalid weight_decay value")):
        with pytest.raises(ValueError, match=message):
            baselines.make_optimizer("momentum", [torch.zeros(2)], tuned=False, **kw)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1"):
        baselines.make_optimizer("adam", [torch.zeros(2)], tuned=False, betas=(0.9, 1.0))


# ------------------------------------------------------------------------ 9. CLIs
@pytest.fixture
def nothing_runs(monkeypatch):
    """Every expensive entry point fails the test if a command reaches it."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the command started work instead of rejecting its arguments")

    for module, name in ((experiments, "run_grid"), (experiments, "tune"),
                         (figures, "figure_results"), (figures, "run_all"),
                         (l2o_data, "make_problem"), (l2l, "meta_train"),
                         (gps.ConvolutionalGPS, "run")):
        monkeypatch.setattr(module, name, forbidden)


def test_cli_errors_are_one_line_exit_2_and_no_work(tmp_path, capsys, nothing_runs):
    bad = [
        (experiments.main, ["grid", "--figure", "1", "--optimizers", "nosuch"]),
        (experiments.main, ["grid", "--figure", "1", "--horizon", "-5"]),
        (experiments.main, ["grid", "--figure", "1", "--eval-every", "0"]),
        (experiments.main, ["grid", "--figure", "1", "--datasets", "nosuch"]),
        (experiments.main, ["grid", "--figure", "1", "--workers", "0"]),
        (experiments.main, ["grid", "--figure", "1", "--seeds", "-1"]),
        (experiments.main, ["tune", "--horizon", "-3"]),
        (experiments.main, ["tune", "--workers", "-2"]),
        (experiments.main, ["tune", "--optimizers", "nosuch"]),
        (figures.main, ["--figure", "1", "--workers", "0"]),
        (gps.main, ["train", "--resume", "--out", str(tmp_path / "nothing")]),
        (gps.main, ["train", "--out", str(tmp_path / "x"), "--kl-step", "-1"]),
        (gps.main, ["train", "--out", str(tmp_path / "x"), "--dataset", "nosuch"]),
        (l2l.main, ["train", "--epochs", "0", "--out", str(tmp_path / "l2l")]),
        (l2l.main, ["train", "--epochs", "3", "--resume", "--out", str(tmp_path / "l2l")]),
        (l2l.main, ["train", "--epochs", "3", "--lr", "nan", "--out", str(tmp_path / "l2l")]),
        (l2o_data.main, ["download", "mnist", "--timeout", "0"]),
    ]
    for main, argv in bad:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2, (argv, exc.value.code)
        lines = [line for line in err.splitlines() if "error:" in line]
        assert len(lines) == 1 and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "l2l" / "l2l_mnist48.pt").exists()


def test_data_info_reports_a_corrupt_npz(tmp_path, capsys):
    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04 truncated")
    assert l2o_data.main(["info", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "mnist" in out and "corrupt" in out


def test_download_error_is_printed_once(tmp_path):
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "l2o.data", "download", "mnist", "--data-dir", str(tmp_path),
         "--base-url", f"http://127.0.0.1:{port}/", "--quiet", "--timeout", "5"],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 1
    assert proc.stderr.count("Could not download") == 1, proc.stderr


# --------------------------------------------------------------- 10. loss scale
def test_loss_scale_non_invariance_is_measured_and_documented():
    policy, fcfg, _ = load_policy(PSD_FILE)
    steps = []
    for scale in (1.0, 10.0):
        model, xb, yb = mlp()
        opt = PredictedStepDescent(model.parameters(), policy, fcfg)
        for _ in range(3):
            opt.step(closure_for(model, opt, xb, yb, scale=scale))
        steps.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert not torch.equal(steps[0], steps[1])  # what the README documents
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Robustness", 1)[1].split("\n## ", 1)[0]
    measured = json.loads((ROOT / "results/loss_scale/loss_scale.json").read_text())
    for name in ("psd", "l2l", "adam"):
        for value in measured["meta_loss"][name].values():
            assert f"{value:.2f}" in section, (name, value)
    assert "Loss scale" in PredictedStepDescent.__doc__ and "Loss scale" in L2LOptimizer.__doc__


# ------------------------------------------------- guards: numbers and files unchanged
def test_shipped_optimizers_take_the_same_steps():
    """Replays tests/data/optimizer_reference.pt (written on bc08979).

    Equal within float round-off: the fused step (issue 16) reorders float operations.
    The Predicted Step Descent policy shipped at bc08979 is kept in tests/data.
    """
    sys.path.insert(0, str(ROOT / "tests" / "data"))
    try:
        import make_optimizer_reference as ref
    finally:
        sys.path.pop(0)
    want = torch.load(ROOT / "tests/data/optimizer_reference.pt", weights_only=True)
    net = l2l.load_l2l(L2L_FILE)
    for tag, rel in (("psd", "tests/data/psd_bc08979.pt"),
                     ("psd_rms", "results/psd_rms/psd_mnist48.pt"), ("l2l", None)):
        for dtype in (torch.float32, torch.float64):
            key = f"{tag}_{str(dtype).split('.')[-1]}"
            if rel is None:
                got = ref.run(lambda ps: L2LOptimizer(ps, net), dtype)
            else:
                policy, _, _ = load_policy(ROOT / rel)
                got = ref.run(lambda ps: PredictedStepDescent(ps, policy), dtype)
            torch.testing.assert_close(got, want[key], rtol=1e-5, atol=1e-6, msg=key)


def test_shipped_files_are_unchanged_and_load_safely():
    expected = {
        "tests/data/psd_bc08979.pt": "9cf56d9376c6b9ff",
        "results/psd_rms/psd_mnist48.pt": "5d49459f36542dcf",
        "results/psd_rms_small_kl/psd_mnist48.pt": "9176b1451af96961",
        "results/l2l/l2l_mnist48.pt": "6db0968f1755dc07",
    }
    for rel, sha in expected.items():
        path = ROOT / rel
        assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(sha), rel
        torch.load(path, weights_only=True)
    torch.load(PSD_FILE, weights_only=True)   # the shipped policy, whichever it is
    assert figures.PSD_FILE == PSD_FILE and figures.L2L_FILE == L2L_FILE
