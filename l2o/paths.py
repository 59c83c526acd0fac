"""Where the project's files live: one setting, read once at import.

The package reads and writes everything it produces under one *project folder*:
``results/`` (caches, tunings, trained policies) and, in a checkout, the book's sources.
Relative paths such as ``results/grid`` in the package, the chapters and the command
lines are taken from it.  It imports nothing heavy, so the book's command line can use
it before torch is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_ROOT", "ROOT", "project_root"]

#: The environment variable that sets :data:`ROOT`.
ENV_ROOT = "L2O_ROOT"


def project_root(package_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds ``results/`` (and, in a checkout, ``book/`` and ``_toc.yml``).

    ``$L2O_ROOT`` if set; else the checkout that holds this package (a source checkout
    or an editable install: the package's parent folder has a ``pyproject.toml``); else
    the working directory, as for a wheel installed outside the checkout.

    Args:
        package_dir: the folder of the ``l2o`` package (default: this one).
    """
    env = os.environ.get(ENV_ROOT, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    parent = Path(package_dir or Path(__file__).resolve().parent).resolve().parent
    if (parent / "pyproject.toml").is_file() and (parent / "l2o").is_dir():
        return parent
    return Path.cwd().resolve()


#: The project folder (:func:`project_root`, read once at import).
ROOT = project_root()
