"""Files attached to records on SQLite and PostgreSQL: ``file`` and ``image`` fields,
``attachments: true``, the content-addressed store, ``accept`` / ``max_size``, row-level
access (a file of a record the user may not read answers as one that does not exist), the
delete path, ``prune``, the model checks and the migration that adds file fields."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from sqlalchemy import func, select

import metacrm
from metacrm.runtime.filestore import LocalStore, key

MODEL = """\
metacrm: 1
name: files_demo
entities:
  deal:
    owner: true
    attachments: {accept: [".pdf", "image/*", ".txt"], max_size: "1 KB"}
    fields:
      title: {type: string, required: true}
      contract: {type: file, accept: [".pdf", ".txt"], max_size: 1000}
      photo: {type: image}
    stages:
      initial: new
      states:
        new: {}
        signed: {requires: [contract]}
        won: {kind: won}
      transitions:
        new: [signed]
        signed: [won]
  note:
    fields:
      text: {type: string}
roles:
  manager:
    deal: {read: own, create: all, update: own, delete: own}
"""


def png(width: int = 1, height: int = 1) -> bytes:
    """A real (tiny) PNG image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\0" + b"\xff\0\0" * width for _ in range(height)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def write(tmp_path: Path, text: str = MODEL, name: str = "model.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def migrated(db_url: str, tmp_path: Path):
    """A CRM on MODEL with its store in tmp_path/store, and two managers: anna and boris."""
    crm = metacrm.connect(write(tmp_path), db_url, files=tmp_path / "store")
    crm.migrate()
    crm.add_user("anna", roles=["manager"])
    crm.add_user("boris", roles=["manager"])
    return crm


@pytest.fixture
def crm(db_url, tmp_path):
    crm = migrated(db_url, tmp_path)
    yield crm
    crm.close()


def rows(crm, table: str = "metacrm_files") -> int:
    t = crm.storage.metadata.tables[table]
    with crm.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t)).scalar_one()


def test_attach_stores_content_once_and_metadata_per_file(crm, tmp_path) -> None:
    deal = crm.create("deal", {"title": "Поставка"})
    source = tmp_path / "договор.pdf"
    source.write_bytes(b"%PDF-1.4 signed")
    first = crm.attach("deal", deal["id"], source, field="contract")
    assert first["name"] == "договор.pdf" and first["mime"] == "application/pdf" and first["size"] == 15
    assert first["field"] == "contract" and first["created_by"] is None
    assert crm.get("deal", deal["id"])["contract"] == first["id"]
    again = crm.attach("deal", deal["id"], b"%PDF-1.4 signed", name="copy.pdf")  # an attachment
    assert again["sha256"] == first["sha256"] and again["field"] is None
    store = tmp_path / "store"
    assert (store / key(first["sha256"])).read_bytes() == b"%PDF-1.4 signed"
    assert sum(1 for _ in LocalStore(store).stored()) == 1  # the same content is stored once
    assert [f["id"] for f in crm.files("deal", deal["id"])] == [first["id"], again["id"]]
    info, stream = crm.open_file("deal", deal["id"], again["id"])
    with stream:
        assert stream.read() == b"%PDF-1.4 signed" and info["name"] == "copy.pdf"
    out = crm.download("deal", deal["id"], first["id"], tmp_path)
    assert Path(out["path"]).read_bytes() == b"%PDF-1.4 signed" and out["path"].endswith("договор.pdf")


def test_a_file_field_holds_one_file_and_the_journal_says_so(crm) -> None:
    deal = crm.create("deal", {"title": "A"})
    one = crm.attach("deal", deal["id"], b"one", name="one.txt", field="contract")
    two = crm.attach("deal", deal["id"], b"two", name="two.txt", field="contract")
    record = crm.get("deal", deal["id"])
    assert record["contract"] == two["id"] and record["version"] == 3
    assert [f["name"] for f in crm.files("deal", deal["id"])] == ["two.txt"]  # the first was replaced
    with pytest.raises(metacrm.NotFound):
        crm.file_info("deal", deal["id"], one["id"])
    changes = [e["changes"] for e in crm.timeline("deal", deal["id"]) if e["action"] == "update"]
    assert {"contract": [one["id"], two["id"]]} in changes
    crm.detach("deal", deal["id"], two["id"])
    assert crm.get("deal", deal["id"])["contract"] is None
    assert crm.files("deal", deal["id"]) == []


