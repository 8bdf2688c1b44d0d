"""Words of a title or a text attribute, in any script: what the tabular encoder counts and the
duplicate finder compares.

scikit-learn's default pattern takes a word as a run of two or more word characters between
boundaries. Chinese and Japanese write no spaces, so a whole title was one "word"
("新款红色运动鞋"), never shared with another title, and single-character words (伞, 红)
were dropped: on a shop of Chinese titles, title-only same-category precision@10 was 0.261,
0.877 with the words here (scripts/languages_shop.py; benchmarks/RESULTS.md, session 58). Here
a run of CJK characters (Han, kana, Hangul) gives its overlapping two-character pieces
(Lucene's CJK bigrams; a lone character stays a word of its own), the text is first
brought to one Unicode form (NFKC: "Ｍüller" written with a combining umlaut or with full-
width letters reads as "müller"), and combining marks that split words (Arabic vowel marks,
which made "فُسْتَان" the word "ان") are dropped, as are format characters (a soft hyphen).
ASCII text gives exactly the words of scikit-learn's pattern; other text without CJK
characters the same but for the forms NFKC changes (MovieLens: 3 of 8,785 title words).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

# Han (with extensions A and the compatibility block), hiragana, katakana, Hangul syllables
# and jamo: scripts written without spaces between words (Hangul with them, in phrases).
_CJK_RANGES = (
    "\u1100-\u11ff\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\u3130-\u318f"
    "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
)
_WORDS = re.compile(f"([{_CJK_RANGES}]+)|([^\\W{_CJK_RANGES}]+)")
# One character of those scripts (``recsys.ingest.values``: short searches, long CJK values).
CJK_CHARACTER = re.compile(f"[{_CJK_RANGES}]")
# Saved with a fitted vocabulary, so that a bundle's words are read as it counted them: 1 is
# scikit-learn's default pattern (bundles before these rules), 2 ``words``.
VERSION = 2


def fold(text: str) -> str:
    """``text`` in one form: NFKC, lower-cased, without combining marks (nonspacing marks
    NFKC leaves uncomposed: Arabic vowel marks, a stray accent with no letter to take it)
    and without format characters (a soft hyphen split "Regen\u00adschirm" in two)."""
    text = unicodedata.normalize("NFKC", text).lower()
    if text.isascii():
        return text
    return "".join(c for c in text if unicodedata.category(c) not in ("Mn", "Cf"))


def words(text: str, shortest: int = 2) -> Iterator[str]:
    """The words of ``text`` (``fold`` first): each run of word characters of at least
    ``shortest`` characters, and of each run of CJK characters its two-character pieces (the
    character itself when it stands alone)."""
    for cjk, other in _WORDS.findall(fold(text)):
        if other:
            if len(other) >= shortest:
                yield other
        elif len(cjk) == 1:
            yield cjk
        else:
            for start in range(len(cjk) - 1):
                yield cjk[start : start + 2]


def analyzer(shortest: int = 2):
    """``words`` as a scikit-learn vectorizer's ``analyzer`` (a list per text)."""
    return lambda text: list(words(text, shortest))
