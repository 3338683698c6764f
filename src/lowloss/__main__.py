"""`python -m lowloss` runs the CLI."""

import sys

from lowloss.cli import main

sys.exit(main())
