"""Entities and links drawn as a Mermaid ER diagram."""

from __future__ import annotations

from .metamodel import Model


def one_line(text: str) -> str:
    """A label as Mermaid text takes it: one line (a line break ends a statement), no double
    quote (it ends a quoted label): line breaks and runs of white space become one space, ``"``
    becomes ``'``. Markup needs no escaping here: mermaid sanitises labels (securityLevel strict)."""
    return " ".join(str(text).split()).replace('"', "'")


# Mermaid ends a statement at ``;`` and reads ``#name;`` as a character: both are written as
# its character codes (drawn as themselves).
MERMAID_CODES = str.maketrans({"#": "#35;", ";": "#59;"})


def mermaid_label(text: str) -> str:
    """A label for Mermaid text: on one line, without ``"``, with ``#`` and ``;`` coded."""
    return one_line(text).translate(MERMAID_CODES)


def _label(text: str | None) -> str:
    return f' "{mermaid_label(text)}"' if text else ""


def to_mermaid_erd(model: Model) -> str:
    lines = ["erDiagram", f"    %% {model.name}: {one_line(model.caption)}"]
    for entity in model.entities.values():
        lines.append(f"    {entity.name} {{")
        lines.append("        int id PK")
        if entity.owner:
            lines.append("        user owner")
        if entity.has_stages:
            lines.append("        stage stage")
        for f in entity.fields.values():
            key = " UK" if f.unique else ""
            lines.append(f"        {f.type} {f.name}{key}{_label(f.label)}")
        for link in entity.links.values():
            if not link.many:
                lines.append(f"        {'ref' if link.polymorphic else 'int'} {link.name}_id FK")
        lines.append("    }")
    for entity in model.entities.values():
        for link in entity.links.values():
            for target in link.targets:
                if target not in model.entities:
                    continue
                if link.many:
                    shape = "}o--o{"
                elif link.required and not link.polymorphic:
                    shape = "}o--||"
                else:
                    shape = "}o--o|"
                name = link.name + (f" / {link.inverse}" if link.inverse else "")
                lines.append(f'    {entity.name} {shape} {target} : "{name}"')
    return "\n".join(lines) + "\n"
