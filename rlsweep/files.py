"""Writing result files so that a reader never sees half a file (other workers, a resume)."""

from __future__ import annotations

import json
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomic on POSIX: the old file or the new one, never a mix
    return path


def write_json_atomic(path: Path, data) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, default=str))
