"""`python -m l2o.gps_sweep sweep` under its earlier name (chapter 5's commands cite it).

    python scripts/gps_sweep.py [options of python -m l2o.gps_sweep sweep]
"""

import sys

from l2o.gps_sweep import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]], prog="python scripts/gps_sweep.py"))
