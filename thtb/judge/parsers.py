"""Strict parsers for LLM-judge answers: a parsed value or :class:`ParseError`, never a default.

Every parser first removes reasoning and formatting noise (:func:`strip_noise`):

* ``<think>…</think>`` blocks (and everything before a lone ``</think>``, which is what a Qwen3-style
  chat template leaves when it opens the block inside the prompt). An unterminated ``<think>`` is a
  truncated answer and a :class:`ParseError`.
* Markdown code fences (```` ```json ```` … ```` ``` ````): the fence lines go, their content stays.

Bloom (:func:`parse_bloom`, :func:`parse_bloom_level`)
    The first JSON object in the text (surrounding prose is tolerated). ``level`` must name a level
    of :data:`~thtb.scorers.base.BLOOM_LEVELS` (case-insensitive; returned in canonical case).
    ``score`` is read by :func:`eval_score`, as the authors' ``extract_final_score`` reads it but only where
    the answer names **one** number unambiguously; an unquoted value (``"score": 3+4``, invalid JSON) is
    quoted before decoding. The score may be fractional (``7.5``, as the authors keep it: ``Bloom =
    (score − 1) / 20`` stays exact) and must lie inside the level's band ``[lo, hi]`` (Remember 1–3 …
    Create 16–21; ``9.5`` is in no band). The level-only variant needs ``level`` only (a bare level
    name as the whole answer is accepted too).

Disciplines (:func:`parse_disciplines`)
    Split on commas, semicolons and newlines (a JSON list of strings is accepted too); bullets,
    numbering, quotes and a leading "Disciplines:" label are removed; each item is normalised to
    ``lower_snake_case``; empties are dropped and duplicates removed keeping first occurrence.
    Zero items, or an item of more than :data:`MAX_DISCIPLINE_WORDS` words (prose, not a list),
    is a :class:`ParseError`.

AlpaGasus rating (:func:`parse_alpagasus`)
    The first non-empty line holds the score, alone: a number (``4``, ``4.5``), optionally after a
    short label (``Score: 4.5``, ``Rating - 4``), optionally over 5 (``4.5/5``, ``4.5 out of 5``),
    optionally in markdown emphasis (``**4.5**``) or followed by a full stop. The score must lie in
    ``[0, 5]``. Any other first line (prose, two numbers, another denominator) is a
    :class:`ParseError`, never a default score. The following lines are the explanation.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import numbers
import operator
import re
from typing import Any

from thtb.scorers.base import BLOOM_BANDS, BLOOM_LEVELS

MAX_DISCIPLINE_WORDS = 6
"""An item longer than this many words is a sentence, not a discipline name."""


class ParseError(ValueError):
    """The judge's answer does not have the required form (the message says why)."""


_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"^\s*```[\w-]*\s*$", re.MULTILINE)
_LEVELS = {level.lower(): level for level in BLOOM_LEVELS}


def _drop_think(text: str) -> str:
    """``text`` without complete ``<think>`` blocks, nor what precedes a lone ``</think>``."""
    if not isinstance(text, str):
        raise ParseError(f"expected text, got {type(text).__name__}")
    out = _THINK.sub("", text)
    low = out.lower()
    if "</think>" in low:  # the opening tag was part of the prompt
        out = out[low.rindex("</think>") + len("</think>"):]
    return out


def strip_noise(text: str) -> str:
    """Remove ``<think>`` blocks and code-fence lines; raise on an unterminated ``<think>``."""
    out = _drop_think(text)
    if "<think>" in out.lower():
        raise ParseError("unterminated <think> block (answer truncated?)")
    out = _FENCE.sub("", out)
    return out.strip()


# --------------------------------------------------------------------------------------- scores
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_UNOPS = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_EXPR_CHARS = re.compile(r"^[0-9\s+\-*/().]+$")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_MAX_EXPRESSION = 100
_SCORE_CHARS = str.maketrans({"＋": "+", "－": "-", "−": "-", "×": "*", "÷": "/", "（": "(", "）": ")",
                              "＝": "="})
"""Full-width operators as the authors' ``_normalize_text`` maps them, plus the minus sign U+2212."""


def _shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _eval_node(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Div) and right == 0:
            raise ParseError("division by zero in score expression")
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNOPS:
        return _UNOPS[type(node.op)](_eval_node(node.operand))
    raise ParseError(f"unsupported element {type(node).__name__} in score expression")


