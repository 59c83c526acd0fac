"""`python -m l2o.gps_sweep transfer` under its earlier name (chapter 5's commands cite it).

    python scripts/gps_transfer.py [options of python -m l2o.gps_sweep transfer]
"""

import sys

from l2o.gps_sweep import main

if __name__ == "__main__":
    sys.exit(main(["transfer", *sys.argv[1:]], prog="python scripts/gps_transfer.py"))
