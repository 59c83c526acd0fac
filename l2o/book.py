"""The book driver: run chapters with papermill, check committed notebooks, build the book.

Command line (the Makefile's ``make chapters`` and ``make book`` call it)::

    python -m l2o.book run --scale smoke|paper [CHAPTER ...]   # all chapters if none given
    python -m l2o.book run --scale smoke 03 -p kl_step 1.0     # a smoke run with a change
    python -m l2o.book check [CHAPTER ...]
    python -m l2o.book build [--path-output DIR]
    python -m l2o.book smoke-html                              # _build/smoke/html

Chapters
    The chapters are the notebooks listed in ``_toc.yml``, in its order: that file is the
    one list. A chapter ``book/NN_name.ipynb`` has the id ``NN``; adding a chapter is one
    line ``- file: book/NN_name`` in ``_toc.yml``. On the command line a chapter is named
    by its id (``02``, ``2``), its name (``02_baselines``) or its path.

Parameters
    ``book/params/<scale>.yaml`` maps chapter ids to the values injected into the
    chapter's one ``parameters`` cell, e.g. ``"02": {horizon: 40, seeds: [0, 1]}``
    (quote the ids: YAML reads a bare ``08`` as a string but ``07`` as the integer 7; both
    are accepted). A chapter missing from the file runs with its notebook defaults, which
    are the paper-scale values; a name that is not in the ``parameters`` cell is an
    error.

    ``-p NAME VALUE`` (smoke scale only) overrides one more parameter for this run;
    the value is read as YAML (``-p kl_step 1.0``, ``-p datasets "[mnist]"``). The
    exercises at the end of each chapter use it.

Scales
    ``smoke`` writes the executed copies to ``_build/smoke/`` (or ``--output-dir``) and
    then renders them as a second, browsable book in ``_build/smoke/html``
    (:func:`build_smoke_html`; ``--no-html`` skips it);
    ``paper`` writes the executed notebook back in place, with papermill's volatile
    metadata (timestamps, durations) removed and one provenance entry
    (:data:`PROVENANCE_KEY` in the notebook metadata: parameters, scale, git commit,
    dirty flag, machine, wall time, date, command). A paper run that fails leaves the
    committed notebook untouched; the partial copy stays in ``_build/paper/``.

The build (:func:`build_book`)
    ``jupyter-book build`` with warnings as errors, then :func:`html_problems` reads the
    HTML: every toc page and figure present, no paragraph that starts with ``|`` (a
    Markdown table printed as text), no TeX outside a math element, and MathJax served
    from the book's own ``_static/mathjax/`` (vendored in ``book/_vendor/mathjax``), so
    formulas are typeset without a network. :mod:`l2o.browser` checks the same pages in
    headless Chromium. This module is also the Sphinx extension behind the
    ``execution-statistics`` directive (:func:`setup`).

Environment of the executed notebooks (:func:`kernel_env`)
    ``OMP_NUM_THREADS=1`` and ``MKL_NUM_THREADS=1`` (float results depend on the thread
    count), ``L2O_NO_PROGRESS=1`` and ``TQDM_DISABLE=1`` (no progress bars in stored
    outputs), ``L2O_DATA_DIR`` passed through, and the non-interactive inline matplotlib
    backend. ``MPLBACKEND=Agg`` would be the obvious choice but makes ``plt.show()`` in
    a kernel a no-op, so notebooks would lose every figure.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime as _dt
import importlib.metadata
import logging
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml

from l2o import paths

logger = logging.getLogger("l2o.book")  # also when run as __main__

__all__ = [
    "ROOT",
    "BOOK_DIR",
    "TOC_PATH",
    "PARAMS_DIR",
    "SCALES",
    "KERNEL_NAME",
    "PROVENANCE_KEY",
    "Chapter",
    "toc_docnames",
    "chapters",
    "select_chapters",
    "load_params",
    "chapter_params",
    "kernel_env",
    "execute_chapter",
    "strip_volatile_metadata",
    "notebook_problems",
    "build_book",
    "build_smoke_html",
    "html_problems",
    "html_text_problems",
    "parse_overrides",
    "execution_records",
    "execution_markdown",
    "config_markdown",
    "setup",
    "main",
]

ROOT = paths.ROOT  # the project folder: $L2O_ROOT, the checkout, or the working directory
BOOK_DIR = ROOT / "book"
TOC_PATH = ROOT / "_toc.yml"
PARAMS_DIR = BOOK_DIR / "params"
SCALES = ("smoke", "paper")
KERNEL_NAME = "python3"
PROVENANCE_KEY = "l2o_provenance"
#: Where executed copies go: smoke runs (the result) and paper runs (work copy).
DEFAULT_OUTPUT_DIRS = {"smoke": ROOT / "_build" / "smoke", "paper": ROOT / "_build" / "paper"}
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
#: Cell metadata that papermill/nbclient write on every run (timings, status).
VOLATILE_CELL_KEYS = ("papermill", "execution", "ExecuteTime")
#: Notebook metadata written on every run.
VOLATILE_NB_KEYS = ("papermill", "widgets")
_CHAPTER_RE = re.compile(r"^(\d+)(?:_|$)")


# ===================================================================== chapters
@dataclass(frozen=True)
class Chapter:
    """One chapter notebook listed in the table of contents.

    Attributes:
        id: the leading number of the file name, e.g. ``"02"``.
        name: the file stem, e.g. ``"02_baselines"``.
        docname: the toc entry, e.g. ``"book/02_baselines"``.
        path: absolute path of the ``.ipynb``.
    """

    id: str
    name: str
    docname: str
    path: Path


def _walk_toc(node: Any) -> Iterator[str]:
    """``file`` entries of a (jb-book or jb-article) toc, depth first, in order."""
    if isinstance(node, Mapping):
        for key in ("root", "file"):
            if isinstance(node.get(key), str):
                yield node[key]
        for key in ("parts", "chapters", "sections", "entries", "subtrees"):
            for child in node.get(key) or []:
                yield from _walk_toc(child)
    elif isinstance(node, list):
        for child in node:
            yield from _walk_toc(child)


def toc_docnames(toc_path: Path = TOC_PATH) -> list[str]:
    """Every document of the table of contents (without suffix), in reading order."""
    toc = yaml.safe_load(Path(toc_path).read_text(encoding="utf-8"))
    names = []
    for name in _walk_toc(toc):
        name = re.sub(r"\.(ipynb|md)$", "", name)
        if name not in names:
            names.append(name)
    return names


def _resolve(docname: str, root: Path) -> Path | None:
    for suffix in (".ipynb", ".md"):
        path = root / f"{docname}{suffix}"
        if path.exists():
            return path
    return None


def chapters(toc_path: Path = TOC_PATH) -> list[Chapter]:
    """The chapter notebooks of the table of contents, in its order.

    A toc entry is a chapter when it resolves to a ``.ipynb`` whose name starts with a
    number. Entries that resolve to nothing are reported by :func:`missing_toc_files`.
    """
    root = Path(toc_path).resolve().parent
    out = []
    for docname in toc_docnames(toc_path):
        path = _resolve(docname, root)
        if path is None or path.suffix != ".ipynb":
            continue
        m = _CHAPTER_RE.match(path.stem)
        if m is None:
            logger.warning("notebook %s in the toc has no leading chapter number", docname)
            continue
        out.append(Chapter(id=m.group(1), name=path.stem, docname=docname, path=path))
    ids = [c.id for c in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"chapter ids used twice in {toc_path}: {', '.join(dup)}")
    return out


def missing_toc_files(toc_path: Path = TOC_PATH) -> list[str]:
    """Toc entries with no ``.md``/``.ipynb`` file."""
    root = Path(toc_path).resolve().parent
    return [d for d in toc_docnames(toc_path) if _resolve(d, root) is None]


def orphan_notebooks(toc_path: Path = TOC_PATH) -> list[Path]:
    """Numbered notebooks in ``book/`` that the toc does not list (they are not built)."""
    listed = {c.path for c in chapters(toc_path)}
    book = Path(toc_path).resolve().parent / "book"
    return [p for p in sorted(book.glob("[0-9]*.ipynb")) if p.resolve() not in listed]


def _normalise_id(value: Any) -> str:
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return f"{int(text):02d}"
    return text


def select_chapters(names: Sequence[str] | None, toc_path: Path = TOC_PATH) -> list[Chapter]:
    """The chapters named by id (``02``/``2``), name or path; all of them if ``names`` is
    empty.

    Raises:
        ValueError: for a name that matches no chapter of the toc.
    """
    available = chapters(toc_path)
    if not names:
        return available
    selected = []
    for raw in names:
        key = Path(str(raw)).stem
        key = _normalise_id(key) if re.fullmatch(r"\d+", key) else key
        match = [c for c in available if key in (c.id, c.name)]
        if not match:
            raise ValueError(f"no chapter {raw!r} in {toc_path}; chapters: "
                             f"{', '.join(c.name for c in available) or '(none)'}")
        if match[0] not in selected:
            selected.append(match[0])
    return selected


# =================================================================== parameters
def load_params(scale: str, params_dir: Path = PARAMS_DIR) -> dict[str, dict[str, Any]]:
    """``book/params/<scale>.yaml`` as ``{chapter id: {name: value}}``.

    Raises:
        ValueError: for an unknown scale or a malformed file.
    """
    if scale not in SCALES:
        raise ValueError(f"Invalid scale: {scale!r} (expected one of {', '.join(SCALES)})")
    path = Path(params_dir) / f"{scale}.yaml"
    if not path.exists():
        raise ValueError(f"parameter file {path} is missing")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path} must map chapter ids to parameters, got {type(data).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for key, params in data.items():
        params = params or {}
        if not isinstance(params, Mapping):
            raise ValueError(f"{path}: parameters of chapter {key!r} must be a mapping")
        cid = _normalise_id(key)
        if cid in out:
            raise ValueError(f"{path}: chapter {cid} given twice")
        out[cid] = dict(params)
    return out


def notebook_defaults(path: Path) -> dict[str, Any]:
    """The names and default values of a notebook's ``parameters`` cell."""
    import papermill

    found = papermill.inspect_notebook(str(path))
    out = {}
    for name, info in found.items():
        try:
            out[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            out[name] = info["default"]  # not a literal: keep the source text
    return out


def chapter_params(chapter: Chapter, scale: str, params_dir: Path = PARAMS_DIR) -> dict[str, Any]:
    """The parameters to inject into ``chapter`` at ``scale``, checked against the
    notebook's ``parameters`` cell.

    Raises:
        ValueError: for a parameter the notebook does not declare.
    """
    params = load_params(scale, params_dir).get(chapter.id, {})
    unknown = sorted(set(params) - set(notebook_defaults(chapter.path)))
    if unknown:
        raise ValueError(f"{params_dir}/{scale}.yaml sets {', '.join(unknown)} for chapter "
                         f"{chapter.id}, but {chapter.path.name}'s parameters cell does not "
                         "declare them")
    return params


# ================================================================== execution
def kernel_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment in which chapters are executed (papermill and nbval alike)."""
    env = dict(os.environ if base is None else base)
    env.update({
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "L2O_NO_PROGRESS": "1",
        "TQDM_DISABLE": "1",
        # Non-interactive and headless, but unlike Agg it emits plt.show() figures.
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "PYTHONHASHSEED": "0",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    })
    return env  # L2O_DATA_DIR is passed through from ``base``


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """Temporarily replace ``os.environ`` (the kernel inherits the driver's)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def strip_volatile_metadata(nb) -> None:
    """Remove what changes on every run (timestamps, durations, papermill paths)."""
    for key in VOLATILE_NB_KEYS:
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        for key in VOLATILE_CELL_KEYS:
            cell.metadata.pop(key, None)
        if cell.metadata.get("tags") == []:
            del cell.metadata["tags"]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the checkout, in the notebooks' provenance keys.

    :func:`l2o.record.git_state` under the keys the book's provenance has always had
    (``commit``, ``dirty``; the execution statistics read them): ``dirty`` counts
    tracked files only, untracked ones are counted in ``untracked_files``. ``commit``
    is None outside a checkout.
    """
    from l2o import record  # imports torch: only when a chapter runs

    git = record.git_state(ROOT)
    return {"commit": git["git_commit"] or None, "dirty": git["git_dirty"],
            "untracked_files": git["untracked_files"]}


def machine_info(env: Mapping[str, str]) -> dict[str, Any]:
    """The machine and library versions that the chapter ran with."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "threads": {k: env.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
    }


def _prepared_input(chapter: Chapter, work_dir: Path):
    """The chapter without stale injected-parameter cells, written to ``work_dir``."""
    import nbformat

    nb = nbformat.read(chapter.path, as_version=4)
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in c.metadata.get("tags", [])]
    path = work_dir / f"{chapter.name}.input.ipynb"
    nbformat.write(nb, path)
    return path


