"""The API's file routes on SQLite and PostgreSQL: multipart upload, list, download with its
headers (type, inline for images only, nosniff), delete; a hidden record's file answers 404
exactly as an absent one; refusals as problem documents with nothing written."""

from __future__ import annotations

import warnings

import pytest
from conftest import require_module
from test_files import migrated, png

from metacrm.runtime.tokens import create_token

require_module("fastapi", why="the HTTP API is the [web] extra")
require_module("python_multipart", why="uploads need python-multipart (the [web] extra)")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from metacrm.web import create_app  # noqa: E402

PROBLEM = "application/problem+json"


@pytest.fixture
def api(db_url, tmp_path):
    crm = migrated(db_url, tmp_path)
    tokens = {login: create_token(crm, login)["token"] for login in ("anna", "boris")}
    client = TestClient(create_app(crm), raise_server_exceptions=False)

    def call(method: str, path: str, user: str = "anna", **kwargs):
        headers = {"Authorization": f"Bearer {tokens[user]}", **kwargs.pop("headers", {})}
        return client.request(method, f"/api/v1{path}", headers=headers, **kwargs)

    call.crm = crm
    yield call
    client.close()
    crm.close()


def test_upload_list_download_delete(api) -> None:
    deal = api("POST", "/deal", json={"title": "A"}).json()
    made = api(
        "POST",
        f"/deal/{deal['id']}/files",
        files={"file": ("договор.pdf", b"%PDF-1.4", "application/pdf")},
        data={"field": "contract"},
    )
    assert made.status_code == 201, made.text
    info = made.json()
    assert info["name"] == "договор.pdf" and info["field"] == "contract" and info["size"] == 8
    assert made.headers["location"] == f"/api/v1/deal/{deal['id']}/files/{info['id']}"
    image = api("POST", f"/deal/{deal['id']}/files", files={"file": ("p.png", png(), "image/png")}).json()
    listed = api("GET", f"/deal/{deal['id']}/files").json()["items"]
    assert [f["id"] for f in listed] == [info["id"], image["id"]]
    got = api("GET", f"/deal/{deal['id']}/files/{info['id']}")
    assert got.status_code == 200 and got.content == b"%PDF-1.4"
    assert got.headers["content-type"] == "application/pdf"
    assert got.headers["content-disposition"] == (
        "attachment; filename=\"file.pdf\"; filename*=UTF-8''%D0%B4%D0%BE%D0%B3%D0%BE%D0%B2%D0%BE%D1%80.pdf"
    )
    assert got.headers["x-content-type-options"] == "nosniff" and "sandbox" in got.headers["content-security-policy"]
    shown = api("GET", f"/deal/{deal['id']}/files/{image['id']}")
    assert shown.headers["content-type"] == "image/png" and shown.headers["content-disposition"].startswith("inline;")
    assert shown.content == png()
    assert api("GET", f"/deal/{deal['id']}").json()["contract"] == info["id"]
    gone = api("DELETE", f"/deal/{deal['id']}/files/{image['id']}")
    assert gone.status_code == 200 and gone.json()["detached"]["id"] == image["id"]
    assert api("GET", f"/deal/{deal['id']}/files/{image['id']}").status_code == 404