def test_an_image_field_takes_only_images_and_keeps_their_detected_type(crm) -> None:
    deal = crm.create("deal", {"title": "A"})
    image = crm.attach("deal", deal["id"], png(), name="photo.jpg", field="photo")
    assert image["mime"] == "image/png"  # the content decides, not the name
    with pytest.raises(
        metacrm.ValidationError, match=r"deal.photo: 'x.png' is not an image \(PNG, JPEG, GIF or WebP\)"
    ):
        crm.attach("deal", deal["id"], b"<svg onload=alert(1)>", name="x.png", field="photo")
    assert crm.get("deal", deal["id"])["photo"] == image["id"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"source": b"x" * 1001, "name": "big.pdf", "field": "contract"},
            r"deal.contract: the file is larger than 1000 bytes \(max_size\)",
        ),
        (
            {"source": b"x", "name": "run.exe", "field": "contract"},
            r"deal.contract: 'run.exe' \(.*\) is not accepted; accepted: .pdf, .txt",
        ),
        ({"source": b"x" * 1025, "name": "big.pdf"}, r"deal attachments: the file is larger than 1 KB \(max_size\)"),
        ({"source": b"x", "name": "a.zip"}, r"deal attachments: 'a.zip' \(application/zip\) is not accepted"),
        (
            {"source": b"x", "name": "a.txt", "field": "title"},
            r"deal.title: is not a file field; file fields: contract, photo",
        ),
        ({"source": b"x", "name": "a.txt", "field": "nope"}, r"deal.nope: is not a field"),
        ({"source": b"x", "name": "   "}, r"deal attachments: give the file a name"),
    ],
)
def test_bad_files_are_refused_naming_the_field_and_nothing_is_written(crm, kwargs, message) -> None:
    deal = crm.create("deal", {"title": "A"})
    options = dict(kwargs)
    source = options.pop("source")
    with pytest.raises(metacrm.ValidationError, match=message):
        crm.attach("deal", deal["id"], source, **options)
    assert rows(crm) == 0 and crm.get("deal", deal["id"])["version"] == 1


def test_file_fields_are_not_set_by_create_or_update(crm) -> None:
    with pytest.raises(metacrm.ValidationError, match=r"deal.contract: is a file field: attach a file"):
        crm.create("deal", {"title": "A", "contract": 1})
    deal = crm.create("deal", {"title": "A"})
    with pytest.raises(metacrm.ValidationError, match=r"deal.contract: is a file field"):
        crm.update("deal", deal["id"], {"contract": None})
    with pytest.raises(metacrm.ValidationError, match=r"note has no attachments"):
        crm.attach("note", crm.create("note", {"text": "x"})["id"], b"x", name="x.txt")


def test_a_stage_that_requires_the_file_keeps_it(crm) -> None:
    deal = crm.create("deal", {"title": "A"})
    with pytest.raises(metacrm.TransitionError, match="contract is required"):
        crm.move("deal", deal["id"], "signed")
    contract = crm.attach("deal", deal["id"], b"%PDF", name="c.pdf", field="contract")
    crm.move("deal", deal["id"], "signed")
    with pytest.raises(metacrm.ValidationError, match="requires contract"):
        crm.detach("deal", deal["id"], contract["id"])
    assert crm.get("deal", deal["id"])["contract"] == contract["id"] and rows(crm) == 1
    assert crm.find("deal", where="contract is not null")[0]["id"] == deal["id"]


def test_files_follow_row_level_access(crm) -> None:
    anna, boris = crm.as_user("anna"), crm.as_user("boris")
    deal = anna.create("deal", {"title": "Anna's"})
    other = boris.create("deal", {"title": "Boris's"})
    secret = anna.attach("deal", deal["id"], b"secret", name="s.txt")
    mine = boris.attach("deal", other["id"], b"mine", name="m.txt")
    # boris guesses anna's file id: through his own record it is not there, exactly as an unknown id
    with pytest.raises(metacrm.NotFound) as guessed:
        boris.open_file("deal", other["id"], secret["id"])
    with pytest.raises(metacrm.NotFound) as unknown:
        boris.open_file("deal", other["id"], 10**9)
    assert str(guessed.value).replace(str(secret["id"]), "N") == str(unknown.value).replace(str(10**9), "N")
    # through anna's record: refused as the record itself is, whether the file exists or not
    with pytest.raises(metacrm.PermissionDenied) as real:
        boris.open_file("deal", deal["id"], secret["id"])
    with pytest.raises(metacrm.PermissionDenied) as absent:
        boris.open_file("deal", deal["id"], 10**9)
    assert str(real.value) == str(absent.value)
    for action in (lambda: boris.detach("deal", deal["id"], secret["id"]), lambda: boris.files("deal", deal["id"])):
        with pytest.raises(metacrm.PermissionDenied):
            action()
    with pytest.raises(metacrm.PermissionDenied):
        boris.attach("deal", deal["id"], b"x", name="x.txt")
    assert [f["id"] for f in boris.files("deal", other["id"])] == [mine["id"]]
    assert anna.files("deal", deal["id"])[0]["created_by"] == "anna"