def _eval_expression(text: str, value: Any) -> float:
    """``text`` (digits, ``+ - * /``, parentheses) evaluated with :mod:`ast`; :class:`ParseError` if invalid."""
    if len(text) > _MAX_EXPRESSION:
        raise ParseError(f"score expression {_shown(value)} is longer than {_MAX_EXPRESSION} characters")
    try:
        return float(_eval_node(ast.parse(text, mode="eval")))
    except SyntaxError as exc:
        raise ParseError(f"score {_shown(value)} is not a valid arithmetic expression") from exc
    except OverflowError as exc:
        raise ParseError(f"score {_shown(value)} overflows") from exc


def _score_from_text(value: str) -> float:
    """The one number a textual score names (see :func:`eval_score`)."""
    text = value.strip().translate(_SCORE_CHARS)
    if "=" in text:
        text = text.rsplit("=", 1)[1].strip()
    if not text:
        raise ParseError(f"score {_shown(value)} is not a number")
    if _EXPR_CHARS.match(text):
        return _eval_expression(text, value)
    numbers = _NUMBER.findall(text)
    if not numbers:
        raise ParseError(f"score {_shown(value)} is not a number or an arithmetic expression")
    if len(numbers) > 1:
        shown = ", ".join(numbers[:4])
        raise ParseError(f"score {_shown(value)} is ambiguous: it names {len(numbers)} numbers ({shown})")
    return float(numbers[0])


def eval_score(value: Any) -> int | float:
    """The score a judge wrote, as the authors' ``extract_final_score`` reads it, where unambiguous.

    * a number (not a bool): itself;
    * a string (full-width operators normalised, as the authors do): after the last ``=`` if any
      (``"3+4 = 7"`` → ``"7"``), either an arithmetic expression — digits, ``+ - * /``, parentheses
      — evaluated with :mod:`ast` (``"3+4"`` → 7, ``"7.5"`` → 7.5, ``"7/2"`` → 3.5), or a text that
      names exactly **one** number, which is the score (``"7 points"``, ``"about 9"``, ``"~9"``,
      ``"score: 8"``).

    Returns an ``int`` when the value is whole, else a ``float``. Raises :class:`ParseError` — never
    a default — for no number (``"high"``), two or more numbers that are not one expression
    (``"7 or 8"``, ``"between 7 and 9"``, ``"7-8 points"``: ambiguous; the authors' function reads ``"7 or 8"``
    as 78), an invalid expression, NaN or ±inf, and any other type (``None``, ``True``, lists, dicts).
    """
    if isinstance(value, bool) or value is None:
        raise ParseError(f"score must be a number, got {_shown(value)}")
    if isinstance(value, numbers.Real):
        try:
            number = float(value)
        except OverflowError as exc:
            raise ParseError(f"score {_shown(value)} overflows") from exc
    elif isinstance(value, str):
        number = _score_from_text(value)
    else:
        raise ParseError(f"score must be a number, got {type(value).__name__}")
    if not math.isfinite(number):
        raise ParseError(f"score {_shown(value)} is not a finite number")
    return int(number) if number.is_integer() else number


# ----------------------------------------------------------------------------------------- JSON
_UNQUOTED_SCORE = re.compile(r'("score"\s*:\s*)([^",}\n\]]+?)(\s*[,}\n])')


def find_json_object(text: str) -> dict:
    """The first JSON object embedded in ``text`` (prose around it is ignored)."""
    decoder = json.JSONDecoder()
    for candidate in (text, _UNQUOTED_SCORE.sub(lambda m: f'{m[1]}"{m[2].strip()}"{m[3]}', text)):
        for match in re.finditer(r"\{", candidate):
            try:
                obj, _ = decoder.raw_decode(candidate, match.start())
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return obj
    raise ParseError("no JSON object found in the answer")


def get_field(obj: dict, key: str) -> Any:
    """``obj``'s field ``key`` (its name matched case- and space-insensitively); a :class:`ParseError` without it."""
    for k, v in obj.items():
        if isinstance(k, str) and k.strip().lower() == key:
            return v
    raise ParseError(f"JSON answer has no {key!r} field")


def _level(value: Any) -> str:
    if not isinstance(value, str) or value.strip().lower() not in _LEVELS:
        raise ParseError(f"level {value!r} is not one of {', '.join(BLOOM_LEVELS)}")
    return _LEVELS[value.strip().lower()]


def reasoning_field(obj: dict) -> str:
    """``obj``'s ``reasoning`` field as text (``""`` without one: the reasoning is never required)."""
    try:
        value = get_field(obj, "reasoning")
    except ParseError:
        return ""
    return value.strip() if isinstance(value, str) else json.dumps(value)


