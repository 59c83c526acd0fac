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

import re
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

    _assert_nbval_reproduces(executed, f"{chapter.name} at smoke scale")


def _assert_nbval_reproduces(notebook: Path, what: str) -> None:
    """nbval re-runs ``notebook`` in its folder (a temporary one) and compares every
    output with the stored one, in a subprocess configured by NBVAL_INI/NBVAL_CONFTEST."""
    folder = notebook.parent
    (folder / "pytest.ini").write_text(NBVAL_INI)
    (folder / "conftest.py").write_text(NBVAL_CONFTEST)
    env = book.kernel_env()
    env.pop("PYTEST_ADDOPTS", None)
    cmd = [sys.executable, "-m", "pytest", "--nbval", str(notebook),
           "--nbval-sanitize-with", str(SANITIZE), "--nbval-current-env",
           "--nbval-cell-timeout", "900", "-p", "no:cacheprovider", "-q", "--color=no"]
    result = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    assert result.returncode == 0, (
        f"nbval found differences in {what}:\n"
        f"{result.stdout[-8000:]}\n{result.stderr[-2000:]}")
    assert " passed" in result.stdout, result.stdout[-2000:]


# ------------------------------------------------------------ reader services
_RUN_COMMAND = re.compile(r"python -m l2o\.book run --scale smoke((?: \w+)+)((?: -p \S+ (?:\"[^\"]*\"|\S+))*)")


def _last_markdown(nb):
    return next(c for c in reversed(nb.cells) if c.cell_type == "markdown")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=_ids(CHAPTERS))
def test_chapter_ends_with_things_to_try(chapter):
    """3-5 exercises, each with its answer (solution or expected outcome) folded away."""
    nb = nbformat.read(chapter.path, as_version=4)
    last = _last_markdown(nb).source
    assert "## Things to try" in last, f"{chapter.name} does not end with 'Things to try'"
    items = re.findall(r"^\d+\. \*\*", last, flags=re.M)
    answers = re.findall(r":::\{admonition\} (?:Solution|What to expect)\n\s*:class: dropdown",
                         last)
    assert 3 <= len(items) <= 5, f"{chapter.name}: {len(items)} things to try"
    assert len(answers) == len(items), f"{chapter.name}: every item needs a folded answer"


def test_exercise_commands_name_declared_parameters():
    """Every `python -m l2o.book run --scale smoke NN -p NAME VALUE` in the book names
    chapters that exist and parameters their `parameters` cells declare."""
    by_id = {c.id: c for c in CHAPTERS}
    seen = 0
    for chapter in CHAPTERS:
        nb = nbformat.read(chapter.path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "markdown":
                continue
            for ids, params in _RUN_COMMAND.findall(cell.source):
                names = re.findall(r"-p (\S+)", params)
                for cid in ids.split():
                    assert cid in by_id, f"{chapter.name}: no chapter {cid}"
                    declared = book.notebook_defaults(by_id[cid].path)
                    unknown = set(names) - set(declared)
                    assert not unknown, f"{chapter.name}: {cid} does not declare {unknown}"
                seen += 1
    assert seen >= len(CHAPTERS)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=_ids(CHAPTERS))
def test_figures_have_alt_text_and_folded_code(chapter):
    """A cell that draws a figure has a caption, a real alt text and its code folded."""
    nb = nbformat.read(chapter.path, as_version=4)
    for i, cell in enumerate(nb.cells):
        images = [o for o in cell.get("outputs", []) if any(
            k.startswith("image/") for k in o.get("data", {}))
            and "scrapbook" not in o.get("metadata", {})]
        if not images:
            continue
        meta = cell.metadata.get("mystnb", {})
        alt = meta.get("image", {}).get("alt", "")
        assert meta.get("figure", {}).get("caption"), f"{chapter.name} cell {i}: no caption"
        assert len(alt) > 40 and not alt.endswith(".png"), f"{chapter.name} cell {i}: alt"
        tags = set(cell.metadata.get("tags", []))
        assert tags & {"hide-input", "remove-input"}, f"{chapter.name} cell {i}: code shown"


def test_no_reference_to_unpublished_notes():
    """Design decisions are referenced in the book's appendix, not in private notes."""
    pattern = re.compile(r"method[- ]notes", re.I)
    for path in list(book.BOOK_DIR.glob("*.ipynb")) + list(book.BOOK_DIR.glob("*.md")) \
            + list((book.ROOT / "l2o").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not pattern.search(text), f"{path.name} refers to the method notes"


@pytest.mark.notebooks
@pytest.mark.parametrize("chapter_id", ["02", "07"])
def test_paper_scale_chapter_reproduces_its_committed_outputs(chapter_id, tmp_path):
    """The committed paper-scale chapter 2 (the baselines) and chapter 8 (Figure 1), re-run
    cell by cell by nbval from the committed results, give the outputs they show: the
    package's code today computes the numbers the book prints (text outputs compared
    exactly, after the sanitizer's masks of timings and paths)."""
    chapter = next(c for c in CHAPTERS if c.id == chapter_id)
    copy = tmp_path / chapter.path.name
    copy.write_bytes(chapter.path.read_bytes())
    _assert_nbval_reproduces(copy, f"{chapter.name} at paper scale")
