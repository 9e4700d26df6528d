"""The one English stemmer of the offline scorers: nltk's Snowball ("Porter2") stemmer.

:func:`stem` serves both the Bloom lexicon match (:mod:`thtb.scorers.bloom`: query tokens and lexicon verbs meet on
their stems) and the TF-IDF relevance of the quality heuristic (:mod:`thtb.scorers.quality`: tokens and stop words are
stemmed alike). The Snowball stemmer is pure Python and needs no ``nltk_data`` download.

Before stemming, British ``-ise``/``-yse`` verb spellings are respelled ``-ize``/``-yze`` (also with
``-es``/``-ed``/``-ing``/``-er(s)``/``-ation(s)``) when at least two letters precede the ``i``/``y``: Snowball alone
stems "analyse" to ``analys`` but "analyze" to ``analyz``. The respelling touches other words too ("noise" → "noize"),
harmlessly, since every side of a comparison goes through the same function.

Known Snowball quirks: it conflates some nouns with verbs ("translation" and "translate" → ``translat``; "organic" and
"organize" → ``organ``), leaves irregular forms alone ("wrote", "made") and undoubles a final consonant only after
stripping a suffix, so "adding"/"added" → ``ad`` while "add" → ``add``.
"""

from __future__ import annotations

import functools
import re

from nltk.stem.snowball import SnowballStemmer

_SNOWBALL = SnowballStemmer("english")
_BRITISH = re.compile(r"(?<=[a-z]{2}[iy])s(?=(?:e|es|ed|ing|ers?|ations?)$)")


def respell(token: str) -> str:
    """A lowercase word with British ``-ise``/``-yse`` verb endings respelled ``-ize``/``-yze`` (module doc)."""
    return _BRITISH.sub("z", token)


@functools.lru_cache(maxsize=1 << 18)
def stem(token: str) -> str:
    """The Snowball stem of a lowercase word token, after :func:`respell`. Memoised: a pool repeats its words many
    times."""
    return _SNOWBALL.stem(respell(token))
