"""``python -m labelflip.cli``: the ``labelflip`` command."""

import sys

from labelflip.cli import main

sys.exit(main())
