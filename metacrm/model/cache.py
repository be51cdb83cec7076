"""The compiled-model cache: a loaded, checked :class:`~metacrm.model.metamodel.Model` kept on
disk so that a command does not read, validate and check the YAML again on every call.

An entry is found by the model's path, the working directory (problems and locations name
files relative to it), metacrm's version, the Python version and a fingerprint of metacrm's
own code (the size and modification time of every module and of the JSON Schema: a changed
check invalidates every entry even while the version string stays the same). It holds the
SHA-256 of every file the model was read from (the root file and each include) and is used
only when each of them still has those bytes; anything else (a changed, missing or unreadable
file, an entry that does not unpickle) is a miss, and the model is loaded from its files as
without a cache. Only a model without errors is stored, so a broken model always reports
its problems from the files themselves.

Where: ``$METACRM_CACHE_DIR``, else ``$XDG_CACHE_HOME/metacrm``, else ``~/.cache/metacrm``;
``METACRM_NO_CACHE=1`` turns it off. Entries are written to a temporary file and renamed into
place, so concurrent commands (and test workers) never read a half-written entry. A cache
directory that cannot be written is not an error: the command runs without a cache.

This module imports nothing heavy: a hit costs reading the model's files, hashing them and
unpickling the frozen metamodel (about a millisecond for the examples).
"""

from __future__ import annotations

import copyreg
import hashlib
import io
import logging
import os
import pickle
import sys
import tempfile
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..errors import Problem
    from .metamodel import Model

log = logging.getLogger(__name__)

FORMAT = 2  # the layout of an entry; bump when it changes
# the pickled expression trees of the last entry read, until the parser asks for them
# (metacrm.expr.parser.TREES): a command that parses nothing unpickles none
PENDING: list[bytes] = []
MAX_ENTRIES = 256  # the oldest entries beyond this are removed when one is written
_PACKAGE = Path(__file__).resolve().parent.parent
_OFF = ("", "0", "false", "no", "off")


def enabled() -> bool:
    """False when ``METACRM_NO_CACHE`` is set (to anything but 0/false/no/off)."""
    return os.environ.get("METACRM_NO_CACHE", "").strip().lower() in _OFF


def cache_dir() -> Path:
    """Where entries live (see the module's doc); not created here."""
    explicit = os.environ.get("METACRM_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "metacrm"


_FINGERPRINT: list[str] = []


def code_fingerprint() -> str:
    """A digest of metacrm's version, the Python version and the size and modification time
    of every module of the package and of the JSON Schema (os.stat only, no reading): changes
    with any edit of metacrm's code, the version string unchanged or not. Computed once a process."""
    if _FINGERPRINT:
        return _FINGERPRINT[0]
    from .. import __version__

    digest = hashlib.sha256()
    digest.update(f"{FORMAT}\0{__version__}\0{sys.version}\0{sys.implementation.cache_tag}\0".encode())
    stack = [str(_PACKAGE)]
    stats = []
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:  # pragma: no cover - the package is readable, or nothing runs
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name != "__pycache__" and not entry.name.startswith("."):
                    stack.append(entry.path)
            elif entry.name.endswith((".py", ".json")):
                st = entry.stat()
                stats.append(f"{entry.path}\0{st.st_size}\0{st.st_mtime_ns}")
    for candidate in (
        _PACKAGE / "schemas" / "metacrm.schema.json",
        _PACKAGE.parent / "schemas" / "metacrm.schema.json",
    ):
        try:  # the JSON Schema the model is validated against (installed copy, or the checkout's)
            st = candidate.stat()
        except OSError:
            continue
        stats.append(f"{candidate}\0{st.st_size}\0{st.st_mtime_ns}")
    for line in sorted(stats):
        digest.update(line.encode("utf-8", "surrogateescape") + b"\n")
    _FINGERPRINT.append(digest.hexdigest())
    return _FINGERPRINT[0]


def entry_path(path: str | os.PathLike[str]) -> Path:
    """The file holding the entry of the model at ``path`` loaded from this working directory."""
    root = os.path.abspath(path)
    key = "\0".join((code_fingerprint(), root, os.getcwd()))
    name = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:40]
    return cache_dir() / "models" / f"{name}.pickle"