def test_delete_removes_the_rows_and_prune_the_content(crm, tmp_path) -> None:
    keep = crm.create("deal", {"title": "keep"})
    gone = crm.create("deal", {"title": "gone"})
    shared = crm.attach("deal", keep["id"], b"shared", name="s.txt")
    crm.attach("deal", gone["id"], b"shared", name="s.txt")
    crm.attach("deal", gone["id"], b"only", name="o.txt", field="contract")
    crm.attach("deal", gone["id"], png(), name="p.png", field="photo")
    crm.delete("deal", gone["id"])
    assert rows(crm) == 1
    store = LocalStore(tmp_path / "store")
    assert len(list(store.stored())) == 3
    assert crm.prune() == {"rows": 0, "removed": 0, "kept": 3, "dry_run": False}  # too young: within the grace
    assert crm.prune(grace=0, dry_run=True) == {"rows": 0, "removed": 2, "kept": 1, "dry_run": True}
    assert len(list(store.stored())) == 3
    assert crm.prune(grace=0) == {"rows": 0, "removed": 2, "kept": 1, "dry_run": False}
    assert [sha for sha, _ in store.stored()] == [shared["sha256"]]
    crm.detach("deal", keep["id"], shared["id"])
    assert crm.prune(grace=0)["removed"] == 1 and list(store.stored()) == []


def test_prune_removes_the_rows_of_records_deleted_behind_its_back(crm) -> None:
    deal = crm.create("deal", {"title": "A"})
    crm.attach("deal", deal["id"], b"x", name="x.txt")
    table = crm.storage.table("deal")
    with crm.engine.begin() as conn:
        conn.execute(table.delete())
    assert crm.prune(grace=0) == {"rows": 1, "removed": 1, "kept": 0, "dry_run": False}
    assert rows(crm) == 0
    files = crm.storage.files_table
    with crm.engine.begin() as conn:  # a row of an entity the model no longer has
        values = {"entity": "gone", "record_id": 1, "name": "g", "size": 1, "mime": "text/plain", "sha256": "0" * 64}
        conn.execute(
            files.insert().values(
                **values, created_at=crm.get("deal", crm.create("deal", {"title": "B"})["id"])["created_at"]
            )
        )
    assert crm.prune(grace=0)["rows"] == 1 and rows(crm) == 0


def test_the_default_store_is_beside_the_sqlite_file(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("METACRM_FILES", raising=False)
    path = tmp_path / "crm.db"
    with metacrm.connect(write(tmp_path), f"sqlite:///{path}") as crm:
        crm.migrate()
        deal = crm.create("deal", {"title": "A"})
        info = crm.attach("deal", deal["id"], b"x", name="x.txt")
    assert (tmp_path / "crm.db.files" / key(info["sha256"])).is_file()
    monkeypatch.setenv("METACRM_FILES", str(tmp_path / "elsewhere"))
    with metacrm.connect(write(tmp_path), f"sqlite:///{path}") as crm:
        crm.attach("deal", deal["id"], b"y", name="y.txt")
    assert (tmp_path / "elsewhere").is_dir()
    monkeypatch.delenv("METACRM_FILES")
    with metacrm.connect(write(tmp_path), "sqlite://") as crm:
        crm.migrate()
        deal = crm.create("deal", {"title": "A"})
        with pytest.raises(metacrm.errors.SetupError, match="no file store for this sqlite database"):
            crm.attach("deal", deal["id"], b"x", name="x.txt")


def test_a_store_scheme_it_does_not_know_is_a_setup_error(tmp_path) -> None:
    with metacrm.connect(write(tmp_path), "sqlite://", files="ftp://host/x") as crm:
        crm.migrate()
        deal = crm.create("deal", {"title": "A"})
        with pytest.raises(metacrm.errors.SetupError, match="unknown scheme 'ftp'"):
            crm.attach("deal", deal["id"], b"x", name="x.txt")


def test_a_source_that_cannot_be_read_is_refused(crm, tmp_path) -> None:
    deal = crm.create("deal", {"title": "A"})
    with pytest.raises(metacrm.ValidationError, match="deal attachments: cannot read .*missing.txt"):
        crm.attach("deal", deal["id"], tmp_path / "missing.txt")


# -- the model ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decl", "type_", "message"),
    [
        ("{type: file, required: true}", "file.option_invalid", "a file field cannot have 'required'"),
        ("{type: image, unique: true}", "file.option_invalid", "cannot have 'unique'"),
        ("{type: file, max_size: 0}", "file.max_size_invalid", "max_size 0 must be a positive number"),
        ("{type: file, max_size: ten}", "file.max_size_invalid", "max_size 'ten'"),
        ("{type: file, accept: [pdf]}", "file.accept_invalid", "'pdf' is neither a MIME type"),
        ("{type: image, accept: [application/pdf]}", "file.accept_invalid", "an image field accepts only"),
        ("{type: string, accept: .pdf}", "field.option_not_applicable", "'accept' does not apply to type 'string'"),
    ],
)
def test_bad_file_declarations_are_refused_with_the_field_and_line(tmp_path, decl, type_, message) -> None:
    text = f"metacrm: 1\nname: bad\nentities:\n  deal:\n    fields:\n      doc: {decl}\n"
    with pytest.raises(metacrm.ModelError) as info:
        metacrm.load_model(write(tmp_path, text))
    found = [p for p in info.value.problems if p.type == type_]
    assert found and message in found[0].message and "deal.doc" in found[0].message and found[0].line == 6


