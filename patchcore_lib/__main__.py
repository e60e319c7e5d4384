"""Entry point for ``python -m patchcore_lib``."""
import sys

from .cli import main

sys.exit(main())
