"""``python -m featviz`` is the same command as ``featviz``."""

import sys

from .face.cli import main

sys.exit(main())
