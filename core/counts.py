"""Numbers as a person writes them: a count with its noun ("1 picture",
"2 pictures"), the first few of a list ("a, b, c, …"), a learning rate
(0.001, 1e-5).

Messages are built from counts all over the app; this is the one place that
knows a count of one takes the singular.
"""

from __future__ import annotations


def how_many(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and the noun in the number it takes (`plural` when adding an s is wrong)."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"


def first_few(names, shown: int) -> str:
    """The first `shown` of `names`, then "…" where there are more: "a, b, c, …"."""
    return ", ".join(map(str, names[:shown])) + (", …" if len(names) > shown else "")


def rate_text(lr: float) -> str:
    """A learning rate as people write it: 0.001, 0.0003, 1e-5 (never "100n" or "1μ")."""
    text = f"{lr:.2g}"  # 0.0003, or 1e-05 below 0.0001
    if lr >= 1:
        return f"{float(text):g}"  # 270, not 2.7e+02
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return f"{mantissa}e{int(exponent)}"  # 1e-5, not 1e-05