def execute_chapter(chapter: Chapter, scale: str, output_dir: Path | None = None,
                    params: Mapping[str, Any] | None = None, command: str | None = None,
                    timeout: float | None = None,
                    git: Mapping[str, Any] | None = None) -> Path:
    """Execute one chapter with papermill at ``scale`` and write the result.

    Args:
        chapter: the chapter to run.
        scale: ``"smoke"`` or ``"paper"``.
        output_dir: where executed copies go; default :data:`DEFAULT_OUTPUT_DIRS`. At
            paper scale this is only the work copy: the result replaces
            ``chapter.path``.
        params: parameters to inject; default from ``book/params/<scale>.yaml``.
        command: the command line recorded in the provenance.
        timeout: per-cell timeout in seconds (None: no limit).
        git: the commit and dirty flag to record (default: taken now). A run of several
            chapters takes it once, before the first one: each paper-scale chapter
            rewrites its notebook, so a flag taken later would always say "dirty".

    Returns:
        The path of the executed notebook.

    Raises:
        papermill.PapermillExecutionError: a cell failed (the partial copy is kept in
            ``output_dir``; a committed notebook is not touched).
    """
    import nbformat
    import papermill

    if scale not in SCALES:
        raise ValueError(f"Invalid scale: {scale!r} (expected one of {', '.join(SCALES)})")
    params = dict(chapter_params(chapter, scale) if params is None else params)
    work_dir = Path(output_dir or DEFAULT_OUTPUT_DIRS[scale]).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    work_path = work_dir / f"{chapter.name}.ipynb"
    env = kernel_env()
    git = git_state() if git is None else dict(git)  # before the run rewrites anything
    logger.info("running %s at %s scale with %s", chapter.name, scale, params or "defaults")
    start, date = time.perf_counter(), _dt.datetime.now(_dt.timezone.utc)
    input_path = _prepared_input(chapter, work_dir)
    try:
        with _environment(env):
            nb = papermill.execute_notebook(
                str(input_path), str(work_path), parameters=params, kernel_name=KERNEL_NAME,
                cwd=str(chapter.path.parent), progress_bar=False, log_output=False,
                request_save_on_cell_execute=True, execution_timeout=timeout)
    finally:
        input_path.unlink(missing_ok=True)
    wall = time.perf_counter() - start
    defaults = notebook_defaults(chapter.path)
    strip_volatile_metadata(nb)
    from l2o import record  # imports torch: only when a chapter runs

    # the package's one schema, with the kernel's machine, plus the chapter's own keys;
    # "git" keeps the keys the execution statistics have always read
    prov = record.provenance(
        command or "python -m l2o.book run --scale " + scale + " " + chapter.id,
        round(wall, 1),
        {"git_commit": git["commit"] or "", "git_dirty": git["dirty"],
         "untracked_files": git.get("untracked_files", 0)},
        machine_info=machine_info(env), date=date.isoformat(timespec="seconds"),
        scale=scale, parameters={**defaults, **params}, injected_parameters=params,
        versions={"papermill": _version("papermill"), "l2o": _version("l2o")})
    prov["git"] = git
    nb.metadata[PROVENANCE_KEY] = prov
    target = chapter.path if scale == "paper" else work_path
    text = nbformat.writes(nb)
    # atomic: a committed notebook is never half written
    record.atomic_write_text(target, text if text.endswith("\n") else text + "\n")
    if scale == "paper":
        work_path.unlink(missing_ok=True)
    logger.info("%s done in %.1f s -> %s", chapter.name, wall, target)
    return target


