"""Inbound requests (issue 11, item 6): `forms:` in the model, crm.submit_form / form_html, the
`metacrm form` commands and POST|GET /forms/{name}, on SQLite and PostgreSQL. Every refusal
leaves the database exactly as it was."""

from __future__ import annotations

import json
import threading
import warnings
from collections import Counter
from pathlib import Path

import pytest
from conftest import dump_database, require_module
from sqlalchemy import create_engine
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app

MODEL = """\
metacrm: 1
name: intake
region: RU
entities:
  lead:
    label: Заявка
    owner: true
    fields:
      name: {type: string, required: true, label: Имя, max_length: 100}
      phone: {type: phone, label: Телефон}
      email: {type: email, unique: true, label: Почта}
      city: {type: string}
      source: {type: choice, options: [site, call, mail]}
      comment: {type: text, label: Комментарий}
      kind: {type: choice, options: [{value: buy, label: Купить}, {value: ask, label: Спросить}]}
    duplicates:
      - {match: phone, field: phone}
  task:
    owner: true
    fields:
      title: {type: string, required: true}
    links:
      lead: {to: lead, inverse: tasks}
roles:
  manager: {"*": all}
  senior: {"*": all}
automations:
  call_back:
    when: {entity: lead, created: true}
    do:
      - create: task
        values: {title: Перезвонить, lead: $record}
forms:
  callback:
    label: Обратный звонок
    entity: lead
    fields: [name, phone, email, city, comment, kind]
    values: {source: site}
    assign: {round_robin: manager}
    rate: 3/minute
  routed:
    entity: lead
    fields: [name, city]
    values: {source: mail}
    honeypot: homepage
    redirect: /thanks
    assign:
      - {if: "city = 'Москва'", user: moscow}
      - {if: "city = 'Казань'", user: ghost}
      - {round_robin: senior}
  gateway:
    entity: lead
    fields: [name, phone]
    values: {source: call}
    token: true
"""

MANAGERS = ("ann", "bob", "cat")


@pytest.fixture
def model_path(tmp_path) -> Path:
    path = tmp_path / "intake.yaml"
    path.write_text(MODEL, encoding="utf-8")
    return path


@pytest.fixture
def crm(model_path, db_url):
    crm = metacrm.connect(model_path, db_url)
    crm.migrate()
    for login in MANAGERS:
        crm.add_user(login, roles=["manager"])
    crm.add_user("moscow", roles=["manager"])  # holds the role too: round robin counts every holder
    crm.add_user("sen1", roles=["senior"])
    crm.add_user("sen2", roles=["senior"])
    yield crm
    crm.close()


def snapshot(crm) -> dict:
    engine = create_engine(crm.engine.url)
    try:
        return dump_database(engine)
    finally:
        engine.dispose()


# -- the library ---------------------------------------------------------------------------------
def test_a_submission_creates_the_record_with_fixed_values_assigned_and_automations_fired(crm):
    got = crm.submit_form("callback", {"name": "Ромашка", "phone": "8 (495) 123-45-67", "website": ""})
    assert got == {"status": "created", "id": got["id"], "form": "callback", "entity": "lead", "owner": "ann"}
    lead = crm.get("lead", got["id"])
    assert (lead["name"], lead["phone"], lead["source"], lead["owner"]) == ("Ромашка", "+74951234567", "site", "ann")
    tasks = crm.related("lead", got["id"], "tasks")
    assert [t["title"] for t in tasks] == ["Перезвонить"]  # the automation ran in the same transaction
    created = {(e["entity"], e["by"]) for e in crm.timeline("lead", got["id"]) if e["action"] == "create"}
    assert created == {("lead", "form callback"), ("task", "automation call_back")}


def test_round_robin_rotates_by_login_across_submissions(crm):
    owners = [crm.submit_form("callback", {"name": f"Клиент {i}"})["owner"] for i in range(12)]
    assert owners == ["ann", "bob", "cat", "moscow"] * 3
    assert Counter(r["owner"] for r in crm.find("lead")) == {login: 3 for login in (*MANAGERS, "moscow")}


def test_concurrent_submissions_rotate_fairly(crm):
    errors: list[BaseException] = []

    def send(worker: int) -> None:
        try:
            for i in range(4):
                crm.submit_form("callback", {"name": f"Поток {worker}-{i}"})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    owners = Counter(r["owner"] for r in crm.find("lead"))
    assert owners == {login: 4 for login in (*MANAGERS, "moscow")}  # 16 leads, 4 holders: 4 each


