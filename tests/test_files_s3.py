"""The S3 file store through boto3, against moto's in-process S3 (no server of S3 is at hand
here: a real bucket is untested, behind the same interface): content stored once by its
SHA-256 under the prefix, read back, listed, removed by prune; attach and download through
the CRM on SQLite and PostgreSQL."""

from __future__ import annotations

import io

import pytest
from conftest import require_module
from test_files import write

import metacrm
from metacrm.runtime.filestore import S3Store, TooLarge, open_store

require_module("boto3", why="the S3 store is the [s3] extra")
require_module("moto", why="moto plays S3 in-process for these tests")


@pytest.fixture
def bucket(monkeypatch):
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        import boto3

        boto3.client("s3").create_bucket(Bucket="crm")
        yield boto3.client("s3")


def test_the_store_keeps_content_once_under_its_hash(bucket) -> None:
    store = open_store("s3://crm/files/")
    assert isinstance(store, S3Store) and store.prefix == "files/"
    first = store.put(io.BytesIO(b"hello"))
    again = store.put(io.BytesIO(b"hello"))
    assert first == again and first.size == 5
    keys = [o["Key"] for o in bucket.list_objects_v2(Bucket="crm")["Contents"]]
    assert keys == [f"files/{first.sha256[:2]}/{first.sha256[2:4]}/{first.sha256}"]
    assert store.exists(first.sha256) and store.open(first.sha256).read() == b"hello"
    assert [sha for sha, _ in store.stored()] == [first.sha256]
    with pytest.raises(TooLarge):
        store.put(io.BytesIO(b"x" * 100), limit=10)
    store.remove(first.sha256)
    assert not store.exists(first.sha256) and list(store.stored()) == []
    with pytest.raises(metacrm.NotFound, match="missing from the file store s3://crm/files/"):
        store.open(first.sha256)


def test_a_bucket_must_be_named() -> None:
    with pytest.raises(metacrm.errors.SetupError, match="name a bucket"):
        S3Store("s3://", client=object())


def test_the_crm_attaches_to_and_prunes_a_bucket(bucket, db_url, tmp_path) -> None:
    with metacrm.connect(write(tmp_path), db_url, files="s3://crm/prefix") as crm:
        crm.migrate()
        deal = crm.create("deal", {"title": "A"})["id"]
        info = crm.attach("deal", deal, b"%PDF-1.4", name="c.pdf", field="contract")
        crm.attach("deal", deal, b"note", name="n.txt")
        _, stream = crm.open_file("deal", deal, info["id"])
        assert stream.read() == b"%PDF-1.4"
        crm.detach("deal", deal, info["id"])
        assert crm.prune(grace=0) == {"rows": 0, "removed": 1, "kept": 1, "dry_run": False}
        assert len(bucket.list_objects_v2(Bucket="crm", Prefix="prefix/")["Contents"]) == 1


def test_a_missing_bucket_is_a_setup_error_naming_the_store(bucket, tmp_path) -> None:
    with metacrm.connect(write(tmp_path), "sqlite://", files="s3://nobucket/x") as crm:
        crm.migrate()
        deal = crm.create("deal", {"title": "A"})["id"]
        with pytest.raises(metacrm.errors.SetupError, match="file store s3://nobucket/x: .*NoSuchBucket"):
            crm.attach("deal", deal, b"x", name="x.txt")
        assert crm.files("deal", deal) == []
