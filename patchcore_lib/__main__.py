"""Entry point for ``python -m patchcore_lib``."""
import sys

from patchcore_lib.cli import main

sys.exit(main())