def test_the_first_matching_rule_assigns_and_a_missing_user_is_skipped(crm, caplog):
    assert crm.submit_form("routed", {"name": "А", "city": "Москва"})["owner"] == "moscow"
    with caplog.at_level("WARNING", logger="metacrm.forms"):
        kazan = crm.submit_form("routed", {"name": "Б", "city": "Казань"})
    assert kazan["owner"] == "sen1"  # rule 2 names no user: the round robin of rule 3
    assert "no user 'ghost'" in caplog.text
    assert crm.submit_form("routed", {"name": "В", "city": "Тверь"})["owner"] == "sen2"
    assert crm.submit_form("routed", {"name": "Г"})["owner"] == "sen1"
    assert crm.get("lead", kazan["id"])["source"] == "mail"


def test_a_repeated_request_is_a_note_on_the_existing_record(crm):
    first = crm.submit_form("callback", {"name": "Ромашка", "phone": "+7 495 123-45-67"})
    again = crm.submit_form("callback", {"name": "ООО Ромашка", "phone": "8 495 1234567", "comment": "срочно"})
    assert again["status"] == "duplicate" and again["id"] == first["id"]
    assert crm.count("lead") == 1 and crm.count("task") == 1
    notes = [e for e in crm.timeline("lead", first["id"]) if e.get("kind") == "note"]
    assert len(notes) == 1 and notes[0]["by"] == "form callback"
    assert "form 'callback'" in notes[0]["text"] and "comment=срочно" in notes[0]["text"]
    by_email = crm.submit_form("callback", {"name": "Лютик", "email": "a@b.ru"})
    again = crm.submit_form("callback", {"name": "Лютик снова", "email": "a@b.ru"})  # a unique field
    assert again == {**again, "status": "duplicate", "id": by_email["id"]}
    # the next new record takes the turn the duplicates did not use
    assert crm.submit_form("callback", {"name": "Новый"})["owner"] == "cat"


@pytest.mark.parametrize(
    ("form", "data", "error", "said"),
    [
        ("callback", {"name": "x", "website": "http://spam.example"}, metacrm.SpamError, "hidden field 'website'"),
        ("routed", {"name": "x", "homepage": "spam"}, metacrm.SpamError, "hidden field 'homepage'"),
        ("callback", {"name": "x", "phne": "1"}, metacrm.ValidationError, "unknown field 'phne' (did you mean 'phone'?)"),
        ("callback", {"name": "x", "source": "call"}, metacrm.ValidationError, "the form takes: name, phone, email"),
        ("callback", {"phone": "+74951234567"}, metacrm.ValidationError, "lead.name"),
        ("callback", {"name": "x", "phone": "abc"}, metacrm.ValidationError, "lead.phone"),
        ("callback", {"name": "x", "kind": "sell"}, metacrm.ValidationError, "lead.kind"),
        ("gateway", {"name": "x"}, metacrm.PermissionDenied, "token-bound"),
        ("nope", {"name": "x"}, metacrm.NotFound, "unknown form 'nope'; forms: callback, routed, gateway"),
    ],
)
def test_refused_submissions_write_nothing(crm, form, data, error, said):
    crm.submit_form("callback", {"name": "До", "phone": "+74950000000"})
    before = snapshot(crm)
    with pytest.raises(error) as caught:
        crm.submit_form(form, data, source_ip="203.0.113.5")
    assert said in str(caught.value)
    assert "\n" not in str(caught.value)
    assert snapshot(crm) == before


def test_the_rate_is_per_form_and_address(crm):
    for i in range(3):
        crm.submit_form("callback", {"name": f"Бот {i}"}, source_ip="203.0.113.7")
    before = snapshot(crm)
    with pytest.raises(metacrm.RateLimited) as caught:
        crm.submit_form("callback", {"name": "Ещё"}, source_ip="203.0.113.7")
    assert 1 <= caught.value.retry_after <= 60
    assert "more than 3 submissions in 60 s" in str(caught.value)
    assert snapshot(crm) == before
    assert crm.submit_form("callback", {"name": "Сосед"}, source_ip="203.0.113.8")["status"] == "created"
    assert crm.submit_form("routed", {"name": "Другая форма"}, source_ip="203.0.113.7")["status"] == "created"
    assert crm.submit_form("callback", {"name": "Без адреса"})["status"] == "created"  # not counted