def test_bad_attachments_are_refused_with_the_entity_and_line(tmp_path) -> None:
    text = "metacrm: 1\nname: bad\nentities:\n  deal:\n    attachments: {accept: [pdf]}\n    fields:\n      t: {type: string}\n"
    with pytest.raises(metacrm.ModelError) as info:
        metacrm.load_model(write(tmp_path, text))
    (problem,) = [p for p in info.value.problems if p.type == "file.accept_invalid"]
    assert problem.line == 5 and "entity 'deal': attachments" in problem.message


def test_a_migration_adds_file_fields_and_the_files_table_to_an_entity_with_rows(db_url, tmp_path) -> None:
    before = MODEL.replace('    attachments: {accept: [".pdf", "image/*", ".txt"], max_size: "1 KB"}\n', "")
    before = before.replace('      contract: {type: file, accept: [".pdf", ".txt"], max_size: 1000}\n', "")
    before = before.replace("      photo: {type: image}\n", "").replace(
        "        signed: {requires: [contract]}\n", "        signed: {}\n"
    )
    with metacrm.connect(write(tmp_path, before, "v1.yaml"), db_url, files=tmp_path / "store") as crm:
        crm.migrate()
        assert crm.storage.files_table is None
        crm.create_many("deal", [{"title": "A"}, {"title": "B"}])
    with metacrm.connect(write(tmp_path), db_url, files=tmp_path / "store") as crm:
        plan = crm.migrate(dry_run=True)
        described = " | ".join(step.description for step in plan)
        assert "metacrm_files" in described and "contract" in described and not plan.refusals
        crm.migrate()
        assert [r["contract"] for r in crm.find("deal")] == [None, None]
        info = crm.attach("deal", 1, b"%PDF", name="c.pdf", field="contract")
        assert crm.get("deal", 1)["contract"] == info["id"]


def test_connect_takes_a_path_for_the_store(tmp_path) -> None:
    with metacrm.connect(write(tmp_path), "sqlite://", files=os.fspath(tmp_path / "s")) as crm:
        assert crm.file_store.location == str(tmp_path / "s")


def test_a_dump_carries_the_file_rows_and_the_store_keeps_the_content(crm, tmp_path) -> None:
    from metacrm.io.dump import dump, restore

    deal = crm.create("deal", {"title": "A"})
    info = crm.attach("deal", deal["id"], b"%PDF-1.4", name="c.pdf", field="contract")
    manifest = dump(crm, tmp_path / "backup")
    assert manifest["tables"]["metacrm_files"]["rows"] == 1
    target = f"sqlite:///{tmp_path / 'restored.db'}"
    restore(tmp_path / "backup", target)
    with metacrm.connect(write(tmp_path), target, files=tmp_path / "store") as restored:
        assert restored.get("deal", deal["id"])["contract"] == info["id"]
        _, stream = restored.open_file("deal", deal["id"], info["id"])
        with stream:
            assert stream.read() == b"%PDF-1.4"
        again = restored.attach("deal", deal["id"], b"x", name="x.txt")
        assert again["id"] > info["id"]


