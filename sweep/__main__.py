"""``python -m sweep``: see ``sweep.cli``."""

import sys

from sweep.cli import main

sys.exit(main())
