"""`python -m semiearth.train ...` (what torchrun runs): the same as `semiearth-train`."""

import sys

from semiearth.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
