"""`python -m engine ...`: the command-line interface."""

import sys

from engine.cli import main

sys.exit(main())
