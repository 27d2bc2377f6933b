"""`python -m voice ...` = the `parley` console script."""

import sys

from voice.cli.main import main

if __name__ == "__main__":  # not when a spawned process (the bench's client processes) imports it
    sys.exit(main())
