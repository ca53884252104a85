"""Entry point for mitmproxy: ``mitmdump -s addon/main.py`` (scripts/stack.py does this for you)."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # run from a checkout without the package installed
    sys.path.insert(0, _ROOT)

from addon.proxy import Govrix  # noqa: E402

addons = [Govrix()]
