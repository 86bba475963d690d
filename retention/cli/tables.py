"""Column widths for the CLI's tables: fit the terminal without cutting an id, a name or a date.

rich shrinks every column alike when a table is too wide, which cut values
mid-word (``2026-10-``, ``overdu``) and gave some columns no width at all.
Here each column has a kind:

- *whole* (ids, names, dates, counts, statuses): always its full width;
- *words* (free text): wraps between words, never inside one;
- *instant*: a date and time of day, which may break between the two;
- *fold* (an e-mail address): may break anywhere, since it has no spaces.

The widths start at each column's minimum; the space left is shared out up
to each column's natural width. When even the minimums do not fit, columns
are dropped in the order the command gives (least useful first) and the
caller says which, rather than cutting what remains.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Kind = Literal["whole", "words", "instant", "fold"]

DEFAULT_WIDTH = 100
FOLD_MIN = 16


def terminal_width(is_terminal: bool, default: int = DEFAULT_WIDTH) -> int:
    """``COLUMNS`` when set (piped or not), else the terminal's width, else ``default``."""
    value = os.environ.get("COLUMNS", "").strip()
    if value.isdigit() and int(value) >= 20:
        return int(value)
    if is_terminal:
        return shutil.get_terminal_size((default, 24)).columns
    return default


@dataclass(frozen=True)
class Layout:
    """The columns kept, their widths, and the columns left out to fit."""

    columns: list[str]
    widths: dict[str, int]
    dropped: list[str]


def _longest_word(texts: Sequence[str]) -> int:
    return max((len(word) for text in texts for word in text.split()), default=0)


def minimum(kind: Kind, header: str, cells: Sequence[str]) -> int:
    """The narrowest a column can be without cutting a value or a header word."""
    natural = max([len(header), *(len(c) for c in cells)])
    header_word = _longest_word([header])
    if kind == "whole":
        return natural
    if kind == "words":
        return max(header_word, _longest_word(cells), 1)
    if kind == "instant":
        return max(header_word, min(natural, 10))
    return max(header_word, min(natural, FOLD_MIN))


def fit(
    columns: Sequence[str],
    headers: Mapping[str, str],
    cells: Mapping[str, Sequence[str]],
    kinds: Mapping[str, Kind],
    width: int,
    drop_order: Sequence[str] = (),
) -> Layout:
    """Widths for ``columns`` within ``width`` characters of a boxed table (3 per column and 1).

    If the minimums do not fit, columns of ``drop_order`` are left out, first
    to last, until they do (or none is left to drop: then the table is as
    narrow as it can be without cutting, and wider than asked).
    """
    kept = list(columns)
    dropped: list[str] = []
    mins = {c: minimum(kinds.get(c, "whole"), headers[c], cells[c]) for c in columns}
    naturals = {c: max([len(headers[c]), mins[c], *(len(v) for v in cells[c])]) for c in columns}

    def room() -> int:
        return width - (3 * len(kept) + 1)

    for candidate in drop_order:
        if sum(mins[c] for c in kept) <= room():
            break
        if candidate in kept:
            kept.remove(candidate)
            dropped.append(candidate)
    widths = {c: mins[c] for c in kept}
    spare = room() - sum(widths.values())
    growing = [c for c in kept if widths[c] < naturals[c]]
    while spare > 0 and growing:
        share = max(spare // len(growing), 1)
        for column in list(growing):
            extra = min(share, naturals[column] - widths[column], spare)
            widths[column] += extra
            spare -= extra
            if widths[column] >= naturals[column]:
                growing.remove(column)
            if spare <= 0:
                break
    return Layout(kept, widths, dropped)
