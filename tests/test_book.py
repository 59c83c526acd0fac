"""The book driver (l2o.book) and the book build.

The unit tests use small synthetic tocs, parameter files and notebooks; the build test
(marker ``book``) builds the real book into a temporary folder with warnings as errors
and checks that every page of the toc and every figure made it into the HTML.
"""

from __future__ import annotations


import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from l2o import book


# ------------------------------------------------------------------ fixtures
def _notebook(params_source="seed = 0\nn = 100", executed=True, provenance=True):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    params = new_code_cell(params_source, execution_count=1 if executed else None)
    params.metadata["tags"] = ["parameters"]
    body = new_code_cell("print(round(n / 3, 2))", execution_count=2 if executed else None)
    if executed:
        body.outputs = [new_output("stream", name="stdout", text="33.33\n")]
    nb.cells = [new_markdown_cell("# Title"), params, body]
    if provenance:
        nb.metadata[book.PROVENANCE_KEY] = {
            "scale": "paper", "parameters": {"seed": 0, "n": 100}, "git": {},
            "machine": {}, "wall_time_s": 1.0, "date": "2026-01-01", "command": "x"}
    return nb


@pytest.fixture
def tiny_book(tmp_path):
    """A toc with parts and sections, two chapter notebooks and a markdown page."""
    (tmp_path / "book").mkdir()
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n"
        "  - caption: A\n    chapters:\n      - file: book/notation.md\n"
        "      - file: book/01_first\n        sections:\n          - file: book/02_second\n"
        "  - caption: B\n    chapters:\n      - file: book/references\n")
    for name in ("intro", "notation", "references"):
        (tmp_path / "book" / f"{name}.md").write_text(f"# {name}\n")
    for name in ("01_first", "02_second"):
        nbformat.write(_notebook(), tmp_path / "book" / f"{name}.ipynb")
    return tmp_path


# ----------------------------------------------------------------- toc
def test_toc_docnames_in_reading_order(tiny_book):
    assert book.toc_docnames(tiny_book / "_toc.yml") == [
        "book/intro", "book/notation", "book/01_first", "book/02_second", "book/references"]


def test_chapters_are_the_toc_notebooks(tiny_book):
    found = book.chapters(tiny_book / "_toc.yml")
    assert [(c.id, c.name, c.docname) for c in found] == [
        ("01", "01_first", "book/01_first"), ("02", "02_second", "book/02_second")]
    assert all(c.path.exists() for c in found)


def test_missing_and_orphan_files(tiny_book):
    toc = tiny_book / "_toc.yml"
    assert book.missing_toc_files(toc) == []
    nbformat.write(_notebook(), tiny_book / "book" / "03_later.ipynb")
    assert [p.name for p in book.orphan_notebooks(toc)] == ["03_later.ipynb"]
    (tiny_book / "book" / "02_second.ipynb").unlink()
    assert book.missing_toc_files(toc) == ["book/02_second"]


def test_select_chapters_by_id_name_or_path(tiny_book):
    toc = tiny_book / "_toc.yml"
    for name in ("2", "02", "02_second", "book/02_second.ipynb"):
        assert [c.name for c in book.select_chapters([name], toc)] == ["02_second"]
    assert len(book.select_chapters([], toc)) == 2
    with pytest.raises(ValueError, match="no chapter '7'"):
        book.select_chapters(["7"], toc)


def test_real_toc_has_the_front_and_back_matter():
    names = book.toc_docnames()
    assert names[0] == "book/intro"
    assert {"book/notation", "book/references"} <= set(names)


# ---------------------------------------------------------- parameters
def test_load_params_normalises_chapter_ids(tmp_path):
    (tmp_path / "smoke.yaml").write_text('1: {n: 3}\n"02": {seed: 1}\n"03":\n')
    assert book.load_params("smoke", tmp_path) == {"01": {"n": 3}, "02": {"seed": 1},
                                                    "03": {}}


