"""``python -m tfface`` is the ``tfface`` command."""

import sys

from tfface.cli import main

sys.exit(main())