# ===================================================================== checks
def notebook_problems(path: Path, require_provenance: bool = True) -> list[str]:
    """Structure problems of a committed chapter notebook (empty list: fine).

    Checks: exactly one ``parameters`` cell; every code cell executed, in order, with
    some outputs in the notebook; no error outputs or papermill error markers; no
    volatile papermill metadata; a provenance entry.
    """
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    problems = []
    name = path.name
    tagged = [i for i, c in enumerate(nb.cells)
              if PARAMETERS_TAG in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        problems.append(f"{name}: {len(tagged)} cells tagged 'parameters' (need exactly 1)")
    elif nb.cells[tagged[0]].cell_type != "code":
        problems.append(f"{name}: the 'parameters' cell is not a code cell")
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    counts = [c.get("execution_count") for c in code]
    if any(n is None for n in counts):
        problems.append(f"{name}: {sum(n is None for n in counts)} code cells never "
                        "executed (commit the notebook with outputs)")
    elif counts != sorted(counts) or len(set(counts)) != len(counts):
        problems.append(f"{name}: execution counts {counts} are not increasing "
                        "(run it top to bottom with the driver)")
    if code and not any(c.get("outputs") for c in code):
        problems.append(f"{name}: no outputs (commit the notebook with outputs)")
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"{name}: cell {i} has an error output "
                                f"({out.get('ename')}: {out.get('evalue')})")
        if "papermill-error-cell-tag" in cell.metadata.get("tags", []):
            problems.append(f"{name}: cell {i} is a papermill error marker")
        volatile = [k for k in VOLATILE_CELL_KEYS if k in cell.metadata]
        if volatile:
            problems.append(f"{name}: cell {i} carries volatile metadata {volatile}")
    if "papermill" in nb.metadata:
        problems.append(f"{name}: notebook carries papermill metadata (run it with the "
                        "driver, which strips it)")
    if require_provenance:
        prov = nb.metadata.get(PROVENANCE_KEY)
        if not isinstance(prov, Mapping):
            problems.append(f"{name}: no '{PROVENANCE_KEY}' metadata (run it with "
                            "`python -m l2o.book run --scale paper`)")
        else:
            missing = [k for k in ("scale", "parameters", "git", "machine", "wall_time_s",
                                   "date", "command") if k not in prov]
            if missing:
                problems.append(f"{name}: provenance lacks {missing}")
            elif prov["scale"] != "paper":
                problems.append(f"{name}: committed outputs are from the "
                                f"{prov['scale']!r} scale, not 'paper'")
    return problems