def test_the_rate_limiter_slides():
    from metacrm.runtime.forms import RateLimiter

    now = [100.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.hit("k", 2, 60) for _ in range(2)] == [None, None]
    assert limiter.hit("k", 2, 60) == pytest.approx(60)
    now[0] = 130.0
    assert limiter.hit("k", 2, 60) == pytest.approx(30)
    now[0] = 160.5
    assert limiter.hit("k", 2, 60) is None  # the first hit left the window


def test_a_token_bound_form_takes_an_authenticated_submission(crm):
    got = crm.submit_form("gateway", {"name": "Звонок", "phone": "+74951112233"}, authenticated=True)
    assert got["status"] == "created" and got["owner"] is None  # no assign: no owner
    assert crm.get("lead", got["id"])["source"] == "call"


def test_the_html_form_is_self_contained(crm):
    text = crm.form_html("callback", "https://crm.example/forms/callback")
    assert text.startswith('<form class="metacrm-form" method="post" action="https://crm.example/forms/callback"')
    assert '<label for="mcrm-name">Имя</label><input id="mcrm-name" name="name" required type="text" maxlength="100">' in (
        text
    )
    assert 'name="phone" type="tel"' in text and 'name="email" type="email"' in text
    assert '<textarea id="mcrm-comment" name="comment" rows="4"></textarea>' in text
    assert '<option value="buy">Купить</option>' in text
    assert '<div class="metacrm-hp" aria-hidden="true">' in text and 'name="website"' in text
    assert 'tabindex="-1"' in text and "Отправить" in text
    for external in ("<script", "<link", "src=", "@import", "url("):
        assert external not in text
    assert "&lt;b&gt;" in crm.form_html("callback", "/x?<b>")  # the action is escaped


def test_dump_and_restore_keep_the_turns(crm, tmp_path):
    from metacrm.io.dump import dump, restore

    for i in range(2):
        crm.submit_form("callback", {"name": f"До копии {i}"})
    dump(str(crm.engine.url.render_as_string(hide_password=False)), tmp_path / "backup")
    target = f"sqlite:///{tmp_path / 'restored.db'}"
    restore(tmp_path / "backup", target)
    copy = metacrm.connect(crm.model, target)
    try:
        assert copy.submit_form("callback", {"name": "После"})["owner"] == "cat"  # the turn went along
    finally:
        copy.close()


# -- the model -----------------------------------------------------------------------------------
BAD = [
    ("entity: leed\n    fields: [name]", "form.entity_unknown", "form 'f': unknown entity 'leed' (did you mean 'lead'?)"),
    ("entity: lead\n    fields: [name, nme]", "form.field_unknown", "'nme' is not a field of 'lead'"),
    ("entity: lead\n    fields: [name, score]", "form.field_unknown", "'score' is a computed field of 'lead'"),
    ("entity: lead\n    fields: [name]\n    values: {source: fax}", "form.value_invalid", "values: source: 'fax'"),
    ("entity: lead\n    fields: [name]\n    values: {sorce: site}", "form.value_unknown", "'sorce' is not a field"),
    ("entity: lead\n    fields: [name, source]\n    values: {source: site}", "form.value_listed", "keep one"),
    ("entity: lead\n    fields: [name]\n    assign: {round_robin: boss}", "form.role_unknown", "unknown role 'boss'"),
    ("entity: lead\n    fields: [name]\n    assign: [{if: \"city = \", user: x}]", "form.if_invalid", "assign: if"),
    ("entity: lead\n    fields: [name]\n    assign: [{if: \"phone = '+7'\", user: x}]", "form.if_invalid", "'phone' is not"),
    ("entity: lead\n    fields: [name]\n    assign: [{if: \"city = 'A'\", user: x}]", "form.if_invalid", "if: lead: unknown"),
    ("entity: note\n    fields: [text]\n    assign: {user: x}", "form.assign_no_owner", "'note' has no owner"),
    ("entity: lead\n    fields: [phone]", "form.required_missing", "'lead' requires 'name'"),
    ("entity: lead\n    fields: [name, website]", "form.honeypot_clash", "the honeypot 'website'"),
    ("entity: lead\n    fields: [name]\n    rate: 10/week", "schema.pattern", "forms.f.rate"),
    ("entity: lead\n    fields: [name]\n    token: yes\n    colour: red", "schema.unknown_key", "unknown key 'colour'"),
]


