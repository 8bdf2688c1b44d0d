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
_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(b" \t\r\n\x0b\x0c")] = True


@dataclass
class Records:
    """The complete records of a block (those whose line break has been read)."""

    starts: np.ndarray  # (R,) byte offset where each record starts
    ends: np.ndarray  # (R,) byte offset just past its line break
    lines: np.ndarray  # (R,) line breaks before its start, counted from the block start
    fields: np.ndarray  # (R,) number of fields
    blank: np.ndarray  # (R,) nothing but whitespace: skipped, like the row reader does
    breaks: np.ndarray  # (N + 1,) line breaks before each byte offset
    regular: bool  # every quote in these records opens or closes a field


def scan(block: bytes, delimiter: str, final: bool) -> Records:
    """Records of ``block``; with ``final`` the block is the end of the file."""
    data = np.frombuffer(block, dtype=np.uint8)  # (N,)
    quote = data == QUOTE
    inside = (np.cumsum(quote) & 1).astype(bool)  # after this byte, inside quotes
    following = np.append(data[1:], NEWLINE if final else 0)
    is_break = (data == NEWLINE) | ((data == RETURN) & (following != NEWLINE))
    if not final and len(data) and data[-1] == RETURN:
        is_break[-1] = False  # "\r" then maybe "\n" in the next block
    ends = np.flatnonzero(is_break & ~inside) + 1
    if final and len(data) and (not len(ends) or ends[-1] < len(data)):
        ends = np.append(ends, len(data))  # last line without a break
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    breaks = _prefix(is_break)
    delimiters = _prefix((data == ord(delimiter)) & ~inside)
    visible = _prefix(~_SPACE[data])
    return Records(
        starts=starts,
        ends=ends,
        lines=breaks[starts],
        fields=delimiters[ends] - delimiters[starts] + 1,
        blank=visible[ends] == visible[starts],
        breaks=breaks,
        regular=_regular_quotes(data, quote, inside, ends[-1] if len(ends) else 0, delimiter),
    )


def _prefix(mask: np.ndarray) -> np.ndarray:
    """(N + 1,) how many of ``mask`` lie before each offset."""
    return np.concatenate([[0], np.cumsum(mask)])


def _regular_quotes(
    data: np.ndarray, quote: np.ndarray, inside: np.ndarray, stop: int, delimiter: str
) -> bool:
    """True if every quote before ``stop`` opens a field or closes one (RFC 4180)."""
    at = np.flatnonzero(quote[:stop])
    if not len(at):
        return True
    bounds = np.array([ord(delimiter), NEWLINE, RETURN, QUOTE])
    opening = inside[at]
    before = np.where(at > 0, data[np.maximum(at - 1, 0)], NEWLINE)
    after = np.where(at + 1 < len(data), data[np.minimum(at + 1, len(data) - 1)], NEWLINE)
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
