"""Inbound requests (``forms:``): a website's callback form, a telephony or mail gateway.

A submission goes through, in order: the token check (a token-bound form needs an
authenticated caller), the honeypot (filled: SpamError), the per-address rate (RateLimited),
the field list (anything the form does not take is refused, naming what it takes), then one
write transaction as the system user:

1. the form's row of ``metacrm_form_state`` is locked (``SELECT ... FOR UPDATE`` on
   PostgreSQL; SQLite's write transaction is already exclusive), so the submissions of one
   form are serialised: duplicates are found reliably and round robin turns rotate fairly;
2. the values (the sender's plus the fixed ``values``) are validated like any create;
3. the entity's duplicate rules run (and its unique fields are looked up): a match adds a
   note to the existing record and the submission answers ``{"status": "duplicate", "id":
   existing}`` instead of creating noise (or refusing);
4. the first assignment rule whose ``if`` holds picks the owner (a login, or the next user
   holding a role, by login, after the one the form gave its last record);
5. the record is created (automations fire, in the same transaction).

The rate limit is a sliding window per (form, address) kept in the process: each server
worker counts on its own, so ``--workers 4`` lets up to four times the rate through. It
bounds abuse; it is not a quota.
"""

from __future__ import annotations

import html
import logging
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update

from ..errors import FieldIssue, NotFound, PermissionDenied, RateLimited, SpamError, ValidationError
from ..model.metamodel import Entity, Form, Model
from ..model.suggest import did_you_mean, listing
from ..storage.types import now_utc
from ..types import FormInfo, FormSubmission
from .duplicates import find_duplicates
from .protocol import Host

log = logging.getLogger("metacrm.forms")


# -- the rate limit ----------------------------------------------------------------------------
class RateLimiter:
    """Sliding windows of recent hits per key; thread-safe, bounded (old keys are pruned)."""

    MAX_KEYS = 100_000

    def __init__(self, clock=time.monotonic):
        self._hits: dict[Any, deque] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def hit(self, key, limit: int, period: float) -> float | None:
        """Count one hit of ``key``; None when it is within ``limit`` per ``period`` seconds,
        else the seconds until one more would be (the refused hit is not counted)."""
        now = self._clock()
        with self._lock:
            window = self._hits.get(key)
            if window is None:
                if len(self._hits) >= self.MAX_KEYS:
                    self._prune(now, period)
                window = self._hits[key] = deque()
            while window and window[0] <= now - period:
                window.popleft()
            if len(window) >= limit:
                return max(window[0] + period - now, 0.001)
            window.append(now)
            return None

    def _prune(self, now: float, period: float) -> None:
        for key in [k for k, w in self._hits.items() if not w or w[-1] <= now - period]:
            del self._hits[key]
        if len(self._hits) >= self.MAX_KEYS:  # a flood of distinct addresses: start over
            self._hits.clear()


_LIMITERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LIMITERS_LOCK = threading.Lock()


def limiter_of(crm) -> RateLimiter:
    """The rate limiter of a CRM's database engine (shared by its as_user views)."""
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(crm.engine)
        if limiter is None:
            limiter = _LIMITERS[crm.engine] = RateLimiter()
        return limiter


# -- helpers -----------------------------------------------------------------------------------
def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _shown(value) -> str:
    text = str(value)
    return text if len(text) <= 200 else text[:199] + "…"


_PERIODS = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
_PREDICATES: dict[tuple[str, str, int], Any] = {}


def _predicate(model, form: Form, index: int):
    from ..expr import compile_python

    key = (model.sha256, form.name, index)
    predicate = _PREDICATES.get(key)
    if predicate is None:
        if len(_PREDICATES) > 1000:
            _PREDICATES.clear()
        rule = form.assign[index]
        predicate = _PREDICATES[key] = compile_python(
            model, form.entity, rule.condition, what=f"form '{form.name}': assign: if"
        )
    return predicate