@pytest.mark.parametrize(("body", "type_", "said"), BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
def test_model_checks_name_the_problem_and_its_line(tmp_path, body, type_, said):
    text = f"""\
metacrm: 1
name: m
entities:
  lead:
    owner: true
    fields:
      name: {{type: string, required: true}}
      phone: {{type: phone}}
      website: {{type: url}}
      source: {{type: choice, options: [site, call]}}
      score: {{type: integer, formula: "1"}}
  note:
    fields:
      text: {{type: text}}
roles:
  manager: {{"*": all}}
forms:
  f:
    {body}
"""
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(metacrm.ModelError) as caught:
        metacrm.load_model(path)
    problems = [p for p in caught.value.errors if p.type == type_]
    assert problems, [p.format() for p in caught.value.errors]
    assert said in problems[0].message
    assert problems[0].line >= 19  # inside the form, not at the top of the file
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 2
    assert f":{problems[0].line}:" in result.output


# -- the command line ----------------------------------------------------------------------------
def test_cli_lists_submits_and_prints_the_html(crm, model_path, db_url):
    runner = CliRunner()
    common = ["--model", str(model_path)]
    listed = runner.invoke(app, ["form", "list", *common, "--format", "json"])
    assert listed.exit_code == 0, listed.output
    doc = json.loads(listed.output)
    assert [f["name"] for f in doc] == ["callback", "routed", "gateway"]
    assert doc[0]["assign"] == ["round robin manager"] and doc[0]["rate"] == "3/minute"
    assert doc[1]["assign"][0] == "if city = 'Москва': user moscow" and doc[2]["token"] is True
    sent = runner.invoke(app, ["form", "submit", "gateway", "name=Звонок", "phone=+74951112233", *common, "--db", db_url])
    assert sent.exit_code == 0, sent.output
    assert "status  created" in sent.output
    before = snapshot(crm)
    bad = runner.invoke(app, ["form", "submit", "callback", "nam=x", *common, "--db", db_url])
    assert bad.exit_code == 1
    assert "unknown field 'nam' (did you mean 'name'?)" in bad.output
    assert snapshot(crm) == before
    page = runner.invoke(app, ["form", "html", "callback", *common])
    assert page.exit_code == 0 and 'action="/forms/callback"' in page.output
    missing = runner.invoke(app, ["form", "html", "nope", *common])
    assert missing.exit_code == 1 and "unknown form 'nope'" in missing.output


# -- HTTP ----------------------------------------------------------------------------------------
PROBLEM = "application/problem+json"


@pytest.fixture
def web(crm):
    require_module("fastapi", why="the HTTP API is the [web] extra")
    require_module("httpx", why="the API tests drive the app through httpx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from metacrm.runtime.tokens import create_token
    from metacrm.web import create_app

    token = create_token(crm, "ann")["token"]
    client = TestClient(create_app(crm, max_body=4096), raise_server_exceptions=False)
    client.token = token
    yield client
    client.close()


def problem_of(response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    doc = response.json()
    assert doc["type"] == f"/problems/{kind}" and doc["status"] == status
    return doc


def test_http_json_and_urlencoded_submissions_answer_only_received(web, crm):
    r = web.post("/forms/callback", json={"name": "Ромашка", "phone": "+74951234567"})
    assert (r.status_code, r.json()) == (200, {"status": "received"})
    r = web.post(
        "/forms/callback",
        content="name=%D0%9B%D1%8E%D1%82%D0%B8%D0%BA&city=&website=",
        headers={"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    assert (r.status_code, r.json()) == (200, {"status": "received"})
    leads = crm.find("lead", order_by="id")
    assert [(x["name"], x["city"], x["owner"], x["source"]) for x in leads] == [
        ("Ромашка", None, "ann", "site"),
        ("Лютик", None, "bob", "site"),
    ]
    before = snapshot(crm)
    r = web.post("/forms/callback", json={"name": "Ромашка", "phone": "8 495 123 45 67"})  # a repeat
    assert (r.status_code, r.json()) == (200, {"status": "received"})  # no id, no hint it exists
    assert crm.count("lead") == 2 and snapshot(crm) != before  # the note was written


def test_http_a_browser_is_sent_on_to_the_forms_redirect(web, crm):
    r = web.post("/forms/routed", data={"name": "Браузер", "city": "Тверь"}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/thanks")
    assert crm.find("lead")[0]["name"] == "Браузер"
    before = snapshot(crm)
    spam = web.post("/forms/routed", data={"name": "Bot", "homepage": "x"}, follow_redirects=False)
    assert (spam.status_code, spam.headers["location"]) == (303, "/thanks")  # spam looks accepted here too
    assert snapshot(crm) == before
    r = web.post("/forms/routed", json={"name": "Скрипт"})  # JSON callers get JSON
    assert (r.status_code, r.json()) == (200, {"status": "received"})


def test_http_spam_looks_accepted_and_writes_nothing(web, crm):
    before = snapshot(crm)
    r = web.post("/forms/callback", data={"name": "Bot", "website": "http://spam.example"})
    assert (r.status_code, r.json()) == (200, {"status": "received"})
    assert snapshot(crm) == before


@pytest.mark.parametrize(
    ("request_kwargs", "status", "kind", "said"),
    [
        ({"json": {"name": "x", "age": 3}}, 422, "validation-error", "unknown field 'age'"),
        ({"json": {"name": "x", "phone": "abc"}}, 422, "validation-error", "lead.phone"),
        ({"json": ["name"]}, 400, "bad-json", "must be a JSON object"),
        ({"content": b"{", "headers": {"content-type": "application/json"}}, 400, "bad-json", "not JSON"),
        ({"content": b"name=x", "headers": {"content-type": "text/plain"}}, 415, "unsupported-media-type", "text/plain"),
        ({"content": b"name=" + b"x" * 5000, "headers": {"content-type": "application/x-www-form-urlencoded"}}, 413,
         "content-too-large", "over 4096 bytes"),
    ],
    ids=["unknown-field", "bad-value", "not-an-object", "bad-json", "content-type", "too-large"],
)
def test_http_refusals_are_problems_and_write_nothing(web, crm, request_kwargs, status, kind, said):
    before = snapshot(crm)
    doc = problem_of(web.post("/forms/callback", **request_kwargs), status, kind)
    assert said in doc["detail"]
    if status == 422:
        assert doc["errors"] and doc["errors"][0]["field"] in ("age", "phone")
    assert snapshot(crm) == before


def test_http_rate_limit_answers_429_with_retry_after(web, crm):
    for i in range(3):
        assert web.post("/forms/callback", json={"name": f"Бот {i}"}).status_code == 200
    before = snapshot(crm)
    r = web.post("/forms/callback", json={"name": "Ещё"})
    doc = problem_of(r, 429, "rate-limited")
    assert 1 <= int(r.headers["retry-after"]) <= 60 and "try again in" in doc["detail"]
    assert snapshot(crm) == before


def test_http_token_bound_form(web, crm):
    before = snapshot(crm)
    r = web.post("/forms/gateway", json={"name": "Звонок", "phone": "+74951112233"})
    problem_of(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    bad = {"Authorization": "Bearer mcrm_not-a-token"}
    problem_of(web.post("/forms/gateway", json={"name": "Звонок"}, headers=bad), 401, "unauthorized")
    assert snapshot(crm) == before
    auth = {"Authorization": f"Bearer {web.token}"}
    r = web.post("/forms/gateway", json={"name": "Звонок", "phone": "+74951112233"}, headers=auth)
    assert r.status_code == 201 and r.json()["status"] == "created"
    created = r.json()["id"]
    r = web.post("/forms/gateway", json={"name": "Звонок 2", "phone": "84951112233"}, headers=auth)
    assert (r.status_code, r.json()["status"], r.json()["id"]) == (200, "duplicate", created)


def test_http_serves_the_html_form_of_public_forms_only(web):
    r = web.get("/forms/callback")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'action="http://testserver/forms/callback"' in r.text and "<title>Обратный звонок</title>" in r.text
    for name in ("gateway", "nope"):  # token-bound and unknown alike: no names revealed
        doc = problem_of(web.get(f"/forms/{name}"), 404, "not-found")
        assert doc["detail"] == f"no public form '{name}' here"
    problem_of(web.post("/forms/nope", json={"name": "x"}), 404, "not-found")
    model = web.get("/api/v1/model", headers={"Authorization": f"Bearer {web.token}"}).json()
    assert [(f["name"], f["path"], f["token"]) for f in model["forms"]] == [
        ("callback", "/forms/callback", False),
        ("routed", "/forms/routed", False),
        ("gateway", "/forms/gateway", True),
    ]
