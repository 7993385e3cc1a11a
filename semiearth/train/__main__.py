"""`python -m semiearth.train ...` (what torchrun runs): the same as `semiearth-train`."""

from semiearth.cli.train import main

if __name__ == "__main__":
    main()
