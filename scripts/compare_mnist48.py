"""Every optimizer on the training objective: ``python -m l2o.figures --training``.

Kept under its earlier name (chapter 6 cites it), with its earlier options:

    python scripts/compare_mnist48.py [--psd FILE] [--l2l FILE] [--out FILE]
                                      [--horizon 400] [--workers 2] [--seeds 10]
"""

import argparse
import sys

from l2o import figures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--psd", default=None)
    ap.add_argument("--l2l", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--horizon", default=None)
    ap.add_argument("--workers", default="2")
    ap.add_argument("--seeds", type=int, default=len(figures.TRAINING_SEEDS),
                    help="held-out seeds 0..N-1")
    a = ap.parse_args(argv)
    if a.seeds < 2:
        ap.error("--seeds must be ≥ 2")
    args = ["--training", "--workers", a.workers, "--seeds", *map(str, range(a.seeds))]
    for opt in ("psd", "l2l", "out", "horizon"):
        if getattr(a, opt) is not None:
            args += [f"--{opt}", getattr(a, opt)]
    return figures.main(args)


if __name__ == "__main__":
    sys.exit(main())