def test_load_params_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="Invalid scale"):
        book.load_params("huge", tmp_path)
    (tmp_path / "paper.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must map chapter ids"):
        book.load_params("paper", tmp_path)
    (tmp_path / "smoke.yaml").write_text('1: {n: 3}\n"01": {n: 4}\n')
    with pytest.raises(ValueError, match="given twice"):
        book.load_params("smoke", tmp_path)


def test_chapter_params_must_be_declared(tiny_book):
    chapter = book.chapters(tiny_book / "_toc.yml")[0]
    params = tiny_book / "params"
    params.mkdir()
    (params / "smoke.yaml").write_text('"01": {n: 5}\n')
    assert book.chapter_params(chapter, "smoke", params) == {"n": 5}
    assert book.notebook_defaults(chapter.path) == {"seed": 0, "n": 100}
    (params / "smoke.yaml").write_text('"01": {num_iters: 5}\n')
    with pytest.raises(ValueError, match="num_iters"):
        book.chapter_params(chapter, "smoke", params)


def test_real_params_files_load():
    for scale in book.SCALES:
        assert isinstance(book.load_params(scale), dict)


# ------------------------------------------------------ execution pieces
def test_kernel_env_pins_threads_and_keeps_data_dir():
    env = book.kernel_env({"L2O_DATA_DIR": "/data", "OMP_NUM_THREADS": "8",
                           "MPLBACKEND": "Agg"})
    assert env["OMP_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == "1"
    assert env["L2O_DATA_DIR"] == "/data"
    assert env["L2O_NO_PROGRESS"] == "1" and env["TQDM_DISABLE"] == "1"
    assert env["MPLBACKEND"] != "Agg"  # Agg would swallow every plt.show() figure


def test_strip_volatile_metadata():
    nb = _notebook()
    nb.metadata["papermill"] = {"duration": 1.5, "start_time": "t"}
    for cell in nb.cells:
        cell.metadata["papermill"] = {"duration": 0.1}
        cell.metadata["execution"] = {"iopub.status.busy": "t"}
        cell.metadata.setdefault("tags", [])
    book.strip_volatile_metadata(nb)
    assert "papermill" not in nb.metadata
    for cell in nb.cells:
        assert not set(cell.metadata) & {"papermill", "execution"}
        assert cell.metadata.get("tags", ["x"]) != []
    assert nb.cells[1].metadata["tags"] == ["parameters"]


# ----------------------------------------------------------- checks
def test_notebook_problems_accepts_a_good_notebook(tmp_path):
    path = tmp_path / "01_ok.ipynb"
    nbformat.write(_notebook(), path)
    assert book.notebook_problems(path) == []


@pytest.mark.parametrize("defect, message", [
    ("no_params", "0 cells tagged 'parameters'"),
    ("two_params", "2 cells tagged 'parameters'"),
    ("unexecuted", "never executed"),
    ("error", "error output"),
    ("no_provenance", "no 'l2o_provenance'"),
    ("smoke_provenance", "'smoke' scale"),
    ("papermill_metadata", "papermill metadata"),
    ("out_of_order", "not increasing"),
])
def test_notebook_problems_finds_defects(tmp_path, defect, message):
    nb = _notebook(executed=defect != "unexecuted", provenance=defect != "no_provenance")
    if defect == "no_params":
        nb.cells[1].metadata["tags"] = []
    elif defect == "two_params":
        nb.cells[2].metadata["tags"] = ["parameters"]
    elif defect == "error":
        nb.cells[2].outputs.append(new_output("error", ename="ValueError", evalue="bad",
                                              traceback=[]))
    elif defect == "smoke_provenance":
        nb.metadata[book.PROVENANCE_KEY]["scale"] = "smoke"
    elif defect == "papermill_metadata":
        nb.metadata["papermill"] = {"duration": 1.0}
    elif defect == "out_of_order":
        nb.cells[1].execution_count = 5
    path = tmp_path / "01_bad.ipynb"
    nbformat.write(nb, path)
    problems = book.notebook_problems(path)
    assert any(message in p for p in problems), problems


def test_html_problems(tiny_book, tmp_path):
    toc = tiny_book / "_toc.yml"
    html = tmp_path / "html"
    assert any("index.html" in p for p in book.html_problems(html, toc))
    (html / "book").mkdir(parents=True)
    (html / "index.html").write_text("<html></html>")
    for name in book.toc_docnames(toc):
        (html / f"{name}.html").write_text("<p>text</p>")
    assert any("mathjax" in p for p in book.html_problems(html, toc))
    (html / book.MATHJAX_URL).parent.mkdir(parents=True)
    (html / book.MATHJAX_URL).write_text("/* MathJax */")
    assert book.html_problems(html, toc) == []  # the notebooks have no images
    nb = _notebook()
    nb.cells[2].outputs.append(new_output("display_data", data={"image/png": "iVBORw0K",
                                                                "text/plain": "<Figure>"}))
    nbformat.write(nb, tiny_book / "book" / "01_first.ipynb")
    problems = book.html_problems(html, toc)
    assert len(problems) == 1 and "01_first" in problems[0] and "no figure" in problems[0]
    (html / "book" / "02_second.html").unlink()
    assert any("02_second.html is missing" in p for p in book.html_problems(html, toc))


def test_cli_rejects_unknown_chapter(caplog):
    assert book.main(["check", "99_nothing"]) == 2


def _page(body: str) -> str:
    return f"<html><head><title>\\(x\\)</title></head><body><main>{body}</main></body></html>"


@pytest.mark.parametrize("body, problem", [
    ("<p>| a | b |\n|---|---|\n| 1 | 2 |</p>", "starts with '|'"),
    ("<p>the step <em>\\(\\Delta x\\)</em> is raw</p>", "TeX outside"),
    ("<p>a cost $\\psi$ in prose</p>", "TeX outside"),
    ("<li>the ratio \\frac{a}{b}</li>", "TeX outside"),
    ("<p><span class=\"pasted-text\">$x_t$</span></p>", "TeX outside"),
])
def test_html_text_problems_finds_raw_tables_and_tex(body, problem):
    found = book.html_text_problems(_page(body), "page")
    assert any(problem in p for p in found), found


@pytest.mark.parametrize("body", [
    "<p>a step <span class=\"math notranslate nohighlight\">\\(\\Delta x\\)</span></p>",
    "<div class=\"math notranslate nohighlight\">\\[x^{(t)}\\]</div>",
    "<div class=\"highlight\"><pre>glue(\"a\", r\"$\\psi$\")</pre></div>",
    "<p>code <code>\\alpha</code> and prices of $5 and $6</p>",
    "<table><tr><td>| not a paragraph</td></tr></table><p>text | with a pipe</p>",
])
def test_html_text_problems_accepts_rendered_pages(body):
    assert book.html_text_problems(_page(body), "page") == []


def test_html_problems_flags_a_cdn_mathjax(tiny_book, tmp_path):
    toc = tiny_book / "_toc.yml"
    html = tmp_path / "html"
    (html / "book").mkdir(parents=True)
    (html / book.MATHJAX_URL).parent.mkdir(parents=True)
    (html / book.MATHJAX_URL).write_text("/* MathJax */")
    (html / "index.html").write_text("<html></html>")
    for name in book.toc_docnames(toc):
        (html / f"{name}.html").write_text(
            '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>'
            '<main><span class="math">\\(x\\)</span></main>')
    problems = book.html_problems(html, toc)
    assert len(problems) == len(book.toc_docnames(toc))
    assert all("CDN" in p for p in problems)


def test_vendored_mathjax_is_the_pinned_file():
    import hashlib

    digest = hashlib.sha256(book.MATHJAX_FILE.read_bytes()).hexdigest()
    assert digest == book.MATHJAX_SHA256
    source = (book.MATHJAX_FILE.parent / "SOURCE.txt").read_text(encoding="utf-8")
    assert book.MATHJAX_SHA256 in source and "mathjax@3.2.2" in source
    assert (book.MATHJAX_FILE.parent / "LICENSE").exists()


def test_config_serves_the_vendored_mathjax_and_myst_tables():
    import yaml

    cfg = yaml.safe_load((book.ROOT / "_config.yml").read_text(encoding="utf-8"))
    sphinx = cfg["sphinx"]["config"]
    static = book.ROOT / sphinx["html_static_path"][0]
    assert (static / sphinx["mathjax_path"]).resolve() == book.MATHJAX_FILE.resolve()
    assert book.MATHJAX_URL.endswith(sphinx["mathjax_path"])
    assert sphinx["nb_render_markdown_format"] == "myst"
    assert not (book.ROOT / "_static").exists(), (
        "Jupyter Book loads every .js under a root _static/ on every page")
    toc = yaml.safe_load(book.TOC_PATH.read_text(encoding="utf-8"))
    numbered = [part["caption"] for part in toc["parts"] if part.get("numbered")]
    assert numbered == ["Chapters"]


def test_parse_overrides_reads_yaml_values():
    assert book.parse_overrides([["kl_step", "1.0"], ["datasets", "[mnist, cifar10]"],
                                 ["dataset", "cifar10"]]) == {
        "kl_step": 1.0, "datasets": ["mnist", "cifar10"], "dataset": "cifar10"}
    with pytest.raises(ValueError, match="Invalid parameter name"):
        book.parse_overrides([["not a name", "1"]])


def test_cli_refuses_overrides_at_paper_scale():
    assert book.main(["run", "--scale", "paper", "01", "-p", "seed", "3"]) == 2


def test_config_markdown_lists_every_field_with_its_default():
    import dataclasses

    from l2o.gps import GPSConfig

    table = book.config_markdown("l2o.gps.GPSConfig").splitlines()
    assert table[0] == "| field | default | meaning |"
    fields = dataclasses.fields(GPSConfig)
    assert len(table) == 2 + len(fields)
    for f, row in zip(fields, table[2:]):
        assert row.startswith(f"| `{f.name}` | `{f.default!r}` |")
        assert row.split("|")[3].strip(), f"GPSConfig.{f.name} has no description"


def test_execution_records_read_provenance_by_scale(tiny_book, tmp_path):
    toc = tiny_book / "_toc.yml"
    smoke = tmp_path / "smoke"
    smoke.mkdir()
    nb = _notebook()
    nb.metadata[book.PROVENANCE_KEY]["scale"] = "smoke"
    nb.metadata[book.PROVENANCE_KEY]["wall_time_s"] = 2.5
    nbformat.write(nb, smoke / "01_first.ipynb")
    recs = book.execution_records(toc, smoke)
    assert [r["chapter"].id for r in recs] == ["01", "02"]
    assert recs[0]["paper"]["wall_time_s"] == 1.0 and recs[0]["smoke"]["wall_time_s"] == 2.5
    assert recs[1]["smoke"] is None
    chapters_md, results_md = book.execution_markdown(toc, tmp_path / "no-results", smoke)
    assert "| {doc}`01 <01_first>` | 1.0 s |" in chapters_md
    assert "2.5 s" in chapters_md and results_md.count("\n") == 1


# ------------------------------------------------------------ plotting
def test_method_styles_are_fixed_and_distinct():
    from l2o.plotting import METHOD_STYLE

    from l2o.plotting import OKABE_ITO

    labels = {m: s["label"] for m, s in METHOD_STYLE.items()}
    assert labels == {
        "sgd": "SGD", "momentum": "Momentum", "cg": "Conjugate gradient",
        "lbfgs": "L-BFGS", "adam": "Adam", "adagrad": "AdaGrad", "rmsprop": "RMSprop",
        "lbfgs_wolfe": "L-BFGS, strong Wolfe", "cg_pr_wolfe": "CG (PR+), strong Wolfe",
        "l2l": "L2L (Andrychowicz et al.)", "psd": "Predicted Step Descent",
        "pi_bptt": "π by truncated BPTT (no GPS)", "pi_es": "π by ES (no GPS)"}
    from l2o.baselines import EXTRA_BASELINES
    from l2o.figures import OUTER_RUNS

    extras = (*EXTRA_BASELINES, *OUTER_RUNS)
    core = {m: s for m, s in METHOD_STYLE.items() if m not in extras}
    colors = [s["color"] for s in core.values()]
    assert len(set(colors)) == len(colors)
    # colour-blind safe: the Okabe-Ito colours, plus one grey
    assert len(set(colors) - set(OKABE_ITO.values())) <= 1
    # the extra rows beyond the paper take their counterpart's colour and marker, open
    # and dotted: no two methods share colour, marker, fill and line style together
    looks = [(s["color"], s["marker"], s.get("markerfacecolor"), str(s["linestyle"]))
             for s in METHOD_STYLE.values()]
    assert len(set(looks)) == len(looks)
    assert all(METHOD_STYLE[m]["color"] in OKABE_ITO.values() for m in extras)
    # a π trained without GPS looks like PSD (colour, marker), open and broken
    assert all((METHOD_STYLE[m]["color"], METHOD_STYLE[m]["marker"])
               == (METHOD_STYLE["psd"]["color"], METHOD_STYLE["psd"]["marker"])
               and METHOD_STYLE[m]["markerfacecolor"] == "white" for m in OUTER_RUNS)
    # and apart in greyscale: no two of the nine share a marker, nor line style and width
    markers = [s["marker"] for s in core.values()]
    assert len(set(markers)) == len(markers)
    lines = [(str(s["linestyle"]), s["linewidth"]) for s in METHOD_STYLE.values()]
    assert len(set(lines)) >= 6


def test_style_is_high_resolution_and_colour_blind_safe():
    import matplotlib

    matplotlib.use("Agg")
    from l2o import plotting

    plotting.use_style()
    assert matplotlib.rcParams["figure.dpi"] >= 150
    assert matplotlib.rcParams["savefig.dpi"] >= 150
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()
    assert list(cycle["color"]) == [c.lower() for c in plotting.SERIES_COLORS] or \
        list(cycle["color"]) == list(plotting.SERIES_COLORS)
    assert len(set(map(str, cycle["linestyle"]))) == len(cycle["linestyle"])


def test_legend_outside_keeps_the_data_clear():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from l2o import plotting

    plotting.use_style()
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [3, 2, 1], label="a")
    leg = plotting.legend_outside(ax)
    fig.canvas.draw()
    box, frame = leg.get_window_extent(), ax.get_window_extent()
    assert box.x0 >= frame.x1  # entirely to the right of the axes
    fig2, axes = plt.subplots(1, 2)
    for a in axes:
        a.plot([0, 1], [0, 1], label="same")
    leg2 = plotting.legend_outside(fig2, where="below")
    assert [t.get_text() for t in leg2.get_texts()] == ["same"]
    plt.close(fig)
    plt.close(fig2)


