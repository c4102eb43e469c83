"""``python -m kubedistill.cli ...`` is ``kubedistill ...``."""

import sys

from kubedistill.cli import main

sys.exit(main())
