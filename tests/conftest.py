"""Shared test set-up: one zoo cache per test run, so a zoo entry trains at most once."""

from __future__ import annotations

import os
from pathlib import Path

# Set before any hwlab import reads it. A fixed folder (not tmp_path) lets xdist workers share the
# zoo cache; the zoo's file lock keeps two workers from training the same entry at once.
os.environ.setdefault("HWLAB_HOME", str(Path(__file__).resolve().parent.parent / ".hwlab-test-home"))
