"""``python -m rrnn.cli``: the same as the ``rrnn`` command."""

import sys

from . import main

sys.exit(main())