def _digest(file: str) -> str | None:
    try:
        with open(file, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _proxy(items: dict) -> MappingProxyType:
    return MappingProxyType(items)


def _reduce_proxy(proxy: MappingProxyType) -> tuple:
    return _proxy, (dict(proxy),)


def _dumps(document: object) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {**copyreg.dispatch_table, MappingProxyType: _reduce_proxy}
    pickler.dump(document)
    return buffer.getvalue()


def lookup(path: str | os.PathLike[str]) -> tuple[Model, list[Problem]] | None:
    """The cached model of ``path`` and the warnings its load gave, when every file it was
    read from is unchanged; else None. Never raises: a missing, stale, unreadable or corrupt
    entry is a miss."""
    if not enabled():
        return None
    try:
        file = entry_path(path)
        with open(file, "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        entry = pickle.loads(data)
        if entry["format"] != FORMAT or entry["code"] != code_fingerprint():
            return None
        files = entry["files"]
        if files[0][0] != os.path.realpath(path):
            return None
        for name, digest in files:
            if _digest(name) != digest:
                return None
        model, problems = entry["model"], entry["problems"]
        from .metamodel import Model

        if not isinstance(model, Model) or not isinstance(problems, list):
            return None
        PENDING[:] = [entry["trees"]] if isinstance(entry.get("trees"), bytes) else []
        return model, problems
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign entry: load from the files
        log.debug("model cache entry %s ignored: %s: %s", file, exc.__class__.__name__, exc)
        return None


def take_trees() -> dict:
    """The expression trees the last entry read brought (see PENDING), once; {} when there
    are none or they do not unpickle."""
    if not PENDING:
        return {}
    data = PENDING.pop()
    PENDING.clear()
    try:
        trees = pickle.loads(data)
    except Exception as exc:  # noqa: BLE001 - parse the expressions again instead
        log.debug("expression trees of the model cache ignored: %s: %s", exc.__class__.__name__, exc)
        return {}
    return trees if isinstance(trees, dict) else {}


def store(path: str | os.PathLike[str], model: Model, problems: list[Problem], files: list[str]) -> None:
    """Keep ``model`` and its warnings (``problems``: loaded without errors from ``files``,
    the root first, as resolved paths) for the next load of ``path``. Written to a temporary file and renamed into place;
    never raises (a cache that cannot be written is simply not used)."""
    if not enabled():
        return
    digests = []
    for name in files:
        digest = _digest(name)
        if digest is None:
            return
        digests.append((name, digest))
    try:
        parser = sys.modules.get("metacrm.expr.parser")  # loaded when the model has expressions
        trees = _dumps(dict(parser.TREES)) if parser is not None else None
        data = _dumps(
            {
                "format": FORMAT,
                "code": code_fingerprint(),
                "files": digests,
                "model": model,
                "problems": problems,
                "trees": trees,
            }
        )
        target = entry_path(path)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(temp, target)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:  # pragma: no cover - already gone
                pass
            raise
        _prune(target.parent)
    except Exception as exc:  # noqa: BLE001 - no cache this time; the command goes on
        log.debug("model cache not written for %s: %s: %s", path, exc.__class__.__name__, exc)


def _prune(folder: Path) -> None:
    """Remove the oldest entries beyond MAX_ENTRIES (each edit of metacrm's code makes new ones)."""
    try:
        entries = [e for e in os.scandir(folder) if e.name.endswith(".pickle")]
        if len(entries) <= MAX_ENTRIES:
            return
        entries.sort(key=lambda e: e.stat().st_mtime_ns)
        for entry in entries[: len(entries) - MAX_ENTRIES]:
            try:
                os.unlink(entry.path)
            except OSError:  # another process removed it first
                pass
    except OSError:  # pragma: no cover - the folder vanished
        pass