def has_images(path: Path) -> bool:
    """Whether any output of the notebook is an image."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return any(key.startswith("image/") for c in nb.cells for o in c.get("outputs", [])
               for key in o.get("data", {}))


#: TeX as it appears in text when nothing typesets it: ``\\(``, ``\\[``, a command such
#: as ``\\frac``, or a ``$...$`` pair around TeX (a backslash, ``^``, ``_`` or braces
#: inside, or a single letter: ``$x$``), so that "$5 and $6" is not taken for math.
RAW_TEX = re.compile(r"\\\(|\\\[|\\[A-Za-z]{2,}"
                     r"|\$(?=[^$]{0,200}[\\^_{}])[^$\s][^$]{0,200}\$|\$[A-Za-z]\$")
#: Elements whose text is not prose (code, scripts, typeset or to-be-typeset math).
_NOT_PROSE_TAGS = {"script", "style", "pre", "code", "textarea", "svg", "kbd", "samp"}
_NOT_PROSE_CLASSES = {"math", "highlight", "MathJax", "mjx-container"}
_VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
              "param", "source", "track", "wbr"}


def html_text_problems(html: str, page: str = "page") -> list[str]:
    """Rendering defects visible in one page's HTML (empty list: fine).

    Inside ``<main>``: a paragraph whose text starts with ``|`` (a Markdown table that
    was printed, not rendered) and TeX in prose outside a math element
    (:data:`RAW_TEX`; code, output blocks and ``.math`` elements are skipped).
    """
    from html.parser import HTMLParser

    problems: list[str] = []

    class _Reader(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.stack: list[tuple[str, bool]] = []   # (tag, hides its text from the check)
            self.in_main = 0
            self.paragraphs: list[list[str]] = []

        def handle_starttag(self, tag, attrs):
            if tag in _VOID_TAGS:
                return
            classes = set((dict(attrs).get("class") or "").split())
            hidden = tag in _NOT_PROSE_TAGS or bool(classes & _NOT_PROSE_CLASSES)
            self.stack.append((tag, hidden))
            if tag == "main":
                self.in_main += 1
            if tag == "p":
                self.paragraphs.append([])

        def handle_endtag(self, tag):
            if tag in _VOID_TAGS:
                return
            while self.stack:
                top, _ = self.stack.pop()
                if top == "main":
                    self.in_main -= 1
                if top == "p" and self.paragraphs:
                    text = "".join(self.paragraphs.pop()).strip()
                    if self.in_main and text.startswith("|"):
                        problems.append(f"{page}: a paragraph starts with '|' (a Markdown "
                                        f"table printed as text): {text[:70]!r}")
                if top == "p" and tag != "p":
                    continue
                if top == tag:
                    break

        def handle_data(self, data):
            if not self.in_main:
                return
            for para in self.paragraphs[-1:]:
                para.append(data)
            if any(hidden for _, hidden in self.stack):
                return
            m = RAW_TEX.search(data)
            if m:
                problems.append(f"{page}: TeX outside a math element: "
                                f"{data.strip()[:70]!r}")

    _Reader().feed(html)
    return problems


def html_problems(html_dir: Path, toc_path: Path = TOC_PATH) -> list[str]:
    """Missing pages or figures, unrendered tables, raw TeX, a CDN MathJax (empty: fine)."""
    html_dir = Path(html_dir)
    problems = []
    if not (html_dir / "index.html").exists():
        problems.append(f"{html_dir / 'index.html'} is missing")
    for docname in toc_docnames(toc_path):
        page = html_dir / f"{docname}.html"
        if not page.exists():
            problems.append(f"{page} is missing (toc entry {docname})")
            continue
        text = page.read_text(encoding="utf-8", errors="replace")
        problems += html_text_problems(text, docname)
        if _MATHJAX_CDN.search(text):
            problems.append(f"{page} loads MathJax from a CDN (offline readers see raw TeX)")
        elif 'class="math' in text and MATHJAX_URL not in text:
            problems.append(f"{page} has math but does not load {MATHJAX_URL}")
    if any(html_dir.rglob("*.html")) and (html_dir / "index.html").exists():
        if not (html_dir / MATHJAX_URL).is_file():
            problems.append(f"{html_dir / MATHJAX_URL} is missing (MathJax for offline "
                            "reading; html_static_path and mathjax_path in _config.yml)")
    for chapter in chapters(toc_path):
        page = html_dir / f"{chapter.docname}.html"
        if page.exists() and has_images(chapter.path):
            if "<img" not in page.read_text(encoding="utf-8", errors="replace"):
                problems.append(f"{page} shows no figure although {chapter.path.name} has "
                                "image outputs")
    return problems


# ====================================================================== build
def _check_jupyter_book_version() -> None:
    version = _version("jupyter-book")
    if version is None:
        raise RuntimeError("jupyter-book is not installed (pip install -r requirements.txt)")
    if not version.startswith("1."):
        raise RuntimeError(f"jupyter-book {version} is installed, but this book needs 1.0.x "
                           "(2.x ignores _config.yml and _toc.yml and builds nothing)")


def build_book(path_output: Path | None = None, all_pages: bool = True,
               strict: bool = True, source: Path = ROOT, check: bool = True) -> Path:
    """Build the HTML book with warnings as errors and check what it produced.

    Args:
        path_output: where ``_build/html`` goes (default: the repository root).
        all_pages: rebuild every page (an incremental build would not repeat the
            warnings of unchanged pages).
        strict: ``-W -n --keep-going``.
        source: the book's root (with ``_config.yml`` and ``_toc.yml``).
        check: run :func:`html_problems` on the result.

    Returns:
        The HTML directory.

    Raises:
        RuntimeError: the build failed, or pages, figures or the local MathJax are
            missing, or a page shows a raw table or raw TeX.
    """
    _check_jupyter_book_version()
    source = Path(source).resolve()
    toc = source / "_toc.yml"
    missing = missing_toc_files(toc)
    if missing:
        raise RuntimeError(f"_toc.yml lists files that do not exist: {', '.join(missing)}")
    for path in orphan_notebooks(toc):
        logger.warning("%s is not in _toc.yml and will not be built", path.name)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(source)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    if all_pages:
        cmd.append("--all")
    if path_output is not None:
        cmd += ["--path-output", str(Path(path_output).resolve())]
    logger.info("%s", shlex.join(cmd))
    start = time.perf_counter()
    env = kernel_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(cmd, cwd=source, env=env)
    logger.info("jupyter-book finished in %.1f s (exit %d)", time.perf_counter() - start,
                result.returncode)
    if result.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {result.returncode}); "
                           "warnings count as errors, see the messages above")
    html = Path(path_output or source).resolve() / "_build" / "html"
    if check:
        problems = html_problems(html, toc)
        if problems:
            raise RuntimeError("the build reported success but the HTML has problems:\n  "
                               + "\n  ".join(problems))
    return html


#: The smoke-scale book: the executed copies of ``make chapters SCALE=smoke``, rendered.
SMOKE_HTML = DEFAULT_OUTPUT_DIRS["smoke"] / "html"


def build_smoke_html(smoke_dir: Path | None = None, out: Path | None = None) -> Path:
    """Render the smoke-scale copies in ``smoke_dir`` as a browsable book in ``out``.

    A temporary source tree holds the book's pages, with each chapter replaced by its
    executed smoke copy where there is one (the others keep their committed, paper-scale
    outputs; the banner of every page says which chapters are smoke runs). Warnings do
    not fail this build: smoke outputs are tiny runs, not the book.

    Returns:
        ``out`` (default ``_build/smoke/html``), containing ``index.html``.
    """
    import shutil
    import tempfile

    smoke_dir = Path(smoke_dir or DEFAULT_OUTPUT_DIRS["smoke"]).resolve()
    out = Path(out or smoke_dir / "html").resolve()
    done = [c for c in chapters() if (smoke_dir / f"{c.name}.ipynb").exists()]
    if not done:
        raise RuntimeError(f"no smoke-scale copies in {smoke_dir} (make chapters SCALE=smoke)")
    with tempfile.TemporaryDirectory(prefix="l2o-smoke-book-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("_toc.yml", "references.bib"):
            shutil.copy(ROOT / name, src / name)
        shutil.copytree(BOOK_DIR, src / "book", ignore=shutil.ignore_patterns("params"))
        for c in done:
            shutil.copy(smoke_dir / f"{c.name}.ipynb", src / "book" / f"{c.name}.ipynb")
        config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
        config["title"] = f"{config.get('title', 'l2o')} (smoke-scale run)"
        ids = ", ".join(c.id for c in done)
        config.setdefault("html", {})["announcement"] = (
            f"Smoke scale: chapters {ids} show tiny runs that only check the code, "
            "not results. The book itself is in _build/html.")
        config["html"]["use_repository_button"] = False
        (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False),
                                         encoding="utf-8")
        build_book(path_output=Path(tmp) / "out", strict=False, source=src, check=False)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(Path(tmp) / "out" / "_build" / "html", out)
    logger.info("smoke-scale book (chapters %s): %s", ids, out / "index.html")
    return out


# ==================================================================== MathJax
#: The vendored MathJax (npm ``mathjax@3.2.2``, ``es5/tex-svg-full.js``: TeX input with
#: every extension, SVG output, no fonts to fetch), served from the book's ``_static``.
MATHJAX_FILE = BOOK_DIR / "_vendor" / "mathjax" / "tex-svg-full.js"
MATHJAX_SHA256 = "a4354ff94fd868aea0cc6eaaa79a57fda0588646fc46ee3700a349ee0a11cbe6"
#: Where the built book serves it (``mathjax_path`` in ``_config.yml``).
MATHJAX_URL = "_static/mathjax/tex-svg-full.js"
_MATHJAX_CDN = re.compile(r'src="https?://[^"]*mathjax[^"]*"', re.IGNORECASE)


# ============================================================ execution statistics
def _provenance(path: Path) -> dict | None:
    import nbformat

    if not Path(path).exists():
        return None
    prov = nbformat.read(path, as_version=4).metadata.get(PROVENANCE_KEY)
    return dict(prov) if isinstance(prov, Mapping) else None


def execution_records(toc_path: Path = TOC_PATH,
                      smoke_dir: Path | None = None) -> list[dict[str, Any]]:
    """Per chapter: the provenance of its paper-scale and smoke-scale runs.

    Paper scale: the committed notebook's provenance. Smoke scale: the executed copy in
    ``smoke_dir`` (default ``_build/smoke``), if there is one. A notebook is sorted by
    the ``scale`` its provenance records, so the smoke-scale book reports correctly too.
    """
    smoke_dir = Path(smoke_dir or DEFAULT_OUTPUT_DIRS["smoke"])
    out = []
    for c in chapters(toc_path):
        rec: dict[str, Any] = {"chapter": c, "paper": None, "smoke": None}
        for path in (c.path, BOOK_DIR / c.path.name, smoke_dir / c.path.name):
            prov = _provenance(path)
            if prov and prov.get("scale") in rec and rec[prov["scale"]] is None:
                rec[prov["scale"]] = prov
        out.append(rec)
    return out


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def execution_markdown(toc_path: Path = TOC_PATH, results_dir: Path = ROOT / "results",
                       smoke_dir: Path | None = None) -> tuple[str, str]:
    """The two tables of the execution-statistics page, as MyST Markdown: the chapter
    runs (paper and smoke scale) and the computations in ``results/*/``."""
    import json

    recs = execution_records(toc_path, smoke_dir)
    lines = ["| chapter | paper scale | run on | commit | smoke scale |",
             "|---|---|---|---|---|"]
    total = {"paper": 0.0, "smoke": 0.0}
    for r in recs:
        c, paper, smoke = r["chapter"], r["paper"] or {}, r["smoke"] or {}
        git = paper.get("git") or {}
        commit = (git.get("commit") or "")[:7]
        if commit and git.get("dirty"):
            commit += " (uncommitted changes)"
        for scale, prov in (("paper", paper), ("smoke", smoke)):
            total[scale] += prov.get("wall_time_s") or 0.0
        lines.append(f"| {{doc}}`{c.id} <{Path(c.docname).name}>` "
                     f"| {_duration(paper.get('wall_time_s'))} "
                     f"| {str(paper.get('date') or '–')[:10]} | {commit or '–'} "
                     f"| {_duration(smoke.get('wall_time_s'))} |")
    lines.append(f"| **all** | **{_duration(total['paper'])}** | | "
                 f"| **{_duration(total['smoke'] or None)}** |")
    machines = {json.dumps({k: (r['paper'] or {}).get('machine', {}).get(k)
                            for k in ('platform', 'cpu_count', 'torch')}, sort_keys=True)
                for r in recs if r["paper"]}
    text = "\n".join(lines)
    if len(machines) == 1:
        m = json.loads(machines.pop())
        text += (f"\n\nThe paper-scale runs: {m['cpu_count']} CPUs, torch {m['torch']}, "
                 f"`{m['platform']}`.")
    rows = ["| result | computation | wall time | date |", "|---|---|---|---|"]
    for prov_path in sorted(Path(results_dir).glob("*/provenance.json")):
        try:
            prov = json.loads(prov_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        # the program and its sub-command, without environment assignments
        words = [w for w in str(prov.get("command") or "").split() if "=" not in w]
        short = " ".join(words[:4]) or "–"
        date = prov.get("date") or prov.get("started_utc") or "–"
        rows.append(f"| `results/{prov_path.parent.name}/` | `{short}` "
                    f"| {_duration(prov.get('wall_time_s'))} | {str(date)[:10]} |")
    return text, "\n".join(rows)


def config_markdown(qualname: str) -> str:
    """A frozen config dataclass as a MyST table: field, default, and what it means.

    The meaning is the field's trailing comment in the class body, else its entry in
    the Google-style docstring (``name: description``). The defaults are read from the
    class, so the book's table cannot drift from the code.

    Args:
        qualname: e.g. ``"l2o.gps.GPSConfig"``.
    """
    import dataclasses
    import importlib
    import inspect

    module, _, name = qualname.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    source = inspect.getsource(cls)
    comments = dict(re.findall(r"^\s+(\w+)\s*:[^=\n]+=[^#\n]*#\s*(.+)$", source, re.M))
    doc = inspect.getdoc(cls) or ""
    described: dict[str, str] = {}
    current = None
    for line in doc.splitlines():
        m = re.match(r"^\s{4}(\w+)\s*:\s*(.*)$", line)
        if m and m.group(1) in {f.name for f in dataclasses.fields(cls)}:
            current = m.group(1)
            described[current] = m.group(2).strip()
        elif current and line.startswith(" " * 8):
            described[current] += " " + line.strip()
        else:
            current = None
    rows = ["| field | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        default = (f.default if f.default is not dataclasses.MISSING
                   else f.default_factory() if f.default_factory is not dataclasses.MISSING
                   else "required")
        text = comments.get(f.name) or described.get(f.name, "")
        text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)  # Sphinx roles -> code
        text = text.replace("|", "\\|").replace("``", "`")
        rows.append(f"| `{f.name}` | `{default!r}` | {text} |")
    return "\n".join(rows)


