"""`python -m voicefleet_stack` is the `voicefleet` command."""

import sys

from .cli import main

sys.exit(main())