def test_summarize_curves_counts_diverged_seeds_as_infinite():
    import numpy as np

    from l2o.plotting import summarize_curves

    rng = np.random.default_rng(0)
    curves = 1.0 + rng.random((5, 30))
    for seed, t in zip(range(3), (10, 12, 14)):
        curves[seed, t:] = np.nan
    s = summarize_curves(curves, band=(0.25, 0.75))
    np.testing.assert_allclose(s.median[:10], np.median(curves[:, :10], axis=0))
    assert s.diverged_at == 14 and s.n_diverged == 3 and s.n_seeds == 5
    assert np.isinf(s.median[14:]).all() and np.isfinite(s.median[:14]).all()
    assert np.isfinite(s.upper[10]) and np.isinf(s.upper[12]) and np.isfinite(s.lower[12])


def test_plot_curves_marks_divergence_and_panels_are_labelled():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from l2o import plotting

    plotting.use_style()
    assert matplotlib.rcParams["text.usetex"] is False
    good = np.linspace(2.3, 0.5, 21)[None].repeat(3, axis=0)
    bad = good.copy()
    bad[:, 8:] = np.inf
    fig, axes, summaries = plotting.figure_panels(
        {"tfd": {"adam": good, "cg": bad}, "cifar10": {"adam": good},
         "cifar100": {"psd": good}})
    assert [ax.get_title() for ax in axes] == ["(a) TFD", "(b) CIFAR-10", "(c) CIFAR-100"]
    assert axes[0].get_xlabel() == "iteration" and "f(x)" in axes[0].get_ylabel()
    assert summaries["tfd"]["cg"].diverged_at == 8
    crosses = [ln for ln in axes[0].lines if ln.get_marker() == "x"]
    assert len(crosses) == 1 and crosses[0].get_ydata()[0] == axes[0].get_ylim()[1]
    legend_labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "(diverged)" in legend_labels and "Conjugate gradient" in legend_labels
    with pytest.raises(KeyError, match="known methods"):
        plotting.plot_curves(axes[1], {"newton": good})
    plt.close(fig)


