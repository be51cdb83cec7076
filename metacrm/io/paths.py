"""Checks on the files a command will write, made before it changes anything."""

from __future__ import annotations

import os
from pathlib import Path


def unwritable(path: str | os.PathLike) -> str | None:
    """Why a file cannot be written at ``path`` (created or replaced), or None.

    Looks without touching anything: a directory there, a missing parent directory, no
    permission to write the file or to create it in its directory (as the process's real
    user sees it: root may write anywhere)."""
    target = Path(path)
    if target.is_dir():
        return f"{target} is a directory"
    parent = target.parent
    if not parent.exists():
        return f"the directory {parent} does not exist"
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if target.exists():
        if not os.access(target, os.W_OK):
            return f"no permission to write {target}"
    elif not os.access(parent, os.W_OK | os.X_OK):
        return f"no permission to create files in {parent}"
    return None


__all__ = ["unwritable"]
