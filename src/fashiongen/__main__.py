"""`python -m fashiongen ...` (and `torchrun -m fashiongen ...`) runs the CLI."""

import sys

from fashiongen.cli import main

sys.exit(main())