def _lock_state(conn, table, form: str) -> dict:
    """The form's state row, created when missing, locked until the transaction ends."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    conn.execute(insert(table).values(form=form, turns={}, submissions=0).on_conflict_do_nothing())
    row = conn.execute(select(table).where(table.c.form == form).with_for_update()).mappings().one()
    return dict(row["turns"] or {})


def _holders(conn, crm, role: str) -> list[str]:
    table = crm.storage.user_table
    rows = conn.execute(select(table.c.login, table.c.roles).order_by(table.c.login)).all()
    return [login for login, roles in rows if role in (roles or "").split(",")]


def _next_turn(logins: list[str], last: str | None) -> str:
    after = [login for login in logins if last is not None and login > last]
    return after[0] if after else logins[0]


def find_form(model, name: str) -> Form:
    """The form of that name; NotFound names the forms the model declares."""
    form = model.forms.get(name)
    if form is None:
        hint = did_you_mean(str(name), list(model.forms))
        raise NotFound(f"unknown form '{name}'" + (f" ({hint})" if hint else "") + f"; forms: {listing(model.forms)}")
    return form


def describe_forms(model: Model) -> list[FormInfo]:
    out = []
    for form in model.forms.values():
        rules = []
        for rule in form.assign:
            who = f"user {rule.user}" if rule.user else f"round robin {rule.round_robin}"
            rules.append(f"if {rule.condition}: {who}" if rule.condition else who)
        out.append(
            {
                "name": form.name,
                "label": form.label,
                "entity": form.entity,
                "fields": list(form.fields),
                "values": dict(form.values),
                "assign": rules,
                "token": form.token,
                "rate": None if form.token else f"{form.rate[0]}/{_PERIODS[form.rate[1]]}",
                "honeypot": None if form.token else form.honeypot,
            }
        )
    return out


def form_html(model, name: str, action_url: str) -> str:
    """A small self-contained HTML form posting to ``action_url`` (no script, no external
    asset): labels and input types from the model, the honeypot hidden off screen."""
    form = find_form(model, name)
    return render_form(model.entity(form.entity), form, action_url)


# -- the facade's methods ----------------------------------------------------------------------
class FormsMixin(Host):
    """Inbound requests for the CRM facade: ``forms()``, ``submit_form()``, ``form_html()``."""

    def form(self, name: str) -> Form:
        """The form of that name; NotFound names the forms the model declares."""
        return find_form(self.model, name)

    def forms(self) -> list[FormInfo]:
        """One dict per form of the model: name, label, entity, fields, values, assign, token, rate."""
        return describe_forms(self.model)

    def submit_form(
        self, name: str, data: Mapping[str, Any], *, source_ip: str | None = None, authenticated: bool = False
    ) -> FormSubmission:
        """Create a record through form ``name`` from a sender's ``data`` (only the form's
        fields): ``{"status": "created", "id", "form", "entity", "owner"}``, or, when the
        entity's duplicate rules find an existing record, ``{"status": "duplicate", "id":
        existing, ...}`` after adding a note to it. ``source_ip`` is counted against the form's
        rate (None: not counted); ``authenticated`` says the caller proved who it is (a
        token-bound form refuses anyone else). Raises SpamError, RateLimited, PermissionDenied,
        ValidationError; a refused submission writes nothing."""
        self._ready()
        form = self.form(name)
        if form.token and not authenticated:
            raise PermissionDenied(f"form '{form.name}' is token-bound: send an API token (metacrm token create LOGIN)")
        if not isinstance(data, Mapping):
            raise ValidationError(f"form '{form.name}': the submission must be a mapping of field to value")
        if not form.token and not _blank(data.get(form.honeypot)):
            raise SpamError(f"form '{form.name}': the hidden field '{form.honeypot}' is filled: dropped as spam")
        if source_ip is not None and not form.token:
            wait = limiter_of(self).hit((form.name, source_ip), *form.rate)
            if wait is not None:
                seconds = math.ceil(wait)
                raise RateLimited(
                    f"form '{form.name}': more than {form.rate[0]} submissions in {form.rate[1]} s from {source_ip}; "
                    f"try again in {seconds} s",
                    retry_after=seconds,
                )
        ent = self.model.entity(form.entity)
        values = self._form_values(form, ent, data)
        system = self.as_user(None)
        system._by = f"form {form.name}"  # the journal's `by` (automations it fires name themselves)
        with system.transaction():
            conn = system._tx
            table = self.storage.form_state_table
            turns = _lock_state(conn, table, form.name)
            clean = system.validators[ent.name].create(values)  # every bad field, before anything is written
            existing = self._form_duplicate(conn, ent, clean)
            stamp = {"submissions": table.c.submissions + 1, "updated_at": now_utc()}
            if existing is not None:
                given = ", ".join(f"{k}={_shown(v)}" for k, v in values.items() if k in form.fields)
                system.note(ent.name, existing, f"repeated request via form '{form.name}': {given}")
                conn.execute(update(table).where(table.c.form == form.name).values(**stamp))
                return {"status": "duplicate", "id": existing, "form": form.name, "entity": ent.name}
            owner, role = self._form_owner(conn, form, clean, turns)
            if owner is not None:
                values["owner"] = owner
            if role is not None:
                stamp["turns"] = {**turns, role: owner}
            record = system.create(ent.name, values)
            conn.execute(update(table).where(table.c.form == form.name).values(**stamp))
        return {"status": "created", "id": record["id"], "form": form.name, "entity": ent.name, "owner": owner}

    def _form_values(self, form: Form, ent: Entity, data: Mapping) -> dict:
        unknown = [str(k) for k in data if k not in form.fields and k != form.honeypot]
        if unknown:
            hint = did_you_mean(unknown[0], list(form.fields))
            raise ValidationError(
                f"form '{form.name}': unknown field '{_shown(unknown[0])[:60]}'"
                + (f" ({hint})" if hint else "")
                + f"; the form takes: {listing(form.fields)}",
                [FieldIssue(ent.name, k, "not a field of this form", data[k]) for k in unknown],
            )
        values = {k: v for k, v in data.items() if k in form.fields and not _blank(v)}
        values.update(form.values)
        return values

    def _form_duplicate(self, conn, ent: Entity, clean: dict) -> int | None:
        """The existing record a submission repeats: by the entity's duplicate rules, or by
        the value of a unique field (which would otherwise refuse the create)."""
        found = []
        if ent.duplicates:
            found += [m.existing for m in find_duplicates(conn, self.storage, ent, [clean]) if m.existing is not None]
        table = self.storage.table(ent.name)
        for f in ent.fields.values():
            if f.unique and clean.get(f.name) is not None:
                found += conn.execute(select(table.c.id).where(table.c[f.name] == clean[f.name])).scalars().all()
        return min(found) if found else None

    def _form_owner(self, conn, form: Form, clean: dict, turns: dict) -> tuple[str | None, str | None]:
        """(owner, round-robin role) of the first rule that holds and can assign."""
        for i, rule in enumerate(form.assign):
            if rule.condition and not _predicate(self.model, form, i)(clean):
                continue
            if rule.user is not None:
                table = self.storage.user_table
                if conn.execute(select(table.c.login).where(table.c.login == rule.user)).first():
                    return rule.user, None
                log.warning("form %s: assign: no user '%s' (metacrm user add); rule skipped", form.name, rule.user)
                continue
            logins = _holders(conn, self, rule.round_robin)
            if logins:
                return _next_turn(logins, turns.get(rule.round_robin)), rule.round_robin
            log.warning("form %s: assign: no user holds role '%s'; rule skipped", form.name, rule.round_robin)
        return None, None

    def form_html(self, name: str, action_url: str) -> str:
        """A small self-contained HTML form posting to ``action_url`` (no script, no external
        asset): labels and input types from the model, the honeypot hidden off screen."""
        return form_html(self.model, name, action_url)


# -- the HTML form -----------------------------------------------------------------------------
_INPUT = {
    "email": "email",
    "phone": "tel",
    "url": "url",
    "date": "date",
    "datetime": "datetime-local",
    "integer": "number",
    "money": "number",
    "decimal": "number",
    "percent": "number",
}
_STEP = {"integer": "1", "money": "0.01", "decimal": "any", "percent": "any"}

_STYLE = (
    ".metacrm-form{font:15px/1.4 system-ui,sans-serif;max-width:28em}"
    ".metacrm-form label{display:block;margin:.6em 0 .2em}"
    ".metacrm-form input,.metacrm-form select,.metacrm-form textarea{box-sizing:border-box;width:100%;padding:.4em}"
    ".metacrm-form input[type=checkbox]{width:auto}"
    ".metacrm-form button{margin-top:1em;padding:.5em 1.2em}"
    ".metacrm-hp{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden}"
)


def _control(ent: Entity, name: str) -> str:
    f = ent.fields[name]
    e = html.escape
    attrs = f'id="mcrm-{e(name)}" name="{e(name)}"' + (" required" if f.required else "")
    if f.type == "text":
        return f"<textarea {attrs} rows=\"4\"></textarea>"
    if f.type in ("choice", "multichoice"):
        multiple = " multiple" if f.type == "multichoice" else ""
        first = "" if f.type == "multichoice" else '<option value=""></option>'
        options = "".join(f'<option value="{e(o.value)}">{e(o.label or o.value)}</option>' for o in f.options)
        return f"<select {attrs}{multiple}>{first}{options}</select>"
    if f.type == "boolean":
        return f'<input {attrs} type="checkbox" value="true">'
    extra = f' maxlength="{f.max_length}"' if f.max_length else ""
    if f.type in _STEP:
        extra += f' step="{_STEP[f.type]}"'
    return f'<input {attrs} type="{_INPUT.get(f.type, "text")}"{extra}>'


def render_form(ent: Entity, form: Form, action_url: str) -> str:
    e = html.escape
    rows = []
    for name in form.fields:
        f = ent.fields[name]
        rows.append(f'<label for="mcrm-{e(name)}">{e(f.label or name)}</label>{_control(ent, name)}')
        if f.help:
            rows.append(f"<small>{e(f.help)}</small>")
    trap = (
        f'<div class="metacrm-hp" aria-hidden="true"><label for="mcrm-hp">{e(form.honeypot)}</label>'
        f'<input id="mcrm-hp" name="{e(form.honeypot)}" type="text" tabindex="-1" autocomplete="off"></div>'
    )
    return (
        f'<form class="metacrm-form" method="post" action="{e(action_url)}" '
        f'enctype="application/x-www-form-urlencoded" accept-charset="utf-8">\n'
        f"<style>{_STYLE}</style>\n"
        f"<h3>{e(form.caption)}</h3>\n" + "\n".join(rows) + f"\n{trap}\n"
        f'<button type="submit">{_send(form, ent)}</button>\n</form>\n'
    )


def _send(form: Form, ent: Entity) -> str:
    """The button's word: Russian when the form's or the entity's label is written in Cyrillic."""
    text = (form.label or "") + (ent.label or "")
    return "Отправить" if any("\u0400" <= ch <= "\u04ff" for ch in text) else "Send"


__all__ = ["FormsMixin", "RateLimiter", "describe_forms", "find_form", "form_html", "render_form"]
