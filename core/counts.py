"""A count with its noun, as a person writes it: "1 picture", "2 pictures".

Messages are built from counts all over the app; this is the one place that
knows a count of one takes the singular.
"""

from __future__ import annotations


def how_many(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and the noun in the number it takes (`plural` when adding an s is wrong)."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
