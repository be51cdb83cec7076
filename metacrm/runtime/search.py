"""Full-text search over each entity's declared ``search`` fields (``crm.search``,
``metacrm search TEXT``).

The index is kept by the database itself, so every write path (create, update, delete,
cascades, imports, data updates of migrations) keeps it current without runtime hooks; it is
created with the entity's table (see :func:`metacrm.storage.tables.search_ddl`):

SQLite
    an external-content FTS5 table ``<entity>__fts`` (tokenizer ``unicode61
    remove_diacritics 2``: case folded for every script) kept by AFTER INSERT / UPDATE OF /
    DELETE triggers. Every word of the query is a prefix term: ``постав`` finds
    ``поставки``, ``acme`` finds ``Acme Ltd``; no stemming. Ranked by bm25.
PostgreSQL
    a GIN index on ``to_tsvector('russian', left(<fields joined by spaces>, 200000))`` (a
    tsvector holds at most 1 MB: longer text is indexed by its first 200,000 characters;
    words longer than 2,047 bytes are skipped by PostgreSQL). The ``russian``
    configuration stems Russian words (``поставка`` finds ``поставки``) and keeps Latin
    words as they are (lower-cased); every word of the query is a stemmed prefix term
    (``to_tsquery('russian', 'w1:* & w2:*')``), so ``постав`` finds ``поставки`` too.
    Russian stop words (``и``, ``в``...) are ignored. Ranked by ts_rank.

Every word must match (AND). ``ё`` and ``е`` are one letter: on PostgreSQL the ``russian``
configuration reads ``ё`` as ``е``; on SQLite each word with either letter is looked up in its
spellings with ``ё`` at none or one of them (a word holding two ``ё`` is found only when
written so).

Phones: a search text that is a phone number in any common spelling (``9161234567``,
``8 916 123-45-67``, ``+7 (916) 123-45-67``: digits with spaces, dashes, dots and brackets,
at least seven digits) also finds the records whose ``search`` phone fields hold that number:
it is normalised as phone fields are (E.164, the model's ``region`` for numbers without
``+``) and compared with the stored value; a number that cannot be normalised (no region)
finds the stored numbers ending with its digits. These hits rank first. Results respect row-level access: a user finds only the
records the ``read`` scope of the user's roles lets them read.
"""

from __future__ import annotations

import re

from sqlalchemy import bindparam, column, func, literal, literal_column, or_, select, table, text

from ..errors import ValidationError
from ..model.metamodel import Entity
from ..model.suggest import listing
from ..storage import naming
from ..storage.tables import SEARCH_CONFIG, fts_table_name, search_ddl, search_document, search_index_name
from ..storage.valueindex import holds_value
from ..text import yo_variants
from ..types import SearchHit
from ..validation.values import normal_tag
from .access import row_clause
from .protocol import Host

PHONE_TEXT = re.compile(r"\s*\+?[\d\s().\-]+\s*")
PHONE_RANK = 1000.0  # a phone hit ranks above any text hit
WORD = re.compile(r"[^\W_]+")  # letters and digits: what both tokenizers keep as a word
SNIPPET_WORDS = 12
MARK = ("[", "]")


def query_words(text_: str) -> list[str]:
    """The words of a search text, lower-cased; punctuation and query operators dropped."""
    return [w.lower() for w in WORD.findall(text_ or "")]


def fts5_query(words: list[str]) -> str:
    """SQLite FTS5: every word a quoted prefix term, all required (AND); a word with ``е`` or ``ё``
    is any of its spellings with ``ё`` at none or one of those letters (``елка`` finds
    ``Ёлка``, ``ёлка`` finds ``елка``): FTS5 folds case but keeps ``ё`` apart from ``е``."""
    terms = []
    for w in words:
        spellings = yo_variants(w)
        if len(spellings) == 1:
            terms.append(f'"{w}"*')
        else:
            terms.append("(" + " OR ".join(f'"{s}"*' for s in spellings) + ")")
    return " AND ".join(terms)


