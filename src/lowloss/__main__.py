"""`python -m lowloss` runs the CLI."""

import sys

from lowloss.cli.main import main

sys.exit(main())