def parse_bloom(text: str) -> dict:
    """``{"level", "score", "reasoning"}`` with the score (int, or float if fractional) inside the
    level's band ``[lo, hi]``."""
    obj = find_json_object(strip_noise(text))
    level = _level(get_field(obj, "level"))
    score = eval_score(get_field(obj, "score"))
    lo, hi = BLOOM_BANDS[level]
    if not lo <= score <= hi:
        raise ParseError(f"score {score} is outside the {level} band {lo}-{hi}")
    return {"level": level, "score": score, "reasoning": reasoning_field(obj)}


def parse_bloom_level(text: str) -> dict:
    """``{"level", "reasoning"}`` from a JSON object, or a bare level name as the whole answer."""
    clean = strip_noise(text)
    bare = clean.strip(" \t\n.\"'*`")
    if bare.lower() in _LEVELS:
        return {"level": _LEVELS[bare.lower()], "reasoning": ""}
    obj = find_json_object(clean)
    return {"level": _level(get_field(obj, "level")), "reasoning": reasoning_field(obj)}


# ---------------------------------------------------------------------------------- disciplines
_LABEL = re.compile(r"^\s*(academic\s+)?disciplines?\s*:\s*", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•]+|\d+[.)])\s*")
_NON_WORD = re.compile(r"[^0-9a-z]+")


def to_snake_case(name: str) -> str:
    """``"Computer Science"`` / ``"computer-science"`` → ``"computer_science"`` ("" if nothing left)."""
    name = _BULLET.sub("", name.strip())
    return _NON_WORD.sub("_", name.lower()).strip("_")


def parse_disciplines(text: str) -> list[str]:
    """Comma/newline-separated disciplines → de-duplicated ``lower_snake_case`` list, in order."""
    clean = strip_noise(text)
    items = re.split(r"[,;\n]", _LABEL.sub("", clean))
    if clean.startswith("["):
        with contextlib.suppress(json.JSONDecodeError):
            loaded = json.loads(clean)
            if isinstance(loaded, list) and all(isinstance(x, str) for x in loaded):
                items = loaded
    out: list[str] = []
    for item in items:
        item = _LABEL.sub("", _BULLET.sub("", item)).strip()
        key = to_snake_case(item)
        if not key:
            continue
        if len(key.split("_")) > MAX_DISCIPLINE_WORDS:
            raise ParseError(f"{item[:60]!r} is a sentence, not a discipline name")
        if key not in out:
            out.append(key)
    if not out:
        raise ParseError("no discipline found in the answer")
    return out


def parse_description(text: str) -> str:
    """A non-empty description (reasoning blocks and fences removed, whitespace collapsed)."""
    clean = " ".join(strip_noise(text).split())
    if not clean:
        raise ParseError("empty description")
    return clean


# ------------------------------------------------------------------------------------ AlpaGasus
ALPAGASUS_MAX = 5.0
"""AlpaGasus rates on a 0–5 scale."""

_RATING_LABEL = re.compile(r"^[A-Za-z][A-Za-z ]{0,30}?\s*[:=\-]\s*")
_RATING = re.compile(
    r"^([+-]?\d+(?:\.\d+)?|[+-]?\.\d+)\s*(?:(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?\s*[.!]?$", re.IGNORECASE
)


def parse_alpagasus(text: str) -> dict:
    """``{"score": float in [0, 5], "reason": str}`` from an AlpaGasus rating (see module doc)."""
    lines = [line.strip() for line in strip_noise(text).splitlines() if line.strip()]
    if not lines:
        raise ParseError("empty answer")
    first = lines[0].replace("*", "").replace("`", "").lstrip("#").strip()
    match = _RATING.match(first) or _RATING.match(_RATING_LABEL.sub("", first, count=1))
    if match is None:
        raise ParseError(f"first line {lines[0][:80]!r} is not a single score")
    if match[2] is not None and float(match[2]) != ALPAGASUS_MAX:
        raise ParseError(f"score {first!r} is not on the 0-5 scale")
    score = float(match[1])
    if not 0.0 <= score <= ALPAGASUS_MAX:
        raise ParseError(f"score {score:g} is outside 0-5")
    return {"score": score, "reason": " ".join(" ".join(lines[1:]).split())}


def parse_text(text: str) -> str:
    """A model's response to an evaluation prompt: the answer itself without complete ``<think>`` blocks,
    stripped; never fails on a string, since any text — even empty — is a response."""
    return _drop_think(text).strip()
