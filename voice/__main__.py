"""`python -m voice ...` = the `parley` console script."""

import sys

from voice.cli.main import main

sys.exit(main())
