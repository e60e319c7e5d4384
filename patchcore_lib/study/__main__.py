"""``python -m patchcore_lib.study -f params/quick.yaml``: run the notebook study (see :mod:`.engine`)."""
import sys

from patchcore_lib.study.engine.cli import main

sys.exit(main())
