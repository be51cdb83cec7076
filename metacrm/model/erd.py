"""Entities and links drawn as a Mermaid ER diagram."""

from __future__ import annotations

from .metamodel import Model


def _label(text: str | None) -> str:
    return f' "{text.replace(chr(34), chr(39))}"' if text else ""


def to_mermaid_erd(model: Model) -> str:
    lines = ["erDiagram", f"    %% {model.name}: {model.caption}"]
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
