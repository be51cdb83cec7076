"""Where the content of attached files is kept: a local directory (the default) or an
S3-compatible bucket (``s3://bucket/prefix``, through boto3: ``pip install metacrm[s3]``).

Content is addressed by its SHA-256: the same bytes are stored once however many records
hold them, under ``ab/cd/abcd...`` (the first two pairs of hex digits fan the directory
out). A store only keeps bytes; which record holds which file is the database's
``metacrm_files`` table (runtime/files.py). Content is written before the row that refers to
it is committed, so a failed or refused attach can leave unreferenced content: ``metacrm
prune`` removes it (with a grace period, so that it never races an attach under way).

Local writes go to a temporary file in the store's ``tmp/`` folder, are hashed and counted as
they stream in (a file past the size limit is abandoned as soon as it is past it), flushed to
disk and renamed into place: a reader never sees a half-written file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from ..errors import MetaCRMError, NotFound, SetupError

CHUNK = 1 << 20
HEAD = 4096  # the first bytes of a file kept for content checks (an image's signature)


class TooLarge(Exception):
    """The content passed the size limit while it was read (``size``: bytes read so far)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


@dataclass(frozen=True)
class Stored:
    """What a put stored: the content's SHA-256, its size and its first bytes."""

    sha256: str
    size: int
    head: bytes


class FileStore(Protocol):
    location: str

    def put(self, source: BinaryIO, *, limit: int | None = None) -> Stored: ...

    def open(self, sha256: str) -> BinaryIO: ...

    def exists(self, sha256: str) -> bool: ...

    def remove(self, sha256: str) -> None: ...

    def stored(self) -> Iterator[tuple[str, float]]: ...


def key(sha256: str) -> str:
    """The relative path of content in a store: ``ab/cd/abcd...``."""
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"


def _copy_hashing(source: BinaryIO, target: BinaryIO, limit: int | None) -> Stored:
    digest, size, head = hashlib.sha256(), 0, b""
    while block := source.read(CHUNK):
        size += len(block)
        if limit is not None and size > limit:
            raise TooLarge(size)
        if len(head) < HEAD:
            head += block[: HEAD - len(head)]
        digest.update(block)
        target.write(block)
    return Stored(digest.hexdigest(), size, head)


def _is_sha(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


class LocalStore:
    """Content in a directory of this machine (created on the first write)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def _path(self, sha256: str) -> Path:
        return self.root / key(sha256)

    def put(self, source: BinaryIO, *, limit: int | None = None) -> Stored:
        tmp_dir = self.root / "tmp"
        try:
            tmp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SetupError(f"file store {self.location}: cannot create it: {exc.strerror or exc}") from exc
        handle, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="put-")
        try:
            with os.fdopen(handle, "wb") as out:
                stored = _copy_hashing(source, out, limit)
                out.flush()
                os.fsync(out.fileno())
            target = self._path(stored.sha256)
            if target.exists():
                os.unlink(tmp_name)  # the same content is stored once;
                os.utime(target)  # fresh again: prune's grace period covers the attach now under way
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_name, target)
            return stored
        except BaseException:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise

    def open(self, sha256: str) -> BinaryIO:
        try:
            return open(self._path(sha256), "rb")  # noqa: SIM115 (the caller closes it)
        except FileNotFoundError:
            raise NotFound(f"the content {sha256[:12]} is missing from the file store {self.location}") from None

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def remove(self, sha256: str) -> None:
        path = self._path(sha256)
        path.unlink(missing_ok=True)
        for folder in (path.parent, path.parent.parent):  # empty fan-out folders go too
            try:
                folder.rmdir()
            except OSError:
                break

    def stored(self) -> Iterator[tuple[str, float]]:
        if not self.root.is_dir():
            return
        for first in sorted(self.root.iterdir()):
            if len(first.name) != 2 or not first.is_dir():
                continue
            for path in sorted(first.glob("*/*")):
                if _is_sha(path.name) and path.is_file():
                    yield path.name, path.stat().st_mtime


class S3Store:
    """Content in an S3-compatible bucket (AWS, MinIO, Ceph...), through boto3: credentials,
    region and endpoint come from boto3's own settings (``AWS_ACCESS_KEY_ID``,
    ``AWS_ENDPOINT_URL``, ~/.aws/config...)."""

    def __init__(self, location: str, client=None) -> None:
        rest = location[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise SetupError(f"file store {location}: name a bucket (s3://BUCKET/PREFIX)")
        self.location, self.bucket = location, bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        if client is None:
            from ..extras import S3, import_extra

            client = import_extra(S3).client("s3")
        self.client = client

    def _key(self, sha256: str) -> str:
        return self.prefix + key(sha256)

    def put(self, source: BinaryIO, *, limit: int | None = None) -> Stored:
        # the key is the content's hash: spool it (memory, then disk) while hashing, then upload
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
            stored = _copy_hashing(source, spool, limit)
            spool.seek(0)
            if not self.exists(stored.sha256):
                self.client.upload_fileobj(spool, self.bucket, self._key(stored.sha256))
            else:  # fresh again (its LastModified): prune's grace period covers this attach
                name = self._key(stored.sha256)
                self.client.copy_object(
                    Bucket=self.bucket,
                    Key=name,
                    CopySource={"Bucket": self.bucket, "Key": name},
                    MetadataDirective="REPLACE",
                )
        return stored

    def open(self, sha256: str) -> BinaryIO:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(sha256))["Body"]
        except self.client.exceptions.NoSuchKey:
            raise NotFound(f"the content {sha256[:12]} is missing from the file store {self.location}") from None

    def exists(self, sha256: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(sha256))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def remove(self, sha256: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(sha256))

    def stored(self) -> Iterator[tuple[str, float]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for item in page.get("Contents", ()):
                name = item["Key"].rsplit("/", 1)[-1]
                if _is_sha(name):
                    yield name, item["LastModified"].timestamp()


@contextmanager
def failing(location: str) -> Iterator[None]:
    """A store that cannot be written or read (a directory without permission, a full disk, a
    bucket that is missing, unreachable or refuses the credentials) as one SetupError naming
    it: fixed by its settings, not by the request."""
    try:
        yield
    except (MetaCRMError, TooLarge):
        raise
    except OSError as exc:
        raise SetupError(f"file store {location}: {exc.strerror or exc}") from exc
    except Exception as exc:
        if type(exc).__module__.split(".")[0] in ("botocore", "boto3", "s3transfer"):
            raise SetupError(f"file store {location}: {exc}") from exc
        raise


def open_store(location: str) -> FileStore:
    """The store at ``location``: ``s3://BUCKET/PREFIX`` or a local directory."""
    if location.startswith("s3://"):
        return S3Store(location)
    if "://" in location:
        scheme = location.split("://", 1)[0]
        raise SetupError(f"file store {location}: unknown scheme '{scheme}' (a directory, or s3://BUCKET/PREFIX)")
    return LocalStore(location)


__all__ = ["FileStore", "LocalStore", "S3Store", "Stored", "TooLarge", "failing", "key", "open_store"]
