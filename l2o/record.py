"""Run records: provenance with one schema, atomic writes, JSON with non-finite numbers.

The commands that leave runs behind (``python -m l2o.gps``, ``l2o.l2l``, ``l2o.outer``,
``l2o.outer_study``, ``l2o.gps_study``, the tuning and the result cache of
:mod:`l2o.experiments`) write them through this module, and the book's driver takes
its git state here:

* :func:`provenance` is the one schema of a ``provenance.json``: ``command,
  git_commit, git_dirty, untracked_files, date, wall_time_s, machine`` and the
  command's own keys; :func:`add_segment` lists the sessions of a resumed run.
* :func:`git_state` is taken once, when a run starts: a run that writes files into the
  checkout would otherwise always find it dirty.
* :func:`atomic_write_text`, :func:`atomic_write_json`, :func:`atomic_torch_save` write
  ``<name>.part`` and rename it over ``<name>``: an interrupted run leaves the previous
  file whole, and never a half-written one (``*.part`` of the checkpoints is ignored
  by git); a writer that fails removes its ``.part``.

Non-finite numbers in JSON
    Strict JSON has no NaN or infinity.  The convention of this module
    (:func:`to_jsonable`): NaN is written ``null``, ``+inf`` the string ``"inf"`` and
    ``-inf`` the string ``"-inf"``, so that a diverged run's ``+inf`` meta-loss stays
    distinguishable from a missing value; :func:`from_jsonable_float` reads a value
    back.  Files whose format predates this module and whose numbers committed
    notebooks or cache keys read keep their form (``nonfinite=``): ``"null"`` (every
    non-finite number ``null``) for :mod:`l2o.experiments`' result and tuning files,
    L2L's and the outer trainers' ``history.json``; ``"keep"`` (Python's ``NaN`` and
    ``Infinity`` tokens, not strict JSON) for GPS's ``history.json`` and
    :mod:`l2o.gps_study`'s score files.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from l2o import paths

#: The project folder (:func:`l2o.paths.project_root`); git state is taken there by default.
ROOT = paths.ROOT

#: Forms of non-finite numbers in JSON (module docstring); ``"strings"`` is the convention.
NONFINITE = ("strings", "null", "keep")

#: The keys of every segment of a resumed run (:func:`add_segment`).
SEGMENT_KEYS = ("git_commit", "git_dirty", "untracked_files", "wall_time_s", "date", "command")

_PROVENANCE_KEYS = ("command", "git_commit", "git_dirty", "untracked_files", "date",
                    "wall_time_s", "machine")


# ------------------------------------------------------------------------- the run
def git_state(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The commit of the checkout at ``root`` and whether its tracked files differ from it.

    Untracked files (logs, other runs' outputs) are counted apart: they cannot change
    the code a run executes.  Outside a checkout (or without git) the commit is ``""``,
    ``git_dirty`` False and ``untracked_files`` 0.

    Args:
        root: a folder inside the checkout; default :data:`ROOT`.

    Returns:
        ``{"git_commit": str, "git_dirty": bool, "untracked_files": int}``.
    """
    cwd = Path(root) if root is not None else ROOT

    def git(*args: str) -> str:
        try:
            # --no-optional-locks: never take index.lock (a commit may be running beside us)
            out = subprocess.run(["git", "--no-optional-locks", *args], cwd=cwd,
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    return {"git_commit": git("rev-parse", "HEAD"),
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "untracked_files": len(git("ls-files", "--others", "--exclude-standard").split())}


def machine() -> dict[str, Any]:
    """The machine and the versions and thread counts a run computed with.

    Float results depend on the thread count (book: known traps), so both torch's and
    the OpenMP/MKL environment's are recorded.
    """
    return {"platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": str(torch.__version__),
            "numpy": np.__version__,
            "threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS")}


