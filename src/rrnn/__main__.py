"""``python -m rrnn`` is the ``rrnn`` command."""

import sys

from .cli import main

sys.exit(main())
