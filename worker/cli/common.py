"""What the parts of `ecg-intake` share: the consoles and `--json` output (the training side's, so logs,
progress bars and tables go through one pair of consoles), and the logger."""

from __future__ import annotations

import logging

from model_training.cli import _save_json, console, out

__all__ = ["_save_json", "console", "log", "out"]

log = logging.getLogger("ecg_intake")