def utc_now() -> str:
    """The current time, ISO 8601 in UTC to the second (``2024-05-01T12:00:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def provenance(command: str, wall_time_s: float, git: Mapping[str, Any] | None = None,
               machine_info: Mapping[str, Any] | None = None, date: str | None = None,
               **extra) -> dict[str, Any]:
    """The provenance of a run, in the one schema of the package.

    Every provenance record of the package is made here: the ``provenance.json`` of the
    commands that write results, and the one the book's driver stores in an executed
    chapter (:func:`l2o.book.execute_chapter`, with its own keys beside the schema's).

    Args:
        command: the command line that produced the files.
        wall_time_s: seconds this session ran.
        git: :func:`git_state`, taken when the run started (default: taken now).
        machine_info: the computing environment when it is not this process's (a
            notebook's kernel); default :func:`machine`.
        date: when the run happened, ISO 8601 (default: now, the end of the run).
        **extra: the command's own keys (configuration, seeds, files, ...), after the
            schema's.

    Returns:
        ``{command, git_commit, git_dirty, untracked_files, date, wall_time_s, machine,
        **extra}``.

    Raises:
        TypeError: an ``extra`` key is one of the schema's.
    """
    clash = sorted(set(extra) & set(_PROVENANCE_KEYS))
    if clash:
        raise TypeError(f"provenance() keys {clash} belong to the schema; pass them as "
                        "arguments")
    git = git_state() if git is None else git
    return {"command": command, "git_commit": git.get("git_commit", ""),
            "git_dirty": bool(git.get("git_dirty", False)),
            "untracked_files": int(git.get("untracked_files", 0)),
            "date": utc_now() if date is None else date, "wall_time_s": wall_time_s,
            "machine": dict(machine() if machine_info is None else machine_info), **extra}


def add_segment(path: str | os.PathLike | None, prov: Mapping[str, Any], **keys) -> dict:
    """``prov`` with ``segments``: the sessions of a resumed run, this one last.

    A run resumed across sessions records each session's part with its own tree:
    ``git_commit, git_dirty, untracked_files, wall_time_s, date, command`` taken from
    ``prov``, plus ``keys`` (e.g. the iterations it ran).  The earlier segments come
    from the provenance file at ``path``; one written without segments counts as one
    segment (its top-level keys), one with L2L's earlier ``sessions`` keeps those.

    Args:
        path: the run's provenance file, or None for a run that starts afresh (a file
            there then belongs to another run and is not read).
        prov: this session's :func:`provenance`.
        **keys: more entries of this session's segment.

    Returns:
        A new dict; ``path`` is not written (do so with :func:`atomic_write_json`).
    """
    old = read_json(path) if path is not None else None
    segments: list = []
    if isinstance(old, Mapping):
        segments = list(old.get("segments") or old.get("sessions")
                        or [{k: old.get(k) for k in SEGMENT_KEYS}])
    segments.append({**{k: prov.get(k) for k in SEGMENT_KEYS}, **keys})
    return {**prov, "segments": segments}


# --------------------------------------------------------------------------- JSON
def to_jsonable(obj: Any, nonfinite: str = "strings") -> Any:
    """A plain-JSON copy of ``obj``.

    Mappings become dicts with string keys; tuples, lists, numpy arrays and tensors
    lists; numpy scalars Python numbers; paths strings; a ``torch.dtype`` its name
    (``"float32"``); anything else ``str(obj)``.

    Args:
        obj: the value.
        nonfinite: ``"strings"`` (the convention: NaN ``None``, ``±inf`` ``"inf"`` and
            ``"-inf"``), ``"null"`` (every non-finite number ``None``) or ``"keep"``
            (left as floats, for ``json.dumps(allow_nan=True)``); see the module
            docstring for the files that use the last two.
    """
    if nonfinite not in NONFINITE:
        raise ValueError(f"Invalid nonfinite: {nonfinite!r} (expected one of {NONFINITE})")
    return _plain(obj, nonfinite)


def _plain(v: Any, nonfinite: str) -> Any:
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isfinite(v) or nonfinite == "keep":
            return v
        if nonfinite == "null" or math.isnan(v):
            return None
        return "inf" if v > 0 else "-inf"
    if isinstance(v, Mapping):
        return {str(k): _plain(x, nonfinite) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x, nonfinite) for x in v]
    if isinstance(v, (np.ndarray, torch.Tensor)):
        return _plain(v.tolist(), nonfinite)
    if isinstance(v, torch.dtype):
        return str(v).replace("torch.", "")
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return str(v)


def from_jsonable_float(value: Any) -> float:
    """A number written by :func:`to_jsonable` (any form), back as a float.

    ``None`` is NaN, ``"inf"``/``"-inf"`` (and ``"Infinity"``, ``"nan"``) the
    infinities (NaN); numbers pass through.

    Raises:
        ValueError: ``value`` is not a number in any of these forms.
    """
    if value is None:
        return math.nan
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, str) and value.strip().lower().lstrip("+-") in (
            "inf", "infinity", "nan"):
        return float(value)
    raise ValueError(f"expected a number, null, 'inf' or '-inf', got {value!r}")


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """The JSON at ``path``, or ``default`` if it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


# ------------------------------------------------------------------ atomic writes
def _atomic(path: str | os.PathLike, write: Callable[[Path], None], shared: bool) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # shared: several processes may write this file at once (a result cache); each
    # then needs its own temporary name
    part = path.with_name(path.name + (f".part{os.getpid()}" if shared else ".part"))
    try:
        write(part)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, shared: bool = False) -> Path:
    """Write ``data`` to ``path`` via ``<name>.part`` and a rename (parents created).

    Args:
        path: the target.
        data: its content.
        shared: several processes may write ``path`` at once: the temporary file is
            ``<name>.part<pid>``.
    """
    return _atomic(path, lambda p: p.write_bytes(data), shared)


def atomic_write_text(path: str | os.PathLike, text: str, shared: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), shared)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1,
                      nonfinite: str = "strings", shared: bool = False) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically, through :func:`to_jsonable`.

    The text is made before any file is opened: an object that cannot be written
    leaves ``path`` as it was.
    """
    text = json.dumps(to_jsonable(obj, nonfinite), indent=indent,
                      allow_nan=nonfinite == "keep")
    return atomic_write_text(path, text + "\n", shared)


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save(obj, path)`` via ``<name>.part`` and a rename (parents created)."""
    return _atomic(path, lambda p: torch.save(obj, p), False)
