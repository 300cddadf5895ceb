"""``python -m featviz`` is the same command as ``featviz``."""

import sys

from .cli import main

sys.exit(main())
