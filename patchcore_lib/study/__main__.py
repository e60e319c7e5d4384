"""``python -m patchcore_lib.study -f params/quick.yaml``: run the notebook study (see :mod:`.runner`)."""
import sys

from patchcore_lib.study.runner import main

sys.exit(main())