def tsquery(words: list[str]) -> str:
    """PostgreSQL to_tsquery text: every word a prefix term, all required."""
    return " & ".join(f"{w}:*" for w in words)


def phone_query(text_: str, region: str | None) -> tuple[str, str] | None:
    """``("=", E.164)`` or ``("suffix", digits)`` when the search text is a phone number."""
    if not PHONE_TEXT.fullmatch(text_ or ""):
        return None
    digits = re.sub(r"\D", "", text_)
    if len(digits) < 7:
        return None
    from ..validation.values import check_phone

    number = check_phone(text_.strip(), region)
    return ("=", number) if number else ("suffix", digits)


def email_query(text_: str) -> str | None:
    """The normalised address when the search text is one e-mail address."""
    text_ = (text_ or "").strip()
    if "@" not in text_ or any(c.isspace() for c in text_):
        return None
    from ..validation.values import check_email

    return check_email(text_)[0]


def _phone_query(storage, ent: Entity, phone: tuple[str, str], limit: int, access):
    """The records whose searchable phone (or phones) fields hold the number, or None (no such
    field)."""
    tbl = storage.table(ent.name)
    fields = [f for f in ent.search if ent.fields[f].type == "phone"]
    several = [f for f in ent.search if ent.fields[f].type == "phones"]
    if not fields and not several:
        return None
    how, value = phone
    if how == "=":
        tests = [tbl.c[f] == value for f in fields]
    else:
        tests = [tbl.c[f].like("%" + value) for f in fields]
    tests += [holds_value(tbl, ent.name, ent.fields[f], value, suffix=how != "=") for f in several]
    if fields:
        shown = func.coalesce(*[tbl.c[f] for f in fields]) if len(fields) > 1 else tbl.c[fields[0]]
    else:
        shown = literal(value if how == "=" else None)
    return _hit_query(tbl, ent, shown, tests, limit, access)


def _value_query(storage, ent: Entity, type_: str, value: str, limit: int, access):
    """The records whose searchable ``type_`` fields (emails, tags) hold ``value``, or None
    (no such field)."""
    several = [f for f in ent.search if ent.fields[f].type == type_]
    if not several:
        return None
    tbl = storage.table(ent.name)
    tests = [holds_value(tbl, ent.name, ent.fields[f], value) for f in several]
    return _hit_query(tbl, ent, literal(value), tests, limit, access)


def _hit_query(tbl, ent: Entity, shown, tests: list, limit: int, access):
    """Exact hits (ranked first): the records passing any of ``tests``, ``shown`` the snippet."""
    title = tbl.c[ent.title] if ent.title else literal(None)
    query = (
        select(tbl.c.id, title.label("title"), literal(PHONE_RANK).label("rank"), shown.label("snippet"))
        .where(or_(*tests))
        .order_by(tbl.c.id)
        .limit(limit)
    )
    return query.where(access) if access is not None else query


def _document(tbl, ent: Entity) -> str:
    return search_document(ent.text_search, tbl.name)


def _sqlite_query(storage, ent: Entity, words: list[str], limit: int, access):
    tbl = storage.table(ent.name)
    fts_name = fts_table_name(tbl.name)
    fts = table(fts_name, column("rowid"))
    fts_ref = literal_column(f'"{fts_name}"')
    title = tbl.c[ent.title] if ent.title else literal(None)
    rank = func.bm25(fts_ref)
    query = (
        select(
            tbl.c.id,
            title.label("title"),
            (-rank).label("rank"),
            func.snippet(fts_ref, -1, MARK[0], MARK[1], "…", SNIPPET_WORDS).label("snippet"),
        )
        .select_from(tbl.join(fts, fts.c.rowid == tbl.c.id))
        .where(text(f'"{fts_name}" MATCH :search_q').bindparams(search_q=fts5_query(words)))
        .order_by(rank, tbl.c.id)
        .limit(limit)
    )
    return query.where(access) if access is not None else query


