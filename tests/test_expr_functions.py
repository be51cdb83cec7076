"""Text and date functions of the expression language (||, lower, upper, length, trim,
substring, today, now, days_between, date_add, if): formulas and filters on both dialects, SQL
and Python agreeing (property tests), null semantics, and today()/now() refused where a stored
value would go stale."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, event, insert, select

import metacrm
from metacrm.errors import ExpressionError, ModelError
from metacrm.expr import compile_python, compile_sql
from metacrm.expr.functions import install_sqlite_functions
from metacrm.expr.parser import parse_value
from metacrm.expr.textdate import add_period
from metacrm.expr.to_sql import ValueSQL
from metacrm.expr.values import bind_value, python_value
from metacrm.storage.tables import build_storage

MODEL = """
metacrm: 1
name: fn_test
entities:
  person:
    fields:
      first_name: {type: string}
      last_name:  {type: string}
      full_name:  {type: string, formula: "trim(coalesce(first_name, '') || ' ' || coalesce(last_name, ''))"}
      initials:   {type: string, formula: "upper(substring(first_name, 1, 1) || substring(last_name, 1, 1))"}
      name_len:   {type: integer, formula: "length(last_name)"}
      born:       {type: date}
      vip:        {type: boolean}
      level:      {type: string, formula: "if(vip, 'gold', if(name_len > 5, 'long', 'plain'))"}
  contract:
    fields:
      title:      {type: string, required: true}
      start_date: {type: date, required: true}
      term:       {type: choice, options: ['1m', '12m']}
      end_date:   {type: date, formula: "date_add(start_date, '12m')"}
      notice:     {type: date, formula: "date_add(end_date, '-30d')"}
      length_days: {type: integer, formula: "days_between(start_date, end_date)"}
      signed_at:  {type: datetime}
"""


@pytest.fixture
def crm(db_url, tmp_path: Path):
    path = tmp_path / "model.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    yield crm
    crm.close()


def test_full_name_and_contract_end_date_are_formulas(crm) -> None:
    ann = crm.create("person", {"first_name": "Анна", "last_name": "Каренина", "vip": False})
    assert ann["full_name"] == "Анна Каренина"
    assert ann["initials"] == "АК"
    assert ann["name_len"] == 8
    assert ann["level"] == "long"
    solo = crm.create("person", {"last_name": "Ли", "vip": True})
    assert solo["full_name"] == "Ли"  # no first name: no leading space
    assert solo["initials"] is None  # null in, null out
    assert solo["level"] == "gold"
    nobody = crm.create("person", {})
    assert nobody["full_name"] == "" and nobody["name_len"] is None and nobody["level"] == "plain"
    updated = crm.update("person", solo["id"], {"first_name": "Брюс"})
    assert updated["full_name"] == "Брюс Ли" and updated["initials"] == "БЛ"

    c = crm.create("contract", {"title": "A", "start_date": "2024-01-31"})
    assert c["end_date"] == dt.date(2025, 1, 31)
    assert c["notice"] == dt.date(2025, 1, 1)
    assert c["length_days"] == 366
    leap = crm.create("contract", {"title": "B", "start_date": "2024-02-29"})
    assert leap["end_date"] == dt.date(2025, 2, 28)  # clamped to the month's last day


def test_functions_in_filters_on_both_dialects(crm) -> None:
    crm.create("person", {"first_name": "Anna", "last_name": "Smith"})
    crm.create("person", {"first_name": "ann", "last_name": "Jones"})
    crm.create("person", {"first_name": "Ёлка", "last_name": "Иванова"})
    today = dt.date.today()
    crm.create("contract", {"title": "old", "start_date": "2000-01-01"})
    crm.create("contract", {"title": "new", "start_date": today.isoformat()})

    def names(where):
        return sorted(r["first_name"] for r in crm.find("person", where))

    assert names("lower(first_name) = 'anna'") == ["Anna"]
    assert names("upper(first_name) = 'ЁЛКА'") == ["Ёлка"]
    assert names("substring(lower(first_name), 1, 3) = 'ann'") == ["Anna", "ann"]
    assert names("trim('  ' || last_name || ' ') = 'Smith'") == ["Anna"]
    assert names("length(last_name) = 5") == ["Anna", "ann"]
    assert names("length(' ' || first_name) = 4") == ["ann"]  # a space counts
    assert names("first_name || '/' || last_name = 'ann/Jones'") == ["ann"]
    assert names("if(length(first_name) > 3, 'long', 'short') = 'short'") == ["ann"]

    def titles(where):
        return sorted(r["title"] for r in crm.find("contract", where))

    assert titles("end_date < today()") == ["old"]
    assert titles("days_between(start_date, today()) > 365") == ["old"]
    assert titles("date_add(start_date, '1w') > today()") == ["new"]
    assert titles("signed_at < now() or signed_at is null") == ["new", "old"]
    # the Python predicate agrees
    pred = compile_python(crm.model, "contract", "end_date < today()")
    assert pred({"end_date": dt.date(2000, 1, 1)}) and not pred({"end_date": today + dt.timedelta(days=1)})


@pytest.mark.parametrize(
    ("formula", "fragment"),
    [
        ("date_add(start_date, '30d') < today()", "today() changes with time"),
        ("days_between(start_date, today())", "today() changes with time"),
        ("now()", "now() changes with time"),
    ],
)
def test_clock_functions_are_refused_in_stored_formulas(tmp_path: Path, formula: str, fragment: str) -> None:
    kind = "boolean" if "<" in formula else ("datetime" if formula == "now()" else "integer")
    text = MODEL + f'      stale: {{type: {kind}, formula: "{formula}"}}\n'
    path = tmp_path / "model.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ModelError) as info:
        metacrm.load_model(path)
    message = str(info.value)
    assert fragment in message and "contract.stale" in message
    assert "model.yaml:" in message  # the file and line of the formula


def test_clock_functions_are_refused_in_rollups(tmp_path: Path) -> None:
    text = MODEL.replace(
        "      signed_at:  {type: datetime}\n",
        "      signed_at:  {type: datetime}\n    links:\n      owner: {to: person, inverse: contracts}\n",
    ).replace(
        "      vip:        {type: boolean}\n",
        "      vip:        {type: boolean}\n"
        '      running:    {type: integer, rollup: "count(contracts where end_date > today())"}\n',
    )
    path = tmp_path / "model.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ModelError, match=r"today\(\) changes with time"):
        metacrm.load_model(path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("1 + 'x'", "'+' needs numbers, not text; join text with ||"),
        ("first_name + 1", "not person.first_name (string); join text with ||"),
        ("first_name || 1", "'||' needs text, not a number"),
        ("lower(vip)", "'lower' needs text"),
        ("substring(first_name, 0, 2)", "start must be a written whole number 1 or more"),
        ("substring(first_name, name_len, 2)", "start must be a written whole number"),
        ("date_add(born, '30x')", "date_add takes a date and a period"),
        ("date_add(born, 30)", "date_add takes a date and a period"),
        ("date_add(first_name, '3d')", "'date_add' needs a date"),
        ("days_between(born)", "days_between takes two dates"),
        ("today(1)", "today takes no values"),
        ("if(vip, 1, 'x')", "both values must be of one kind"),
        ("if(vip, 1)", "if takes a condition and two values"),
        ("if(first_name = :me, 1, 2)", "parameter ':me' cannot be used"),
        ("sqrt(name_len)", "unknown function 'sqrt'"),
    ],
)
def test_bad_calls_name_the_problem(text: str, fragment: str, tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(MODEL, encoding="utf-8")
    model = metacrm.load_model(path)
    with pytest.raises(ExpressionError) as info:
        bind_value(model, "person", parse_value(text), "formula")
    assert fragment in str(info.value)


# -- property tests: SQL on both dialects and Python compute the same values ------------------
PROP_MODEL = """
metacrm: 1
name: fn_prop
entities:
  rec:
    fields:
      a:  {type: string}
      b:  {type: string}
      n:  {type: integer}
      d1: {type: date}
      d2: {type: date}
      ok: {type: boolean}