def test_a_hidden_record_s_file_answers_as_an_absent_one(api) -> None:
    mine = api("POST", "/deal", json={"title": "Anna's"}, user="anna").json()
    theirs = api("POST", "/deal", json={"title": "Boris's"}, user="boris").json()
    secret = api("POST", f"/deal/{mine['id']}/files", files={"file": ("s.txt", b"secret", "text/plain")}).json()
    answers = [
        api("GET", f"/deal/{mine['id']}/files/{secret['id']}", user="boris"),  # the real file of a hidden record
        api("GET", f"/deal/{mine['id']}/files/999999", user="boris"),  # no such file on it
        api("GET", "/deal/999999/files/1", user="boris"),  # no such record
    ]
    assert [a.status_code for a in answers] == [404, 404, 404]
    assert all(a.headers["content-type"] == PROBLEM for a in answers)
    titles = {a.json()["detail"].replace(str(mine["id"]), "N").replace("999999", "N") for a in answers[:2]}
    assert len(titles) == 1
    via_own = api("GET", f"/deal/{theirs['id']}/files/{secret['id']}", user="boris")
    unknown = api("GET", f"/deal/{theirs['id']}/files/999999", user="boris")
    assert via_own.status_code == unknown.status_code == 404
    assert via_own.json()["detail"].replace(str(secret["id"]), "N") == unknown.json()["detail"].replace("999999", "N")
    for method in ("DELETE", "GET"):
        assert api(method, f"/deal/{mine['id']}/files/{secret['id']}", user="boris").status_code == 404
    upload = api("POST", f"/deal/{mine['id']}/files", user="boris", files={"file": ("x.txt", b"x", "text/plain")})
    assert upload.status_code == 404
    assert api("GET", f"/deal/{mine['id']}/files", user="boris").status_code == 404
    assert [f["name"] for f in api.crm.files("deal", mine["id"])] == ["s.txt"]


def test_bad_uploads_are_refused_as_problems(api) -> None:
    deal = api("POST", "/deal", json={"title": "A"}).json()
    base = f"/deal/{deal['id']}/files"
    cases = [
        (api("POST", base, json={"file": "x"}), 415, "multipart/form-data"),
        (api("POST", base, files={"other": ("x.txt", b"x")}), 422, "multipart part 'file'"),
        (api("POST", base, files={"file": ("x.exe", b"x")}), 422, "deal attachments: 'x.exe'"),
        (api("POST", base, files={"file": ("big.pdf", b"x" * 1001)}, data={"field": "contract"}), 422, "larger than"),
        (api("POST", base, files={"file": ("x.png", b"GIF89")}, data={"field": "photo"}), 422, "is not an image"),
        (api("POST", base, files={"file": ("x.txt", b"x")}, data={"field": "title"}), 422, "is not a file field"),
    ]
    for answer, status, text in cases:
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == PROBLEM and text in answer.text
    assert api.crm.files("deal", deal["id"]) == []
    assert api("PATCH", f"/deal/{deal['id']}", json={"contract": 1}).status_code == 422


def test_an_upload_past_the_server_s_limit_is_413(api) -> None:
    deal = api("POST", "/deal", json={"title": "A"}).json()
    app = api.crm
    small = TestClient(create_app(app, max_upload=100), raise_server_exceptions=False)
    token = create_token(app, "anna")["token"]
    answer = small.post(
        f"/api/v1/deal/{deal['id']}/files",
        files={"file": ("a.txt", b"x" * 500)},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 413 and "over 100 bytes" in answer.text
    small.close()


def test_the_openapi_document_describes_the_file_routes(api) -> None:
    from openapi_spec_validator import validate

    document = api("GET", "/openapi.json").json()
    validate(document)
    upload = document["paths"]["/api/v1/deal/{record_id}/files"]["post"]
    schema = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["properties"]["field"]["enum"] == ["contract", "photo"]
    assert "/api/v1/deal/{record_id}/files/{file_id}" in document["paths"]
    assert "/api/v1/note/{record_id}/files" not in document["paths"]
    schemas = document["components"]["schemas"]
    read = next(
        s for name, s in schemas.items() if name.lower().startswith("deal") and "contract" in s.get("properties", {})
    )
    assert read["properties"]["contract"]["readOnly"] is True
    assert all("contract" not in s.get("properties", {}) for name, s in schemas.items() if "create" in name.lower())


def test_a_server_without_a_file_store_says_so(api, monkeypatch) -> None:
    import metacrm.runtime.files as files

    monkeypatch.delenv("METACRM_FILES", raising=False)
    monkeypatch.setattr(files, "default_location", lambda url: None)
    monkeypatch.setattr(api.crm, "_files_location", None)
    monkeypatch.setattr(api.crm, "_file_store", None)
    deal = api("POST", "/deal", json={"title": "A"}).json()
    answer = api("POST", f"/deal/{deal['id']}/files", files={"file": ("x.txt", b"x")})
    assert answer.status_code == 503 and "no file store for this" in answer.json()["detail"]
    assert api.crm.files("deal", deal["id"]) == []
