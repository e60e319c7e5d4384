"""Entry point for ``python -m patchcore_lib``."""
from patchcore_lib.cli import entry

entry()
