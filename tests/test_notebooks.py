"""Every chapter of the toc: structure of the committed notebook, and a smoke-scale run.

The smoke test executes the chapter with the book driver (papermill, parameters from
``book/params/smoke.yaml``) into a temporary folder, then has nbval re-run the executed
copy and compare its outputs with the stored ones. nbval runs in a subprocess with its
own ``pytest.ini`` (so that no ``addopts`` such as ``--nbval-lax`` can weaken it) and a
``conftest.py`` that leaves stderr out of the comparison; ``nbval_sanitize.cfg`` masks
addresses, timings and paths. nbval starts its kernel in the folder of the executed
copy, not in ``book/``: chapters must not depend on the working directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from l2o import book

SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")
CHAPTERS = book.chapters()

# Written next to the executed copy: the configuration of the nbval subprocess.
NBVAL_INI = """\
[pytest]
addopts =
"""
NBVAL_CONFTEST = '''\
"""nbval settings for an executed chapter: stderr (warnings, logging) is not compared."""


def pytest_collectstart(collector):
    path = getattr(collector, "path", None)
    if path is not None and path.suffix == ".ipynb" and hasattr(collector, "skip_compare"):
        collector.skip_compare = tuple(collector.skip_compare) + ("stderr",)
'''


def _ids(chapters):
    return [c.name for c in chapters]


def test_toc_lists_chapters():
    assert book.missing_toc_files() == [], "_toc.yml lists files that do not exist"
    assert CHAPTERS, "_toc.yml lists no chapter notebooks"


def test_params_files_name_existing_chapters():
    """Every chapter id in book/params/*.yaml belongs to a notebook in book/."""
    ids = {book._CHAPTER_RE.match(p.stem).group(1)
           for p in book.BOOK_DIR.glob("[0-9]*.ipynb")}
    for scale in book.SCALES:
        stale = sorted(set(book.load_params(scale)) - ids)
        assert not stale, f"book/params/{scale}.yaml has parameters for no notebook: {stale}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=_ids(CHAPTERS))
def test_committed_notebook_structure(chapter):
    problems = book.notebook_problems(chapter.path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=_ids(CHAPTERS))
@pytest.mark.parametrize("scale", book.SCALES)
def test_params_are_declared(chapter, scale):
    book.chapter_params(chapter, scale)  # raises for a name the parameters cell lacks


@pytest.mark.notebooks
@pytest.mark.parametrize("chapter", CHAPTERS, ids=_ids(CHAPTERS))
def test_chapter_smoke_nbval(chapter, tmp_path):
    executed = book.execute_chapter(chapter, "smoke", output_dir=tmp_path,
                                    command="pytest tests/test_notebooks.py")
    nb = nbformat.read(executed, as_version=4)
    assert book.notebook_problems(executed, require_provenance=False) == []
    assert any(c.get("outputs") for c in nb.cells), "the smoke run stored no outputs"

    (tmp_path / "pytest.ini").write_text(NBVAL_INI)
    (tmp_path / "conftest.py").write_text(NBVAL_CONFTEST)
    env = book.kernel_env()
    env.pop("PYTEST_ADDOPTS", None)
    cmd = [sys.executable, "-m", "pytest", "--nbval", str(executed),
           "--nbval-sanitize-with", str(SANITIZE), "--nbval-current-env",
           "--nbval-cell-timeout", "900", "-p", "no:cacheprovider", "-q", "--color=no"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, (
        f"nbval found differences in {chapter.name} at smoke scale:\n"
        f"{result.stdout[-8000:]}\n{result.stderr[-2000:]}")
    assert " passed" in result.stdout, result.stdout[-2000:]
