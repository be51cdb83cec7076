"""Choice options' colors: any CSS color (``#2e7d32``, ``#f80``, ``rgb(46 125 50)``,
``hsl(120 50% 40%)``, ``teal``), read by tinycss2's CSS Color Level 4 parser, and shown as a
badge whose text is black or white, whichever contrasts more with the background (WCAG 2
relative luminance: the better of the two is always at least 4.5:1, the AA level for text).

The badge's background is written back as ``#rrggbb`` from the parsed color, so what the
model declares never reaches a page's style attribute as written.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=256)
def parse_css_color(text: str) -> tuple[float, float, float] | str:
    """(r, g, b) in 0..1 of an opaque CSS color, or why ``text`` is not one."""
    import tinycss2.color4

    color = tinycss2.color4.parse_color(text) if isinstance(text, str) else None
    if color is None or isinstance(color, str):  # a string: currentcolor
        return "is not a CSS color (use #rrggbb, #rgb, rgb(…), hsl(…) or a color name such as teal)"
    if color.alpha < 1:
        return "is not opaque; give a color without transparency (its text contrast must be known)"
    r, g, b = (min(max(c, 0.0), 1.0) for c in color.to("srgb").coordinates)
    return r, g, b


def _luminance(rgb: tuple[float, float, float]) -> float:
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: float, b: float) -> float:
    """The WCAG contrast ratio of two relative luminances."""
    high, low = max(a, b), min(a, b)
    return (high + 0.05) / (low + 0.05)


@lru_cache(maxsize=256)
def badge(text: str | None) -> tuple[str, str] | None:
    """(background ``#rrggbb``, text color ``#000`` or ``#fff``) of an option's color; None
    when it has none (or an invalid one, which the model checks refuse)."""
    if not text:
        return None
    rgb = parse_css_color(text)
    if isinstance(rgb, str):
        return None
    lum = _luminance(rgb)
    ink = "#000" if contrast(lum, 0.0) >= contrast(lum, 1.0) else "#fff"
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb), ink


__all__ = ["badge", "contrast", "parse_css_color"]