"""
# letters whose case mapping Python and PostgreSQL (libc, UTF-8) agree on
ALPHABET = "abcXYZ ёЁжЖßàÉ-_1"
TEXTS = st.one_of(st.none(), st.text(alphabet=ALPHABET, max_size=6))
DATES = st.one_of(st.none(), st.dates(min_value=dt.date(1901, 1, 1), max_value=dt.date(2199, 12, 31)))
ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "a": TEXTS,
            "b": TEXTS,
            "n": st.one_of(st.none(), st.integers(-5, 30)),
            "d1": DATES,
            "d2": DATES,
            "ok": st.one_of(st.none(), st.booleans()),
        }
    ),
    min_size=1,
    max_size=4,
)
TEXT_LEAVES = st.sampled_from(["a", "b", "'x'", "' Ё '", "null"])


def _text_expr(children):
    return st.one_of(
        st.tuples(children, children).map(lambda t: f"({t[0]} || {t[1]})"),
        children.map(lambda c: f"lower({c})"),
        children.map(lambda c: f"upper({c})"),
        children.map(lambda c: f"trim({c})"),
        st.tuples(children, st.integers(1, 4), st.integers(0, 3)).map(lambda t: f"substring({t[0]}, {t[1]}, {t[2]})"),
        st.tuples(children, st.integers(1, 4)).map(lambda t: f"substring({t[0]}, {t[1]})"),
        st.tuples(children, children).map(lambda t: f"coalesce({t[0]}, {t[1]})"),
        st.tuples(st.sampled_from(["ok", "n > 3", "a = b", "a is null", "length(a) >= 2"]), children, children).map(
            lambda t: f"if({t[0]}, {t[1]}, {t[2]})"
        ),
    )


TEXT_EXPR = st.recursive(TEXT_LEAVES, _text_expr, max_leaves=4)
PERIODS = st.tuples(st.integers(-30, 30), st.sampled_from("dwmy")).map(lambda t: f"'{t[0]}{t[1]}'")
DATE_EXPR = st.one_of(
    st.sampled_from(["d1", "d2", "today()"]),
    st.tuples(st.sampled_from(["d1", "d2", "today()"]), PERIODS).map(lambda t: f"date_add({t[0]}, {t[1]})"),
    st.tuples(
        st.sampled_from(["ok", "n > 3", "d1 < d2"]), st.sampled_from(["d1", "d2"]), st.sampled_from(["d2", "today()"])
    ).map(lambda t: f"if({t[0]}, {t[1]}, {t[2]})"),
)
NUMBER_EXPR = st.one_of(
    TEXT_EXPR.map(lambda t: f"length({t})"),
    st.tuples(DATE_EXPR, DATE_EXPR).map(lambda t: f"days_between({t[0]}, {t[1]})"),
    st.tuples(
        st.sampled_from(["ok", "a < b", "d1 >= d2"]),
        st.sampled_from(["n", "1", "2.5"]),
        st.sampled_from(["n", "null", "7"]),
    ).map(lambda t: f"if({t[0]}, {t[1]}, {t[2]})"),
)
_PROP: dict = {}
NOW = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


def _prop_world(db_url: str):
    if db_url not in _PROP:
        for engine, *_ in _PROP.values():
            engine.dispose()
        _PROP.clear()
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="metacrm-fn-")) / "prop.yaml"
        path.write_text(PROP_MODEL, encoding="utf-8")
        model = metacrm.load_model(path)
        storage = build_storage(model)
        engine = create_engine(db_url)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", lambda c, r: install_sqlite_functions(c))
        storage.metadata.create_all(engine)
        _PROP[db_url] = (engine, model, storage)
    return _PROP[db_url]


def _agree(db_url: str, rows: list[dict], text: str, compare: str | None) -> None:
    engine, model, storage = _prop_world(db_url)
    table = storage.table("rec")
    value = bind_value(model, "rec", parse_value(text), "formula")
    fn = python_value(value, lambda r: lambda values: values[r.path])
    raw = ValueSQL(storage).value(value, table)
    with engine.begin() as conn:
        conn.execute(table.delete())
        conn.execute(
            insert(table), [{"id": i + 1, "created_at": NOW, "updated_at": NOW, **row} for i, row in enumerate(rows)]
        )
        got = dict(conn.execute(select(table.c.id, raw)).all())
        sql_ids = None
        condition = f"{text} {compare}"
        try:
            clause = None if compare is None else compile_sql(storage, "rec", condition)
            predicate = None if compare is None else compile_python(model, "rec", condition)
        except ExpressionError as exc:  # a written value alone: a comparison needs a name somewhere
            assert "compares two values" in str(exc) or "always null" in str(exc), (condition, str(exc))
            clause = None
        if clause is not None:
            sql_ids = set(conn.execute(select(table.c.id).where(clause)).scalars())
    for i, row in enumerate(rows, start=1):
        want, have = fn(row), got[i]
        if value.kind == "number" and have is not None:
            have = int(have) if value.scale == 0 else have
        if value.kind == "date" and isinstance(have, str):
            have = dt.date.fromisoformat(have)
        if value.kind == "number" and value.scale:
            from metacrm.expr.values import scaled

            have = None if have is None else (have if engine.dialect.name == "sqlite" else scaled(have, value.scale))
        assert have == want, (text, row, have, want)
        if sql_ids is not None:
            assert (i in sql_ids) == predicate(row), (text, compare, row)


SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(rows=ROWS, text=TEXT_EXPR, compare=st.sampled_from([None, "= 'x'", "< 'b'", ">= a", "!= b"]))
def test_text_functions_agree_in_sql_and_python(db_url: str, rows, text: str, compare) -> None:
    _agree(db_url, rows, text, compare)


@SETTINGS
@given(rows=ROWS, text=DATE_EXPR, compare=st.sampled_from([None, "< d2", "= today()", ">= '2000-01-01'"]))
def test_date_functions_agree_in_sql_and_python(db_url: str, rows, text: str, compare) -> None:
    _agree(db_url, rows, text, compare)


@SETTINGS
@given(rows=ROWS, text=NUMBER_EXPR, compare=st.sampled_from([None, "> 3", "= n", "<= 0"]))
def test_number_functions_agree_in_sql_and_python(db_url: str, rows, text: str, compare) -> None:
    _agree(db_url, rows, text, compare)


def test_month_arithmetic_clamps_like_postgresql() -> None:
    assert add_period(dt.date(2024, 1, 31), 1, "m") == dt.date(2024, 2, 29)
    assert add_period(dt.date(2024, 3, 31), -1, "m") == dt.date(2024, 2, 29)
    assert add_period(dt.date(2024, 2, 29), 1, "y") == dt.date(2025, 2, 28)
    assert add_period(dt.date(2024, 2, 29), -2, "w") == dt.date(2024, 2, 15)
    assert add_period(None, 1, "d") is None
