"""l2o.record: atomic writes, the JSON convention for non-finite numbers, provenance."""

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from l2o import record


# ------------------------------------------------------------------ atomic writes
@pytest.mark.parametrize("write", ["text", "json", "torch"])
def test_atomic_write_creates_parents_and_leaves_no_part(tmp_path, write):
    path = tmp_path / "a" / "b" / "out.x"
    if write == "text":
        record.atomic_write_text(path, "hello")
        assert path.read_text() == "hello"
    elif write == "json":
        record.atomic_write_json(path, {"x": (1, 2)})
        assert json.loads(path.read_text()) == {"x": [1, 2]}
    else:
        record.atomic_torch_save(path, {"w": torch.arange(3)})
        assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3))
    assert os.listdir(path.parent) == ["out.x"]


def test_failed_rename_keeps_the_old_file_and_no_part(tmp_path, monkeypatch):
    path = tmp_path / "history.json"
    record.atomic_write_json(path, {"v": 1})

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(record.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        record.atomic_write_json(path, {"v": 2})
    with pytest.raises(OSError, match="disk full"):
        record.atomic_torch_save(tmp_path / "checkpoint.pt", {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(os.listdir(tmp_path)) == ["history.json"]


def test_writer_raising_midway_leaves_no_partial_file(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    path = tmp_path / "checkpoint.pt"
    record.atomic_torch_save(path, {"epoch": 1})
    # torch.save has opened checkpoint.pt.part and written part of the zip when it fails
    with pytest.raises(RuntimeError, match="cannot pickle"):
        record.atomic_torch_save(path, {"w": torch.ones(1000), "bad": Unpicklable()})
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_unserialisable_json_never_touches_the_target(tmp_path):
    path = tmp_path / "p.json"
    record.atomic_write_json(path, {"v": 1})
    class Unwritable:
        def __str__(self):
            raise ValueError("no text for this")

    with pytest.raises(ValueError, match="no text"):  # fails before any file is opened
        record.atomic_write_json(path, {"v": [1.0, Unwritable()]})
    assert json.loads(path.read_text()) == {"v": 1} and os.listdir(tmp_path) == ["p.json"]


def test_shared_writes_use_a_per_process_name(tmp_path, monkeypatch):
    seen = []
    real = os.replace
    monkeypatch.setattr(record.os, "replace", lambda s, d: (seen.append(Path(s).name),
                                                          real(s, d)))
    record.atomic_write_text(tmp_path / "r.json", "{}", shared=True)
    record.atomic_write_text(tmp_path / "r.json", "{}")
    assert seen == [f"r.json.part{os.getpid()}", "r.json.part"]


# ------------------------------------------------------------------------- JSON
def test_non_finite_round_trip():
    values = [1.5, -2.0, math.nan, math.inf, -math.inf, np.float32(np.inf), np.float64(-0.25)]
    out = record.to_jsonable(values)
    assert out == [1.5, -2.0, None, "inf", "-inf", "inf", -0.25]
    text = json.dumps(out, allow_nan=False)  # strict JSON
    back = [record.from_jsonable_float(v) for v in json.loads(text)]
    for a, b in zip(back, values):
        assert (math.isnan(a) and math.isnan(b)) or a == float(b)


def test_the_older_forms_of_non_finite_numbers():
    values = [math.nan, math.inf, -math.inf, 2.0]
    assert record.to_jsonable(values, nonfinite="null") == [None, None, None, 2.0]
    kept = record.to_jsonable(values, nonfinite="keep")
    assert kept[1:] == [math.inf, -math.inf, 2.0] and math.isnan(kept[0])
    # each is read back by the same reader (the tokens parse as floats)
    for v in json.loads(json.dumps(kept)):
        assert isinstance(record.from_jsonable_float(v), float)
    with pytest.raises(ValueError, match="nonfinite"):
        record.to_jsonable(1.0, nonfinite="zero")


def test_to_jsonable_plain_types(tmp_path):
    obj = {1: (np.int64(3), np.bool_(True), np.arange(2.0)), "p": tmp_path,
           "t": torch.tensor([1.0, float("nan")]), "d": torch.float32, "n": None}
    assert record.to_jsonable(obj) == {"1": [3, True, [0.0, 1.0]], "p": str(tmp_path),
                                       "t": [1.0, None], "d": "float32", "n": None}


def test_from_jsonable_float_refuses_other_values():
    for bad in ("abc", True, [1.0], {}):
        with pytest.raises(ValueError):
            record.from_jsonable_float(bad)


def test_read_json_default(tmp_path):
    assert record.read_json(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert record.read_json(tmp_path / "bad.json", {}) == {}
    record.atomic_write_json(tmp_path / "ok.json", {"a": 1})
    assert record.read_json(tmp_path / "ok.json") == {"a": 1}


# -------------------------------------------------------------------- provenance
def test_git_state_outside_a_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert record.git_state(tmp_path) == {"git_commit": "", "git_dirty": False,
                                          "untracked_files": 0}


def test_git_state_of_a_checkout(tmp_path, monkeypatch):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    (tmp_path / "a.py").write_text("x = 1\n")
    for args in (["init", "-q"], ["add", "a.py"],
                 ["-c", "commit.gpgsign=false", "commit", "-qm", "init"]):
        subprocess.run(["git", *args], cwd=tmp_path, env=env, check=True)
    (tmp_path / "log.txt").write_text("untracked\n")
    g = record.git_state(tmp_path)
    assert len(g["git_commit"]) == 40 and g["git_dirty"] is False and g["untracked_files"] == 1
    (tmp_path / "a.py").write_text("x = 2\n")
    assert record.git_state(tmp_path)["git_dirty"] is True


def test_provenance_schema():
    git = {"git_commit": "abc", "git_dirty": True, "untracked_files": 2}
    prov = record.provenance("python -m l2o.x train", 12.5, git, config={"lr": 0.1})
    assert list(prov) == ["command", "git_commit", "git_dirty", "untracked_files", "date",
                          "wall_time_s", "machine", "config"]
    assert (prov["command"], prov["git_commit"], prov["git_dirty"], prov["untracked_files"],
            prov["wall_time_s"]) == ("python -m l2o.x train", "abc", True, 2, 12.5)
    assert prov["date"].endswith("Z") and prov["date"][4] == "-" and prov["date"][10] == "T"
    for key in ("platform", "cpus", "python", "torch", "numpy", "threads", "OMP_NUM_THREADS",
                "MKL_NUM_THREADS"):
        assert key in prov["machine"]
    assert prov["machine"]["threads"] == torch.get_num_threads()
    json.dumps(prov, allow_nan=False)
    with pytest.raises(TypeError, match="schema"):
        record.provenance("c", 1.0, git, machine={})
    # a notebook kernel's machine and the start of a chapter's run are passed explicitly
    other = record.provenance("c", 1.0, git, machine_info={"cpus": 64},
                              date="2026-01-01T00:00:00+00:00")
    assert other["machine"] == {"cpus": 64} and other["date"].startswith("2026-01-01")


def test_add_segment_appends_and_keeps_earlier_segments(tmp_path):
    path = tmp_path / "provenance.json"
    git = {"git_commit": "c1", "git_dirty": False, "untracked_files": 0}
    first = record.add_segment(None, record.provenance("run 1", 10.0, git), iterations=[0, 3])
    assert [s["command"] for s in first["segments"]] == ["run 1"]
    assert first["segments"][0]["iterations"] == [0, 3]
    assert set(record.SEGMENT_KEYS) <= set(first["segments"][0])
    record.atomic_write_json(path, first)
    git2 = {"git_commit": "c2", "git_dirty": True, "untracked_files": 4}
    second = record.add_segment(path, record.provenance("run 2", 5.0, git2), iterations=[3, 5])
    assert [(s["command"], s["git_commit"], s["wall_time_s"], s["iterations"])
            for s in second["segments"]] == [("run 1", "c1", 10.0, [0, 3]),
                                             ("run 2", "c2", 5.0, [3, 5])]
    assert second["git_commit"] == "c2" and second["command"] == "run 2"
    assert json.loads(path.read_text())["segments"] == first["segments"]  # not written


def test_add_segment_reads_files_written_before_segments(tmp_path):
    path = tmp_path / "provenance.json"
    path.write_text(json.dumps({"command": "old", "git_commit": "c0", "git_dirty": False,
                                "wall_time_s": 3.0, "date": "2020-01-01T00:00:00Z"}))
    prov = record.add_segment(path, record.provenance("new", 1.0, {}))
    assert [s["command"] for s in prov["segments"]] == ["old", "new"]
    path.write_text(json.dumps({"command": "l2l", "sessions": [
        {"command": "l2l", "wall_time_s": 7.0, "epochs_after": 10}]}))
    prov = record.add_segment(path, record.provenance("l2l resumed", 2.0, {}))
    assert [s["wall_time_s"] for s in prov["segments"]] == [7.0, 2.0]
    path.write_text("{truncated")
    assert len(record.add_segment(path, record.provenance("x", 1.0, {}))["segments"]) == 1


def test_project_root_is_the_setting_then_the_checkout_then_the_working_directory(
        tmp_path, monkeypatch):
    from l2o import paths

    monkeypatch.setenv(paths.ENV_ROOT, str(tmp_path / "project"))
    assert paths.project_root() == (tmp_path / "project").resolve()
    monkeypatch.delenv(paths.ENV_ROOT)
    # a checkout: the package's parent has pyproject.toml (this repository)
    here = paths.project_root()
    assert (here / "pyproject.toml").is_file() and (here / "l2o").is_dir()
    # an installed wheel: site-packages/l2o has no pyproject.toml beside it
    pkg = tmp_path / "site-packages" / "l2o"
    pkg.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert paths.project_root(pkg) == tmp_path.resolve()


def test_the_results_paths_follow_the_setting(tmp_path):
    """``$L2O_ROOT`` moves every results folder the package writes into (a new process)."""
    import subprocess
    import sys

    code = ("from l2o import experiments, baselines, figures; "
            "print(experiments.GRID_DIR); print(baselines.TUNED_HPARAMS_PATH); "
            "print(figures.LEARNED_DIR)")
    env = dict(__import__("os").environ, L2O_ROOT=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [str(tmp_path.resolve() / "results" / "grid"),
                   str(tmp_path.resolve() / "results" / "tuning" / "chosen.json"),
                   str(tmp_path.resolve() / "results" / "learned")]


def test_console_command_from_an_installed_wheel_outside_the_checkout(tmp_path):
    """The wheel installs the ``l2o`` command; run outside the checkout it answers
    ``--help`` and takes its project folder from ``$L2O_ROOT``."""
    import os
    import subprocess
    import sys

    import shutil

    wheels, site, proj = tmp_path / "wheels", tmp_path / "site", tmp_path / "project"
    src = tmp_path / "src"      # a copy: building writes build/ and *.egg-info beside it
    shutil.copytree(record.ROOT / "l2o", src / "l2o",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(record.ROOT / name, src / name)
    proj.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run([*pip, "wheel", str(src), "--no-deps",
                            "--no-build-isolation", "-w", str(wheels)],
                           capture_output=True, text=True)
    if build.returncode != 0:
        pytest.skip(f"could not build a wheel here: {build.stderr[-500:]}")
    (wheel,) = wheels.glob("l2o-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site), "L2O_ROOT": str(proj)}
    out = subprocess.run([str(site / "bin" / "l2o"), "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for sub in ("tune", "figures", "gps", "l2l", "data", "book"):
        assert sub in out.stdout, sub
    where = subprocess.run([sys.executable, "-c", "import l2o, l2o.paths as p; "
                            "print(l2o.__file__); print(p.ROOT)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    assert where[0].startswith(str(site)) and where[1] == str(proj)