def _postgresql_query(storage, ent: Entity, words: list[str], limit: int, access):
    tbl = storage.table(ent.name)
    config = literal_column(f"'{SEARCH_CONFIG}'::regconfig")
    document = literal_column(_document(tbl, ent))
    # the same expression as the GIN index (metacrm.storage.tables.search_ddl), so it is used
    vector = func.to_tsvector(config, document)
    q = bindparam("search_q", tsquery(words))
    tsq = func.to_tsquery(config, q)
    rank = func.ts_rank(vector, tsq)
    title = tbl.c[ent.title] if ent.title else literal(None)
    inner = (
        select(tbl.c.id, title.label("title"), rank.label("rank"), document.label("document"))
        .where(vector.op("@@")(tsq))
        .order_by(rank.desc(), tbl.c.id)
        .limit(limit)
    )
    if access is not None:
        inner = inner.where(access)
    inner = inner.subquery()
    options = f"StartSel={MARK[0]}, StopSel={MARK[1]}, MaxWords={SNIPPET_WORDS}, MinWords=4, MaxFragments=1"
    snippet = func.ts_headline(config, inner.c.document, func.to_tsquery(config, q), literal(options))
    return select(inner.c.id, inner.c.title, inner.c.rank, snippet.label("snippet")).order_by(
        inner.c.rank.desc(), inner.c.id
    )


def ensure_search_index(conn, storage) -> list[str]:
    """Create the search index of every searchable entity whose index is missing or was made
    for other fields, and fill it from the records; returns the entities (re)indexed.

    For databases migrated from an earlier model (a migration adding ``search`` fields, or a
    SQLite table rebuild, which drops the triggers): new databases get the index with their
    tables. Idempotent and cheap when everything is in place.
    """
    done: list[str] = []
    dialect = conn.dialect.name
    for ent in storage.model.entities.values():
        if not ent.text_search:
            continue
        name = storage.table(ent.name).name
        statements = search_ddl(dialect, name, ent.text_search)
        for f in ent.text_search:  # long text has no B-tree index (PostgreSQL's fail past ~2.7 kB)
            if ent.fields[f].type == "text" and not ent.fields[f].index:
                conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{naming.index_name(name, [f])}"')
        if dialect == "sqlite":
            fts = fts_table_name(name)
            present = dict(
                conn.exec_driver_sql(
                    "SELECT name, sql FROM sqlite_master WHERE name IN (?, ?, ?, ?)",
                    (fts, f"{fts}_ai", f"{fts}_ad", f"{fts}_au"),
                ).all()
            )
            if present.get(fts) == statements[0] and len(present) == 4:
                continue
            for trigger in ("ai", "ad", "au"):
                conn.exec_driver_sql(f'DROP TRIGGER IF EXISTS "{fts}_{trigger}"')
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{fts}"')
            for statement in statements:
                conn.exec_driver_sql(statement)
            conn.exec_driver_sql(f'INSERT INTO "{fts}"("{fts}") VALUES (\'rebuild\')')
        elif dialect == "postgresql":
            index = search_index_name(name, ent.text_search)
            stale = (
                conn.execute(
                    text(
                        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                        "WHERE i.indrelid = to_regclass(quote_ident(current_schema()) || '.' || quote_ident(:t)) "
                        "AND (c.relname LIKE :p OR pg_get_indexdef(i.indexrelid) LIKE :d)"
                    ),  # a long table's index name is shortened (naming.short): found by what it indexes;
                    # the catalogue of this table only (pg_indexes reads every schema's index definitions,
                    # which fails when another session drops a table meanwhile)
                    {"t": name, "p": f"ix_{name}__search%", "d": "%USING gin (to_tsvector(%"},
                )
                .scalars()
                .all()
            )
            if index in stale:
                continue
            for old in stale:
                conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{old}"')
            for statement in statements:
                conn.exec_driver_sql(statement)
        else:
            continue
        done.append(ent.name)
    return done