def test_a_csv_round_trip_leaves_file_fields_to_attach(crm, tmp_path) -> None:
    from metacrm.io.csv_io import export_csv, import_csv

    deal = crm.create("deal", {"title": "A"})
    crm.attach("deal", deal["id"], b"%PDF", name="c.pdf", field="contract")
    out = io.StringIO()
    export_csv(crm, "deal", out)
    assert out.getvalue().splitlines()[0].startswith("id,title,contract,photo")
    result = import_csv(crm, "deal", io.BytesIO(out.getvalue().encode()), import_stages=True)
    assert len(result.ids) == 1 and not result.rejected
    assert crm.find("deal", order_by="id")[-1]["contract"] is None


def test_concurrent_attaches_to_one_field_leave_one_file_in_it(crm) -> None:
    from concurrent.futures import ThreadPoolExecutor

    deal = crm.create("deal", {"title": "A"})["id"]

    def attach(n: int):
        return crm.retrying(crm.attach, "deal", deal, f"v{n}".encode(), name=f"v{n}.txt", field="contract", attempts=20)

    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(attach, range(8)))
    files = crm.files("deal", deal)
    assert len(files) == 1 and files[0]["id"] in {d["id"] for d in done}
    record = crm.get("deal", deal)
    assert record["contract"] == files[0]["id"] and record["version"] == 9


def test_an_archived_record_keeps_its_files_read_only_and_purge_removes_them(db_url, tmp_path) -> None:
    text = MODEL.replace("  deal:\n    owner: true\n", "  deal:\n    owner: true\n    archive: true\n")
    with metacrm.connect(write(tmp_path, text), db_url, files=tmp_path / "store") as crm:
        crm.migrate()
        deal = crm.create("deal", {"title": "A"})["id"]
        info = crm.attach("deal", deal, b"kept", name="k.txt")
        crm.delete("deal", deal)  # archived: its files stay, readable as the record is
        assert [f["id"] for f in crm.files("deal", deal)] == [info["id"]]
        for write_ in (
            lambda: crm.attach("deal", deal, b"x", name="x.txt"),
            lambda: crm.detach("deal", deal, info["id"]),
        ):
            with pytest.raises(metacrm.ConflictError, match="archived"):
                write_()
        assert rows(crm) == 1 and crm.prune(grace=0)["removed"] == 0
        crm.restore("deal", deal)
        crm.attach("deal", deal, b"x", name="x.txt")
        crm.delete("deal", deal)
        crm.purge("deal", deal)
        assert rows(crm) == 0 and crm.prune(grace=0)["removed"] == 2


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\a\\отчёт.pdf", "отчёт.pdf"),
        ("bad\x00na\x1bme.txt", "badname.txt"),
        ("..", ""),
        ("x" * 300 + ".pdf", "x" * 251 + ".pdf"),
        ("y" * 300, "y" * 255),
    ],
)
def test_names_are_cleaned(given, kept) -> None:
    from metacrm.runtime.files import clean_name

    assert clean_name(given) == kept


def test_odd_file_ids_and_entities_without_files(crm) -> None:
    deal = crm.create("deal", {"title": "A"})["id"]
    for odd in ("abc", True, 2**70, None):
        with pytest.raises(metacrm.NotFound, match=f"deal {deal} has no file"):
            crm.file_info("deal", deal, odd)
    assert crm.files("note", crm.create("note", {"text": "x"})["id"]) == []


def test_a_dry_run_of_prune_counts_the_rows_of_records_gone(crm) -> None:
    deal = crm.create("deal", {"title": "A"})["id"]
    crm.attach("deal", deal, b"x", name="x.txt")
    with crm.engine.begin() as conn:
        conn.execute(crm.storage.table("deal").delete())
    assert crm.prune(grace=0, dry_run=True) == {"rows": 1, "removed": 1, "kept": 0, "dry_run": True}
    assert rows(crm) == 1


def test_a_store_that_cannot_be_written_is_a_setup_error(crm, tmp_path) -> None:
    (tmp_path / "store").write_text("a file where the folder should be")
    deal = crm.create("deal", {"title": "A"})["id"]
    with pytest.raises(metacrm.errors.SetupError, match="file store .*store: cannot create it"):
        crm.attach("deal", deal, b"x", name="x.txt")
    assert rows(crm) == 0
