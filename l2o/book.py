"""The book driver: run chapters with papermill, check committed notebooks, build the book.

Command line (the Makefile's ``make chapters`` and ``make book`` call it)::

    python -m l2o.book run --scale smoke|paper [CHAPTER ...]   # all chapters if none given
    python -m l2o.book check [CHAPTER ...]
    python -m l2o.book build [--path-output DIR]

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

Scales
    ``smoke`` writes the executed copies to ``_build/smoke/`` (or ``--output-dir``);
    ``paper`` writes the executed notebook back in place, with papermill's volatile
    metadata (timestamps, durations) removed and one provenance entry
    (:data:`PROVENANCE_KEY` in the notebook metadata: parameters, scale, git commit,
    dirty flag, machine, wall time, date, command). A paper run that fails leaves the
    committed notebook untouched; the partial copy stays in ``_build/paper/``.

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
    "html_problems",
    "main",
]

ROOT = Path(__file__).resolve().parents[1]
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


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the working tree (untracked files count as dirty)."""
    # --no-optional-locks: never take index.lock (a commit may be running beside us).
    status = _git("--no-optional-locks", "status", "--porcelain")
    return {"commit": _git("rev-parse", "HEAD"),
            "dirty": None if status is None else bool(status)}


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
                    timeout: float | None = None) -> Path:
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
    git = git_state()  # before the run rewrites anything
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
    nb.metadata[PROVENANCE_KEY] = {
        "scale": scale,
        "parameters": {**defaults, **params},
        "injected_parameters": params,
        "git": git,
        "machine": machine_info(env),
        "wall_time_s": round(wall, 1),
        "date": date.isoformat(timespec="seconds"),
        "command": command or "python -m l2o.book run --scale " + scale + " " + chapter.id,
        "versions": {"papermill": _version("papermill"), "l2o": _version("l2o")},
    }
    target = chapter.path if scale == "paper" else work_path
    tmp = target.with_name(f".{target.name}.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, target)  # atomic: a committed notebook is never half written
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


def html_problems(html_dir: Path, toc_path: Path = TOC_PATH) -> list[str]:
    """Missing pages or figures in a built book (empty list: fine)."""
    html_dir = Path(html_dir)
    problems = []
    if not (html_dir / "index.html").exists():
        problems.append(f"{html_dir / 'index.html'} is missing")
    for docname in toc_docnames(toc_path):
        page = html_dir / f"{docname}.html"
        if not page.exists():
            problems.append(f"{page} is missing (toc entry {docname})")
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
               strict: bool = True, source: Path = ROOT, fetch_mathjax: bool = False) -> Path:
    """Build the HTML book with warnings as errors and check what it produced.

    Args:
        path_output: where ``_build/html`` goes (default: the repository root).
        all_pages: rebuild every page (an incremental build would not repeat the
            warnings of unchanged pages).
        strict: ``-W -n --keep-going``.
        source: the book's root (with ``_config.yml`` and ``_toc.yml``).
        fetch_mathjax: first install MathJax from npm into :data:`MATHJAX_NPM_DIR`
            (needs npm and the registry); otherwise a local copy is used if there is one
            (:func:`local_mathjax`), else the CDN.

    Returns:
        The HTML directory.

    Raises:
        RuntimeError: the build failed, or pages or figures are missing.
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
    result = subprocess.run(cmd, cwd=source, env=kernel_env())
    logger.info("jupyter-book finished in %.1f s (exit %d)", time.perf_counter() - start,
                result.returncode)
    if result.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {result.returncode}); "
                           "warnings count as errors, see the messages above")
    html = Path(path_output or source).resolve() / "_build" / "html"
    if fetch_mathjax:
        _fetch_mathjax()
    mathjax = local_mathjax()
    if mathjax is not None:
        pages = use_local_mathjax(html, mathjax)
        logger.info("MathJax served from _static/mathjax (%d pages) for offline reading", pages)
    else:
        logger.info("MathJax comes from a CDN (offline readers see raw TeX); "
                    "`python -m l2o.book build --fetch-mathjax` serves a local copy")
    problems = html_problems(html, toc)
    if problems:
        raise RuntimeError("the build reported success but the HTML is incomplete:\n  "
                           + "\n  ".join(problems))
    return html


# ==================================================================== MathJax
#: npm installs MathJax here with ``--fetch-mathjax`` (inside the ignored _build/).
MATHJAX_NPM_DIR = ROOT / "_build" / "mathjax"
#: The one MathJax 3 file that works alone: TeX input with every extension, SVG output
#: (no web fonts to fetch).
MATHJAX_FILE = Path("node_modules", "mathjax", "es5", "tex-svg-full.js")
_MATHJAX_CDN = re.compile(r'src="https://cdn\.jsdelivr\.net/npm/mathjax@3/es5/[\w.-]+\.js"')


def local_mathjax() -> Path | None:
    """A local MathJax file: ``$L2O_MATHJAX``, or one installed by npm (under
    :data:`MATHJAX_NPM_DIR` or the repository root); None if there is none."""
    candidates = [os.environ.get("L2O_MATHJAX"), MATHJAX_NPM_DIR / MATHJAX_FILE,
                  ROOT / MATHJAX_FILE]
    for path in candidates:
        if path and Path(path).is_file():
            return Path(path)
    return None


def _fetch_mathjax() -> None:
    if (MATHJAX_NPM_DIR / MATHJAX_FILE).is_file():
        return
    MATHJAX_NPM_DIR.mkdir(parents=True, exist_ok=True)
    cmd = ["npm", "install", "--prefix", str(MATHJAX_NPM_DIR), "--no-audit", "--no-fund",
           "mathjax@3"]
    try:
        subprocess.run(cmd, check=True, timeout=300, capture_output=True, text=True)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("could not install MathJax with npm (%s); using the CDN", exc)


def use_local_mathjax(html_dir: Path, mathjax: Path) -> int:
    """Copy ``mathjax`` into the built book and point every page at it.

    Sphinx links MathJax from a CDN; after the build the CDN ``<script>`` of each page is
    replaced by a relative link to ``_static/mathjax/``. Returns the pages changed.
    """
    import shutil

    target = Path(html_dir) / "_static" / "mathjax" / mathjax.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mathjax, target)
    changed = 0
    for page in Path(html_dir).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        rel = Path(os.path.relpath(target, page.parent)).as_posix()
        new, n = _MATHJAX_CDN.subn(f'src="{rel}"', text)
        if n:
            page.write_text(new, encoding="utf-8")
            changed += 1
    return changed


# ======================================================================== cli
def _command_line(argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", "-m", "l2o.book", *args])


def _run(args: argparse.Namespace, command: str) -> int:
    selected = select_chapters(args.chapters)
    if not selected:
        logger.error("no chapters in _toc.yml")
        return 1
    failed = []
    for chapter in selected:
        try:
            execute_chapter(chapter, args.scale, output_dir=args.output_dir,
                            command=command, timeout=args.cell_timeout)
        except Exception as exc:  # report every chapter, then fail
            logger.error("%s failed: %s", chapter.name, str(exc).strip().splitlines()[-1]
                         if str(exc).strip() else type(exc).__name__)
            logger.debug("details", exc_info=True)
            failed.append(chapter.name)
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
        html = build_book(args.path_output, all_pages=not args.incremental,
                          fetch_mathjax=args.fetch_mathjax)
    except RuntimeError as exc:
        logger.error("%s", exc)
        return 1
    logger.info("book built: %s", html / "index.html")
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
    run.add_argument("chapters", nargs="*", help="chapter ids or names (default: all)")
    check = sub.add_parser("check", help="structure checks of the committed notebooks")
    check.add_argument("chapters", nargs="*", help="chapter ids or names (default: all)")
    build = sub.add_parser("build", help="build the HTML book (warnings are errors)")
    build.add_argument("--path-output", type=Path, default=None,
                       help="put _build/html under this folder (default: repository root)")
    build.add_argument("--incremental", action="store_true",
                       help="only rebuild changed pages (may hide old warnings)")
    build.add_argument("--fetch-mathjax", action="store_true",
                       help="install MathJax with npm into _build/mathjax and serve it "
                            "from the book (math readable offline)")
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
        return _build(args)
    except ValueError as exc:  # bad chapter names, parameter files
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