class SearchMixin(Host):
    """``crm.search``: full-text search for the CRM facade (one read transaction)."""

    def search(self, text: str, *, entity: str | None = None, limit: int = 20) -> list[SearchHit]:
        """Records whose ``search`` fields hold every word of ``text`` (each as a prefix; on
        PostgreSQL in any grammatical form of a Russian word), best first, at most ``limit``
        in all: ``{"entity", "id", "title", "snippet", "rank"}`` (``snippet``: the matching
        text with the words in [brackets]; ``rank``: higher is better, comparable within one
        database). Only the records the acting user may read.

        ``entity``: search that entity only (it must declare ``search`` fields); otherwise
        every entity that does. Blank text, or text without a word, raises ValidationError.

        The index is created with the entity's table, on a new database (``migrate()``), and
        kept by the database on every write. Not covered yet by ``migrate()`` itself: a
        migration adding or changing ``search`` fields of an existing entity (or rebuilding
        its table on SQLite, which drops the triggers) leaves the index missing or stale until
        :meth:`ensure_search_index` runs.
        """
        self._ready()
        words = query_words(text)
        if not words:
            raise ValidationError(f"nothing to search for in {text!r}: give at least one word")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError(f"limit must be a positive integer, got {limit!r}")
        searchable = [e for e in self.model.entities.values() if e.search]
        if entity is not None:
            ent = self.model.entity(entity)
            if not ent.search:
                have = [e.name for e in searchable]
                raise ValidationError(
                    f"{ent.name} declares no search fields"
                    + (f"; entities with search fields: {listing(have)}" if have else "; no entity declares any")
                )
            searchable = [ent]
        dialect = self.engine.dialect.name
        build = {"sqlite": _sqlite_query, "postgresql": _postgresql_query}.get(dialect)
        if build is None:
            raise ValidationError(f"full-text search is not available on {dialect}")
        found: list[SearchHit] = []
        phone = phone_query(text, self.model.region)
        address = email_query(text)
        tag = normal_tag(text)  # a search text that is a tag finds the records carrying it
        with self._reading() as conn:
            for ent in searchable:
                access = row_clause(self.storage, ent, self.actor)
                queries = [build(self.storage, ent, words, limit, access)]
                if not ent.text_search:
                    queries = []
                if phone is not None:
                    queries.insert(0, _phone_query(self.storage, ent, phone, limit, access))
                if address is not None:
                    queries.insert(0, _value_query(self.storage, ent, "emails", address, limit, access))
                if tag:
                    queries.insert(0, _value_query(self.storage, ent, "tags", tag, limit, access))
                seen: set = set()
                rows = [row for q in queries if q is not None for row in conn.execute(q).mappings()]
                for row in rows:
                    if row["id"] in seen:
                        continue
                    seen.add(row["id"])
                    title = row["title"]
                    found.append(
                        {
                            "entity": ent.name,
                            "id": row["id"],
                            "title": str(title) if title not in (None, "") else f"{ent.name} {row['id']}",
                            "snippet": (
                                f"{MARK[0]}{row['snippet']}{MARK[1]}"
                                if row["rank"] == PHONE_RANK and row["snippet"]
                                else row["snippet"] or ""
                            ),
                            "rank": float(row["rank"]),
                        }
                    )
        found.sort(key=lambda r: (-r["rank"], r["entity"], r["id"]))
        return found[:limit]

    def ensure_search_index(self) -> list[str]:
        """(Re)create and fill the search indexes that are missing or stale after a migration
        of an existing database; returns the entities reindexed (see the module function)."""
        self._ready()
        with self._writing() as conn:
            return ensure_search_index(conn, self.storage)


__all__ = [
    "SearchMixin",
    "email_query",
    "ensure_search_index",
    "fts5_query",
    "phone_query",
    "query_words",
    "tsquery",
]