def setup(app):  # pragma: no cover - exercised by the book build
    """Sphinx extension of the book: two directives that render tables from the code.

    ``execution-statistics`` with ``:table: chapters`` renders the chapter runs (paper
    and smoke scale, from provenance), with ``:table: results`` the long computations in
    ``results/*/``. ``config-defaults`` with a dotted class name as argument renders
    that config dataclass (:func:`config_markdown`).
    """
    from docutils.parsers.rst import directives
    from sphinx.util.docutils import SphinxDirective

    class ExecutionStatistics(SphinxDirective):
        option_spec = {"table": lambda arg: directives.choice(arg, ("chapters", "results"))}

        def run(self):
            from docutils.statemachine import StringList

            source = Path(self.env.srcdir)
            chapters_md, results_md = execution_markdown(source / "_toc.yml",
                                                         source / "results"
                                                         if (source / "results").is_dir()
                                                         else ROOT / "results")
            text = results_md if self.options.get("table") == "results" else chapters_md
            node = _container()
            self.state.nested_parse(StringList(text.splitlines(), source="execution"),
                                    self.content_offset, node)
            return node.children

    class ConfigDefaults(SphinxDirective):
        required_arguments = 1

        def run(self):
            from docutils.statemachine import StringList

            node = _container()
            text = config_markdown(self.arguments[0])
            self.state.nested_parse(StringList(text.splitlines(), source="config"),
                                    self.content_offset, node)
            return node.children

    app.add_directive("execution-statistics", ExecutionStatistics)
    app.add_directive("config-defaults", ConfigDefaults)
    # A figure pasted from another page (``{glue:any}`` with ``:doc:``) loses the alt text
    # of the cell that drew it; the same image file elsewhere in the book has it.
    app.connect("doctree-read", _collect_alt_texts)
    app.connect("env-merge-info", _merge_alt_texts)
    app.connect("doctree-resolved", _fill_alt_texts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def _image_name(node) -> str:
    return Path(str(node.get("uri", ""))).name


def _has_alt(node) -> bool:
    alt = str(node.get("alt", "")).strip()
    return bool(alt) and not alt.endswith(_image_name(node))


def _collect_alt_texts(app, doctree) -> None:  # pragma: no cover - Sphinx event
    from docutils import nodes

    store = app.env.__dict__.setdefault("l2o_image_alt", {})
    for node in doctree.findall(nodes.image):
        if _has_alt(node):
            store[_image_name(node)] = node["alt"]


def _merge_alt_texts(app, env, docnames, other) -> None:  # pragma: no cover
    env.__dict__.setdefault("l2o_image_alt", {}).update(
        other.__dict__.get("l2o_image_alt", {}))


def _fill_alt_texts(app, doctree, docname) -> None:  # pragma: no cover - Sphinx event
    from docutils import nodes

    store = app.env.__dict__.get("l2o_image_alt", {})
    for node in doctree.findall(nodes.image):
        if not _has_alt(node) and _image_name(node) in store:
            node["alt"] = store[_image_name(node)]


def _container():
    from docutils import nodes

    return nodes.container()


# ======================================================================== cli
def _command_line(argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", "-m", "l2o.book", *args])


def parse_overrides(pairs: Sequence[Sequence[str]] | None) -> dict[str, Any]:
    """``-p NAME VALUE`` pairs as parameters; each value is read as YAML.

    Raises:
        ValueError: for a name that is not an identifier.
    """
    out = {}
    for name, value in pairs or []:
        if not name.isidentifier():
            raise ValueError(f"Invalid parameter name: {name!r}")
        out[name] = yaml.safe_load(value)
    return out


def _run(args: argparse.Namespace, command: str) -> int:
    selected = select_chapters(args.chapters)
    if not selected:
        logger.error("no chapters in _toc.yml")
        return 1
    overrides = parse_overrides(args.param)
    if overrides and args.scale == "paper":
        raise ValueError("-p changes a run's parameters; paper-scale values live in "
                         "book/params/paper.yaml (and the notebooks' defaults), so -p is "
                         "for smoke runs only")
    failed = []
    git = git_state()  # once, before any chapter rewrites its notebook
    for chapter in selected:
        try:
            params = None
            if overrides:
                params = {**chapter_params(chapter, args.scale), **overrides}
                unknown = sorted(set(overrides) - set(notebook_defaults(chapter.path)))
                if unknown:
                    raise ValueError(f"{chapter.path.name}'s parameters cell does not "
                                     f"declare {', '.join(unknown)}")
            execute_chapter(chapter, args.scale, output_dir=args.output_dir, params=params,
                            command=command, timeout=args.cell_timeout, git=git)
        except ValueError:
            raise
        except Exception as exc:  # report every chapter, then fail
            logger.error("%s failed: %s", chapter.name, str(exc).strip().splitlines()[-1]
                         if str(exc).strip() else type(exc).__name__)
            logger.debug("details", exc_info=True)
            failed.append(chapter.name)
    if args.scale == "smoke" and not args.no_html:
        try:
            build_smoke_html(args.output_dir)
        except RuntimeError as exc:
            logger.warning("no smoke-scale book: %s", exc)
    if failed:
        logger.error("failed chapters: %s (partial copies in %s)", ", ".join(failed),
                     args.output_dir or DEFAULT_OUTPUT_DIRS[args.scale])
        return 1
    return 0


def _check(args: argparse.Namespace) -> int:
    problems = []
    for name in missing_toc_files():
        problems.append(f"_toc.yml lists {name}, which does not exist")
    for path in orphan_notebooks():
        logger.warning("%s is not in _toc.yml (not built, not tested)", path.name)
    for chapter in select_chapters(args.chapters):
        problems += notebook_problems(chapter.path)
    for line in problems:
        logger.error("%s", line)
    if not problems:
        logger.info("all chapter notebooks pass the structure checks")
    return 1 if problems else 0


def _build(args: argparse.Namespace) -> int:
    try:
        html = build_book(args.path_output, all_pages=not args.incremental)
    except RuntimeError as exc:
        logger.error("%s", exc)
        return 1
    logger.info("book built: %s (math typeset offline by the vendored MathJax)",
                html / "index.html")
    return 0


def _smoke_html(args: argparse.Namespace) -> int:
    try:
        build_smoke_html(args.smoke_dir)
    except RuntimeError as exc:
        logger.error("%s", exc)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m l2o.book", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute chapters with papermill")
    run.add_argument("--scale", choices=SCALES, required=True,
                     help="parameter set from book/params/<scale>.yaml")
    run.add_argument("--output-dir", type=Path, default=None,
                     help="where executed copies go (smoke default: _build/smoke)")
    run.add_argument("--cell-timeout", type=float, default=None,
                     help="per-cell timeout in seconds (default: none)")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="override one parameter for this smoke run (value read as YAML)")
    run.add_argument("--no-html", action="store_true",
                     help="smoke scale: do not render _build/smoke/html afterwards")
    run.add_argument("chapters", nargs="*", help="chapter ids or names (default: all)")
    check = sub.add_parser("check", help="structure checks of the committed notebooks")
    check.add_argument("chapters", nargs="*", help="chapter ids or names (default: all)")
    build = sub.add_parser("build", help="build the HTML book (warnings are errors)")
    build.add_argument("--path-output", type=Path, default=None,
                       help="put _build/html under this folder (default: repository root)")
    build.add_argument("--incremental", action="store_true",
                       help="only rebuild changed pages (may hide old warnings)")
    smoke = sub.add_parser("smoke-html", help="render the smoke-scale copies as a book "
                           "in _build/smoke/html")
    smoke.add_argument("--smoke-dir", type=Path, default=None,
                       help="folder of the executed copies (default: _build/smoke)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # papermill logs every notebook it opens
        logging.getLogger("papermill").setLevel(logging.WARNING)
    try:
        if args.command == "run":
            return _run(args, _command_line(argv))
        if args.command == "check":
            return _check(args)
        if args.command == "smoke-html":
            return _smoke_html(args)
        return _build(args)
    except ValueError as exc:  # bad chapter names, parameter files
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
