"""Unit tests of bad input and secrets (issue 10): no stack, fakes only.

Hypothesis settings live in secprops.py (bounded: the machine is shared).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
# Test this checkout's code, whatever checkout the venv's editable install maps.
for folder in ("operator", "web"):
    sys.path.insert(0, str(REPO / folder))
