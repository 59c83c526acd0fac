"""Command-line plumbing shared by the package's commands.

Every command (``python -m l2o.experiments``, ``l2o.figures``, ``l2o.gps``, ``l2o.l2l``,
``l2o.data``) checks its arguments while parsing them: a value out of range or a name
that does not exist ends the command before any work with one ``error:`` line and exit
code 2, as argparse does for a malformed option, never with a traceback.  The types
below do the range checks; :func:`main` is the ``l2o`` console script, which hands
its arguments to one of those commands (``l2o gps train ...``).
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from typing import Callable, Sequence

__all__ = ["positive_int", "nonnegative_int", "positive_float", "fraction", "main"]


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _checked(kind: type, test: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    def parse(text: str):
        value = _number(text, kind)
        if not test(value):
            raise argparse.ArgumentTypeError(f"{text!r}: must be {rule}")
        return value

    parse.__name__ = rule  # argparse names the type in some messages
    return parse


#: An integer ≥ 1 (horizons, epochs, workers, threads, sizes).
positive_int = _checked(int, lambda v: v >= 1, "an integer >= 1")
#: An integer ≥ 0 (seeds).
nonnegative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
#: A finite number > 0 (learning rates, timeouts).
positive_float = _checked(float, lambda v: v > 0, "a finite number > 0")
#: A number in [0, 1) (momentum).
fraction = _checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")

def check_run_folder(parser: argparse.ArgumentParser, out, resume: bool,
                     checkpoint: str = "checkpoint.pt") -> None:
    """Usage errors of a resumable run's folder: a checkpoint that ``--resume`` would be
    needed to continue, or ``--resume`` with nothing to continue (exit code 2)."""
    from pathlib import Path

    ck = Path(out) / checkpoint
    if ck.exists() and not resume:
        parser.error(f"{ck} exists: pass --resume to continue it, or choose another --out")
    if resume and not ck.exists():
        parser.error(f"--resume: there is no checkpoint at {ck}; leave out --resume to start "
                     "a new run")


#: ``l2o NAME ...`` runs ``python -m l2o.NAME ...``.
COMMANDS = ("experiments", "figures", "gps", "gps_study", "outer", "outer_study", "l2l", "data",
            "book")

#: Short forms: ``l2o tune ...`` is ``l2o experiments tune ...``, ``l2o grid ...`` is
#: ``l2o experiments grid ...``.
ALIASES = {"tune": ("experiments", "tune"), "grid": ("experiments", "grid")}


def main(argv: Sequence[str] | None = None) -> int:
    """The ``l2o`` console script: ``l2o COMMAND ...`` for every name in :data:`COMMANDS`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="l2o", description="Commands of the l2o reproduction (each also runs as "
        "`python -m l2o.COMMAND`).")
    parser.add_argument("command", choices=(*COMMANDS, *ALIASES),
                        help="tune and grid are short for `experiments tune` and "
                             "`experiments grid`; `l2o COMMAND --help` lists its options")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the command")
    if not argv or argv[0] in ("-h", "--help"):
        parser.parse_args(argv)  # prints the help or the usage error and exits
    if argv[0] in ALIASES:
        module, sub = ALIASES[argv[0]]
        argv = [module, sub, *argv[1:]]
    args = parser.parse_args(argv[:1])
    module = importlib.import_module(f"l2o.{args.command}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
