"""``python -m facelib ...``: see :mod:`facelib.cli`."""
import sys

from .cli import main

sys.exit(main())
