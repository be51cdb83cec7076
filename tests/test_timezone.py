"""The model's ``timezone:`` and the one date parser, on SQLite and PostgreSQL: date-times
written without a zone (API, CLI values, CSV imports, filters, --now, --as-of) are local time
of the model's zone; tables, ``get`` and templates show them there with the zone; ``at:``
schedules and report dates follow it; stored values stay UTC."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.dates import DateError, format_datetime, parse_date, parse_datetime

UTC = dt.UTC
MODEL = """\
metacrm: 1
name: tz
timezone: {zone}
entities:
  deal:
    owner: true
    title: title
    fields:
      title:   {{type: string, required: true}}
      amount:  {{type: money}}
      meet_at: {{type: datetime}}
      due_day: {{type: date}}
      hot:     {{type: boolean, default: false}}
    stages:
      initial: new
      states: {{new: {{}}, won: {{kind: won}}}}
      transitions: {{new: [won]}}
automations:
  morning:
    when: {{entity: deal, at: "0 9 * * *"}}
    if: "hot = true"
    do:
      - notify: {{to: [owner], template: "Встреча {{title}}: {{meet_at}}"}}
roles:
  manager:
    "*": all
"""
MSK = dt.timezone(dt.timedelta(hours=3))


def write_model(tmp_path, zone: str):
    path = tmp_path / f"tz_{zone.replace('/', '_')}.yaml"
    path.write_text(MODEL.format(zone=zone), encoding="utf-8")
    return path


@pytest.fixture
def model_path(tmp_path):
    return write_model(tmp_path, "Europe/Moscow")


@pytest.fixture
def crm(model_path, db_url):
    crm = metacrm.connect(model_path, db_url)
    crm.migrate()
    crm.add_user("alice", roles=["manager"], email="alice@example.ru")
    yield crm
    crm.close()


# -- the one parser -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("10.12.2026", dt.datetime(2026, 12, 9, 21, 0, tzinfo=UTC)),  # midnight in Moscow
        ("2026-12-10", dt.datetime(2026, 12, 9, 21, 0, tzinfo=UTC)),
        ("10.12.2026 14:30", dt.datetime(2026, 12, 10, 11, 30, tzinfo=UTC)),
        ("10.12.2026T14:30:15", dt.datetime(2026, 12, 10, 11, 30, 15, tzinfo=UTC)),
        ("2026-12-10T14:30", dt.datetime(2026, 12, 10, 11, 30, tzinfo=UTC)),
        ("2026-12-10 14:30:00+00:00", dt.datetime(2026, 12, 10, 14, 30, tzinfo=UTC)),
        ("2026-12-10T14:30Z", dt.datetime(2026, 12, 10, 14, 30, tzinfo=UTC)),
        ("10.12.2026 14:30 +0500", dt.datetime(2026, 12, 10, 9, 30, tzinfo=UTC)),
    ],
)
def test_one_parser_reads_every_form(text, expected) -> None:
    assert parse_datetime(text, "Europe/Moscow") == expected
    assert parse_datetime(dt.datetime(2026, 12, 10, 14, 30), "Europe/Moscow") == dt.datetime(
        2026, 12, 10, 11, 30, tzinfo=UTC
    )


def test_one_parser_errors_name_the_value_and_the_forms() -> None:
    assert parse_date("10.12.2026") == parse_date("2026-12-10") == dt.date(2026, 12, 10)
    for bad in ("10/12/2026", "завтра", "2026-12-10 25:00", "31.02.2026"):
        with pytest.raises(DateError, match=rf"'{bad}' is not a date.*YYYY-MM-DD or DD\.MM\.YYYY"):
            parse_datetime(bad, "Europe/Moscow")
    with pytest.raises(DateError, match="unknown time zone 'Mars/Olympus'"):
        parse_datetime("2026-12-10 10:00", "Mars/Olympus")
    assert (
        format_datetime(dt.datetime(2026, 12, 10, 11, 30, tzinfo=UTC), "Europe/Moscow") == "2026-12-10T14:30:00+03:00"
    )


def test_unknown_zone_is_a_located_model_error(tmp_path) -> None:
    path = write_model(tmp_path, "Europe/Moskow")
    with pytest.raises(metacrm.ModelError) as info:
        metacrm.load_model(path)
    (problem,) = [p for p in info.value.problems if p.type == "model.timezone"]
    assert problem.line == 3 and "did you mean 'Europe/Moscow'" in problem.message
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 2
    assert ":3:" in result.output and "timezone: unknown time zone 'Europe/Moskow'" in result.output
    assert metacrm.load_model(write_model(tmp_path, "UTC")).timezone == "UTC"
    assert metacrm.load_model(model_path_default(tmp_path)).timezone == "UTC"


def model_path_default(tmp_path):
    path = tmp_path / "nozone.yaml"
    path.write_text(MODEL.format(zone="UTC").replace("timezone: UTC\n", ""), encoding="utf-8")
    return path


# -- reading values -------------------------------------------------------------------------
def test_values_without_a_zone_are_local_time(crm, tmp_path, model_path, db_url) -> None:
    deal = crm.create("deal", {"title": "A", "meet_at": "10.12.2026 14:30"})
    assert deal["meet_at"] == dt.datetime(2026, 12, 10, 11, 30, tzinfo=UTC)  # stored in UTC
    other = crm.create("deal", {"title": "B", "meet_at": "2026-12-10T14:30+00:00"})
    assert other["meet_at"] == dt.datetime(2026, 12, 10, 14, 30, tzinfo=UTC)
    # filters read their literals the same way
    assert [r["id"] for r in crm.find("deal", where="meet_at = '10.12.2026 14:30'")] == [deal["id"]]
    assert [r["id"] for r in crm.find("deal", where="meet_at < '2026-12-10 15:00'")] == [deal["id"]]
    # the CLI and CSV imports too
    runner = CliRunner()
    common = ["--model", str(model_path), "--db", db_url]
    made = runner.invoke(app, ["create", "deal", "title=C", "meet_at=2026-12-10 14:30", "--format", "json", *common])
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["meet_at"] == "2026-12-10T11:30:00+00:00"
    csv = tmp_path / "deals.csv"
    csv.write_text("title,meet_at\nD,10.12.2026 14:30\n", encoding="utf-8")
    imported = runner.invoke(app, ["import", "deal", str(csv), *common])
    assert imported.exit_code == 0, imported.output
    assert crm.find("deal", where="title = 'D'")[0]["meet_at"] == dt.datetime(2026, 12, 10, 11, 30, tzinfo=UTC)


def test_a_utc_model_reads_the_same_text_as_utc(tmp_path, db_url) -> None:
    with metacrm.connect(write_model(tmp_path, "UTC"), db_url) as crm:
        crm.migrate()
        deal = crm.create("deal", {"title": "A", "meet_at": "10.12.2026 14:30"})
        assert deal["meet_at"] == dt.datetime(2026, 12, 10, 14, 30, tzinfo=UTC)


# -- showing values -------------------------------------------------------------------------
def test_tables_show_local_time_with_the_offset_json_keeps_utc(crm, model_path, db_url) -> None:
    crm.create("deal", {"title": "A", "meet_at": "10.12.2026 14:30"})
    runner = CliRunner()
    common = ["--model", str(model_path), "--db", db_url]
    card = runner.invoke(app, ["get", "deal", "1", *common])
    assert card.exit_code == 0, card.output
    assert "2026-12-10T14:30:00+03:00" in card.stdout
    table = runner.invoke(app, ["list", "deal", *common])
    assert "2026-12-10T14:30:00+03:00" in table.stdout
    as_json = runner.invoke(app, ["get", "deal", "1", "--format", "json", *common])
    assert '"2026-12-10T11:30:00+00:00"' in as_json.stdout


def test_templates_and_schedules_use_the_zone(crm) -> None:
    alice = crm.as_user("alice")
    alice.create("deal", {"title": "Ромашка", "hot": True, "meet_at": "10.12.2026 14:30"})
    # 09:00 in Moscow is 06:00 UTC: at 06:05 UTC today's morning is due, not yesterday's
    fired = crm.tick(dt.datetime(2030, 3, 4, 6, 5, tzinfo=UTC))
    assert [f["occurrence"] for f in fired] == ["2030-03-04T06:00:00+00:00"]
    assert crm.tick("04.03.2030 10:00") == []  # naive --now: Moscow time, the same morning
    (message,) = outbox(crm)
    assert message["body"] == "Встреча Ромашка: 2026-12-10 14:30 MSK"
    later = crm.tick("05.03.2030 09:00")  # the next local morning, exactly
    assert [f["occurrence"] for f in later] == ["2030-03-05T06:00:00+00:00"]


def outbox(crm) -> list[dict]:
    from sqlalchemy import select

    table = crm.storage.outbox_table
    with crm.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).order_by(table.c.id)).mappings()]


def test_cli_now_and_as_of_take_every_form(crm, model_path, db_url) -> None:
    crm.create("deal", {"title": "A", "hot": True})
    runner = CliRunner()
    common = ["--model", str(model_path), "--db", db_url]
    result = runner.invoke(app, ["tick", "--now", "04.03.2030 09:00", "--no-deliver", "--format", "json", *common])
    assert result.exit_code == 0, result.output
    assert [f["occurrence"] for f in json.loads(result.stdout)["fired"]] == ["2030-03-04T06:00:00+00:00"]
    bad = runner.invoke(app, ["tick", "--now", "04/03/2030", *common])
    assert bad.exit_code == 2 and "'04/03/2030' is not a date and time" in bad.output
    funnel = runner.invoke(app, ["report", "funnel", "deal", "--as-of", "10.12.2026", "--format", "json", *common])
    assert funnel.exit_code == 0, funnel.output


# -- report dates ---------------------------------------------------------------------------
def test_report_periods_and_bounds_are_local_days(crm) -> None:
    # 01:30 on 1 April in Moscow is 22:30 on 31 March in UTC: an April deal here
    crm.create("deal", {"title": "A", "amount": "100.00", "meet_at": "01.04.2026 01:30"})
    crm.create("deal", {"title": "B", "amount": "50.00", "meet_at": "31.03.2026 23:30"})
    report = crm.report_group("deal", "stage", sum="amount", period="month", date="meet_at")
    assert sorted((r["period"], r["count"]) for r in report["rows"]) == [("2026-03", 1), ("2026-04", 1)]
    april = crm.report_group("deal", "stage", date="meet_at", date_from="01.04.2026")
    assert april["total"]["count"] == 1
    march = crm.report_group("deal", "stage", date="meet_at", date_to="2026-03-31")
    assert march["total"]["count"] == 1
    quarter = crm.report_group("deal", "stage", period="quarter", date="meet_at")
    assert sorted(r["period"] for r in quarter["rows"]) == ["2026-Q1", "2026-Q2"]


def test_funnel_as_of_a_date_is_the_end_of_the_local_day(crm) -> None:
    deal = crm.create("deal", {"title": "A"})
    created = deal["created_at"]
    local_day = created.astimezone(MSK).date()
    assert crm.funnel("deal", as_of=local_day)["stages"][0]["now"] == 1
    assert crm.funnel("deal", as_of=local_day - dt.timedelta(days=1))["stages"][0]["now"] == 0
    assert crm.funnel("deal", date_from=local_day.strftime("%d.%m.%Y"))["stages"][0]["now"] == 1
    assert crm.funnel("deal", date_to=(local_day - dt.timedelta(days=1)).isoformat())["stages"][0]["now"] == 0
