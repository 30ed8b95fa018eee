"""The scaler package lives in scaler/ (installed on the server on its own)."""

from __future__ import annotations

import sys
from pathlib import Path

SCALER = Path(__file__).resolve().parents[2] / "scaler"
if str(SCALER) not in sys.path:
    sys.path.insert(0, str(SCALER))
