"""What the catalog's trigram index of titles (migration 0011) is asked in a title search.

The index folds case with SQLite's own tables, which predate parts of Unicode: it keeps
Georgian capitals, Cherokee, Osage or Adlam letters and the dotted capital I as they are,
where ``db.fold_case`` (what the search's LIKE compares) folds them. A search for "istanbul"
or "თბილისი" asked the index for trigrams that the titles "İstanbul scarf" and
"ᲗᲑᲘᲚᲘᲡᲘ ᲥᲣᲠᲗᲣᲙᲘ" are not indexed under, and found neither (PostgreSQL finds both).
So the index is asked for every form such a character may take in a title (``forms``), as
alternatives, and the part of the text asked for is chosen to keep them few
(``match_phrase``). The index still finds a superset of the titles holding the text; the
LIKE decides.
"""

from __future__ import annotations

import functools
import itertools
import re
import sqlite3

from recsys.catalog.db import fold_case

# The most alternatives one search asks the index for: a part of the text whose characters
# have more forms between them is not asked whole.
MAX_FORMS = 8
# The shortest text the index can look up: one trigram.
TRIGRAM = 3


@functools.cache
def forms() -> dict[str, tuple[str, ...]]:
    """Character -> the forms the index holds titles' characters under whose ``fold_case``
    is its own, for the characters with more than one (each other character, the index
    finds in any case). Found once per process (about a second), by asking an index in
    memory how it folds each cased character."""
    classes: dict[str, set[str]] = {}  # fold_case -> the characters folding to it
    for code in itertools.chain(range(0xD800), range(0xE000, 0x110000)):
        char = chr(code)
        if char.lower() == char.upper():
            continue  # no case
        folded = fold_case(char)
        if len(folded) == 1:
            classes.setdefault(folded, {folded}).add(char)
    members = sorted(set().union(*classes.values()))
    with sqlite3.connect(":memory:") as index:
        index.execute("CREATE VIRTUAL TABLE f USING fts5(x, tokenize='trigram case_sensitive 0')")
        index.executemany(
            "INSERT INTO f(rowid, x) VALUES (?, ?)", [(ord(c), c * 3) for c in members]
        )
        index.execute("CREATE VIRTUAL TABLE v USING fts5vocab(f, 'instance')")
        indexed = {chr(doc): term[0] for term, doc in index.execute("SELECT term, doc FROM v")}
    found = {}
    for group in classes.values():
        held = tuple(sorted({indexed.get(char, char) for char in group}))
        if len(held) > 1:
            found.update(dict.fromkeys(group, held))
    return found


def match_phrase(text: str) -> str | None:
    """An FTS5 query for ``text``: the phrase of its part the index looks up, once per form
    its characters may take (``forms``), or None when no part of three characters or more
    has at most ``MAX_FORMS`` (the search then reads every title, within its time limit).
    The part is the one holding the most distinct trigrams, the shortest of those (a text
    that repeats itself, "pybydy pybydy ..." of 3,500 characters, cost each of the 18% of
    titles holding "pybydy" its whole length: 2 minutes at 10^6 items)."""
    held = forms()
    best, best_key = None, (0, 0)
    for start in range(len(text) - TRIGRAM + 1):
        count, seen = 1, set()
        for end in range(start + 1, len(text) + 1):
            count *= len(held.get(text[end - 1], ())) or 1
            if count > MAX_FORMS:
                break
            if end - start >= TRIGRAM:
                seen.add(fold_case(text[end - TRIGRAM : end]))
                key = (len(seen), start - end)  # more trigrams, then shorter
                if key > best_key:
                    best, best_key = (start, end), key
        if end == len(text) and count <= MAX_FORMS:
            break  # a later start holds no trigram this one does not
    if best is None:
        return None
    part = text[best[0] : best[1]]
    spellings = itertools.product(*(held.get(char, (char,)) for char in part))
    return " OR ".join('"' + "".join(s).replace('"', '""') + '"' for s in spellings)


# The Greek sigma's forms: PostgreSQL's lower() keeps a final ς as it is and makes Σ a σ, so
# ILIKE found "καφές" for "καφές" but not for "ΚΑΦΈΣ", and "ΟΔΟΣ" for "ΟΔΟΣ" but not "οδος".
SIGMAS = frozenset("σςΣ")
_SIGMA = re.compile(f"[{''.join(sorted(SIGMAS))}]")


def without_sigma(text: str) -> str:
    """The longest part of ``text`` holding no sigma: what a PostgreSQL search of a text
    with one asks the trigram index (its ILIKE sees the sigmas' forms apart), the whole
    text then compared with every sigma as σ."""
    return max(_SIGMA.split(text), key=len)
