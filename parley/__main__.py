"""`python -m parley ...` = the `parley` console script."""

import sys

from parley.cli.main import main

sys.exit(main())
