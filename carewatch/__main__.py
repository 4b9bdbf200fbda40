"""``python -m carewatch``."""

import sys

from carewatch.cli import main

sys.exit(main())
