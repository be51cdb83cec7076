"""``metacrm init``: a commented starter model and a README for the consultant, written into a folder.

The files are package data next to this module (``model.yaml``, ``README.md``), so a wheel carries
them. Nothing is written when one of them already exists, unless ``force``: an existing model is
never overwritten by accident.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import MetaCRMError

FILES = ("model.yaml", "README.md")
_HERE = Path(__file__).resolve().parent


def starter_text(name: str) -> str:
    """The text of one starter file (``model.yaml`` or ``README.md``)."""
    if name not in FILES:
        raise MetaCRMError(f"no starter file '{name}'; starter files: {', '.join(FILES)}")
    return (_HERE / name).read_text(encoding="utf-8")


def write_starter(directory: str | Path = ".", *, force: bool = False) -> list[Path]:
    """Write the starter files into ``directory`` (created when missing); return their paths.

    Raises MetaCRMError naming the first file that exists (nothing written) unless ``force``,
    or naming the path when the folder cannot be written.
    """
    folder = Path(directory)
    targets = [folder / name for name in FILES]
    if not force:
        for path in targets:
            if path.exists() or path.is_symlink():
                raise MetaCRMError(f"{path} already exists; nothing was written (--force overwrites it)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path in targets:
            path.write_text(starter_text(path.name), encoding="utf-8")
    except OSError as exc:
        raise MetaCRMError(f"cannot write the starter into {folder}: {exc.strerror or exc}") from exc
    return targets
