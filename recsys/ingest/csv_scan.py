"""Find CSV records in a block of bytes at once, with the line where each starts.

Python's ``csv`` module and RFC 4180 agree on files whose quotes only open or close a field
(a doubled quote inside a quoted field stands for one quote); for those, record ends are the
line breaks outside quotes, and the parity of a running count of quotes tells which breaks are
outside. ``scan`` reports ``regular=False`` when a quote appears anywhere else, and the caller
then reads the rest of the file row by row with the ``csv`` module, so both readers always give
the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QUOTE, NEWLINE, RETURN = ord('"'), ord("\n"), ord("\r")
# What str.strip() removes, among single bytes: a line of these alone is a blank line.
_SPACE = np.zeros(256, dtype=bool)
_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True


@dataclass
class Records:
    """The complete records of a block (those whose line break has been read)."""

    starts: np.ndarray  # (R,) byte offset where each record starts
    ends: np.ndarray  # (R,) byte offset just past its line break
    lines: np.ndarray  # (R,) line breaks before its start, counted from the block start
    fields: np.ndarray  # (R,) number of fields
    blank: np.ndarray  # (R,) nothing but whitespace: skipped, like the row reader does
    breaks: np.ndarray  # (L,) offsets of all line breaks, inside quotes too
    regular: bool  # every quote in the block opens or closes a field

    def breaks_before(self, offset: int) -> int:
        return int(np.searchsorted(self.breaks, offset))


def scan(block: bytes, delimiter: str, final: bool) -> Records:
    """Records of ``block``; with ``final`` the block is the end of the file.

    Works on the offsets of quotes, breaks and delimiters only: a byte is inside quotes when
    an odd number of quotes comes before it.
    """
    data = np.frombuffer(block, dtype=np.uint8)  # (N,)
    quotes = np.flatnonzero(data == QUOTE)
    breaks = _breaks(data, final)
    ends = breaks[_outside(quotes, breaks)] + 1
    if final and len(data) and (not len(ends) or ends[-1] < len(data)):
        ends = np.append(ends, len(data))  # last line without a break
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    delimiters = np.flatnonzero(data == ord(delimiter))
    delimiters = delimiters[_outside(quotes, delimiters)]
    fields = np.searchsorted(delimiters, ends) - np.searchsorted(delimiters, starts) + 1
    visible = ~_SPACE[data[: ends[-1]]] if len(ends) else np.zeros(0, dtype=bool)
    return Records(
        starts=starts,
        ends=ends,
        lines=np.searchsorted(breaks, starts),
        fields=fields,
        blank=~np.logical_or.reduceat(visible, starts) if len(ends) else visible,
        breaks=breaks,
        regular=_regular_quotes(data, quotes, delimiter),
    )


def _breaks(data: np.ndarray, final: bool) -> np.ndarray:
    """Offsets of line breaks: "\n", and "\r" not followed by "\n" (as Python reads lines)."""
    newlines = np.flatnonzero(data == NEWLINE)
    returns = np.flatnonzero(data == RETURN)
    if not len(returns):
        return newlines
    following = data[np.minimum(returns + 1, len(data) - 1)]
    alone = np.where(returns + 1 < len(data), following != NEWLINE, final)
    return np.sort(np.concatenate([newlines, returns[alone]]))


def _outside(quotes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(K,) True where an even number of quotes precedes each offset."""
    if not len(quotes):
        return np.ones(len(offsets), dtype=bool)
    return (np.searchsorted(quotes, offsets) & 1) == 0


def _regular_quotes(data: np.ndarray, quotes: np.ndarray, delimiter: str) -> bool:
    """True if every quote opens a field or closes one (RFC 4180); a closing quote at the
    end of an unfinished block is judged when the block grows."""
    if not len(quotes):
        return True
    bounds = np.array([ord(delimiter), NEWLINE, RETURN, QUOTE])
    opening = np.arange(len(quotes)) % 2 == 0
    before = np.where(quotes > 0, data[np.maximum(quotes - 1, 0)], NEWLINE)
    last = len(data) - 1
    after = np.where(quotes < last, data[np.minimum(quotes + 1, last)], NEWLINE)
    return bool(np.all(np.where(opening, np.isin(before, bounds), np.isin(after, bounds))))


def keep_bytes(block: bytes, starts: np.ndarray, ends: np.ndarray) -> bytes:
    """The bytes of the records ``[starts[i], ends[i])``, in order, as one block."""
    if len(starts) and ends[-1] - starts[0] == int(np.sum(ends - starts)):
        return block[starts[0] : ends[-1]]  # contiguous: a slice, no copy of each record
    edges = np.zeros(len(block) + 1, dtype=np.int64)
    np.add.at(edges, starts, 1)
    np.add.at(edges, ends, -1)
    mask = np.cumsum(edges[:-1]) > 0
    return np.frombuffer(block, dtype=np.uint8)[mask].tobytes()
