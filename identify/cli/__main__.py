"""`python -m identify.cli`: the `cqaface` command, for a checkout without the console script."""

import sys

from identify.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
