"""Turn a percent-format script (``# %%`` cells) into a chapter notebook.

Authoring aid: chapters are drafted as ``book/src/NN_name.py`` and converted once with
``python scripts/py2nb.py book/src/NN_name.py book/NN_name.ipynb``; the notebook is then
executed by ``python -m l2o.book run``.  Cell markers:

- ``# %%`` a code cell; ``# %% tags=["parameters"]`` or ``tags=["remove-input"]`` adds tags;
- ``# %% [markdown]`` a markdown cell whose lines start with ``# ``;
- a trailing ``mystnb={...}`` (JSON) on a marker line becomes the cell's ``mystnb``
  metadata (figure captions, table rendering).
"""

import json
import re
import sys

import nbformat


def convert(text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    cells, kind, tags, buf, mystnb = [], None, [], [], None

    def flush():
        if kind is None:
            return
        body = "\n".join(buf).strip("\n")
        if kind == "markdown":
            body = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in body.split("\n"))
            cell = nbformat.v4.new_markdown_cell(body)
        else:
            cell = nbformat.v4.new_code_cell(body)
        if tags:
            cell.metadata["tags"] = tags
        if mystnb:
            cell.metadata["mystnb"] = mystnb
        cells.append(cell)

    for line in text.split("\n"):
        if line.startswith("# %%"):
            flush()
            buf = []
            kind = "markdown" if "[markdown]" in line else "code"
            m = re.search(r"\s+mystnb=(\{.*\})\s*$", line)
            mystnb = json.loads(m.group(1)) if m else None
            if m:
                line = line[: m.start()]
            m = re.search(r"tags=(\[.*\])", line)
            tags = json.loads(m.group(1)) if m else []
        elif kind is not None:
            buf.append(line)
    flush()
    nb.cells = cells
    return nb


if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    nbformat.write(convert(open(src).read()), dst)
