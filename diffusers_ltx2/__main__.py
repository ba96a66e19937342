"""`python -m diffusers_ltx2` runs the `ltx2` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
