"""`python -m engine ...`: the command-line interface."""

import sys

from engine.cli import main
from engine.quiet_console import quiet_console

quiet_console()  # library noise filtered once; real warnings and errors still log
sys.exit(main())
