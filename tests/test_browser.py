"""The built book as a reader sees it: every page opened offline in headless Chromium.

The test builds the book (the session's ``built_book``), opens every page of the toc
from ``file://`` with the network blocked, waits for MathJax, and fails on any page
where a formula is not typeset or raises a TeX error, TeX is left in the text, a table
is printed as text, a display equation is wider than the column at 1280 px, an image
lacks a real alt text, the page is wider than the window, or anything tried to reach the
network (:mod:`l2o.browser`). It installs nothing: without a Chromium binary (Debian's
``chromium``, or ``$L2O_CHROMIUM``) it is skipped, and the skip says so.

Set ``L2O_SCREENS=DIR`` to keep a full-page screenshot of every page.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from l2o import book, browser

pytestmark = [pytest.mark.book, pytest.mark.browser]


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = browser.find_chromium()
    if binary is None:
        pytest.skip("Chromium not found (looked for $L2O_CHROMIUM and "
                    f"{', '.join(browser.CHROMIUM_NAMES)} on the PATH): the offline "
                    "rendering check needs a real browser; on Debian `apt-get install "
                    "chromium`")
    return binary


def test_every_page_renders_offline(built_book, chromium):
    screens = os.environ.get("L2O_SCREENS")
    reports = browser.check_pages(built_book, screens=Path(screens) if screens else None,
                                  binary=chromium)
    assert [r.page for r in reports] == book.toc_docnames()
    problems = [line for r in reports for line in r.problems()]
    assert not problems, "\n".join(problems)
    # the chapters with formulas did typeset them, with the book's own MathJax
    typeset = {r.page: r.n_typeset for r in reports}
    for page in ("book/01_formulation", "book/03_gps", "book/04_convolutional_gps",
                 "book/notation", "book/design"):
        assert typeset[page] > 20, (page, typeset[page])
    assert all(r.mathjax for r in reports if r.n_math)
    tables = {r.page: r.n_tables for r in reports}
    assert tables["book/03_gps"] >= 1 and tables["book/04_convolutional_gps"] >= 2
    assert tables["book/12_report"] >= 3


def test_browser_report_flags_what_a_reader_would_see():
    """The checks of PageReport, on a report filled by hand."""
    bad = browser.PageReport(page="p", n_math=3, n_typeset=0, untypeset=["\\(x\\)"],
                             mathjax=False, raw_tex=["\\(x\\)"], pipe_paragraphs=["| a |"],
                             wide_equations=[{"label": "(3.3)", "width": 851, "room": 625}],
                             bad_alt=["fig.png"], network=["https://cdn.example/mj.js"],
                             doc_width=1400, width=1280)
    text = "\n".join(bad.problems())
    for needle in ("MathJax did not load", "not typeset", "raw TeX", "starts with '|'",
                   "(3.3) is 851 px wide", "alt text", "network", "1400 px wide"):
        assert needle in text, needle
    assert browser.PageReport(page="ok", n_math=2, n_typeset=2, mathjax=True,
                              doc_width=1280).problems() == []
