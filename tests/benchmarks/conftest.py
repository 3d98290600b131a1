"""benchmarks/ is a folder of tools, not an installed package: make it importable here.

Not needed once pyproject.toml's [tool.pytest.ini_options] sets pythonpath = ["."].
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