# ------------------------------------------------------------ the build
@pytest.mark.book
def test_book_builds_with_every_page_and_figure(built_book):
    html = built_book
    assert html.name == "html" and html.parent.name == "_build"
    assert (html / "index.html").exists()
    assert (html / book.MATHJAX_URL).is_file()  # math typesets offline
    for docname in book.toc_docnames():
        assert (html / f"{docname}.html").exists(), docname
    for chapter in book.chapters():
        page = (html / f"{chapter.docname}.html").read_text(encoding="utf-8")
        assert "Traceback (most recent call last)" not in page, chapter.name
        if book.has_images(chapter.path):
            assert "<img" in page, f"{chapter.name} lost its figures"
    refs = (html / "book" / "references.html").read_text(encoding="utf-8")
    bib = (book.ROOT / "references.bib").read_text(encoding="utf-8")
    n_entries = bib.count("\n@")
    assert refs.count('role="doc-biblioentry"') + refs.count('class="citation') >= n_entries
    # The build must not have written into the source tree.
    assert not (book.ROOT / "book" / "_build").exists()


def test_auto_ylim_shows_curves_hovering_above_the_start():
    """Noisy runs that sit above f(x0) stay visible; one runaway curve is clipped."""
    import numpy as np

    from l2o.plotting import _auto_ylim, summarize_curves

    t = np.arange(101, dtype=float)
    descend = np.vstack([2.0 - 0.005 * t] * 3)             # 2.0 -> 1.5
    hover = np.vstack([2.0 + 0.2 * (t > 0)] * 3)            # jumps to 2.2 and stays
    runaway = np.vstack([2.0 + 10.0 * t] * 3)
    calm = {"a": summarize_curves(descend), "b": summarize_curves(descend)}
    lo, hi = _auto_ylim(calm, logy=False)
    assert lo < 1.5 and 2.0 < hi < 2.1                      # as before: top at f(x0)
    noisy = {"a": summarize_curves(descend), "b": summarize_curves(hover),
             "c": summarize_curves(hover)}
    assert _auto_ylim(noisy, logy=False)[1] > 2.2           # the hovering curves show
    wild = {"a": summarize_curves(descend), "b": summarize_curves(runaway),
            "c": summarize_curves(runaway)}
    assert _auto_ylim(wild, logy=False)[1] < 2.0 + 0.5 + 0.2  # at most one descent above
