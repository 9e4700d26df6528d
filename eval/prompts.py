"""The evaluation's prompts and their parsers: AlpacaEval-style pairwise verdicts and a model's own responses.

They run on the same judge backends as the selection's prompts (:class:`~thtb.judge.prompts.PromptTemplate`, the
request cache, the strict-parser contract of :mod:`thtb.judge.parsers`); what they ask and how an answer is read is
evaluation policy, kept here beside the protocol that uses them (:mod:`thtb.eval.pairwise`).

Templates (all decode greedily, ``temperature = 0``, so a cached answer is what a rerun would get)
    ``pairwise_forced`` (:data:`PAIRWISE_FORCED`, the ``eval=paper`` default): an instruction and two outputs shown
    as (a) and (b); the verdict ``Output (a)`` or ``Output (b)`` on the first line — no tie option (the paper's
    integer win rates imply ties could not happen) — and a one-sentence reason on the next (AlpacaEval's classic
    answer form, which small judges follow too). ``pairwise`` (:data:`PAIRWISE`): the same with a tie option
    (system and user message ask for the same plain-text answer; version 2's system message asked for JSON).
    ``respond`` (:data:`RESPOND`): the instruction as the only user turn, a model's own response (free text,
    :func:`~thtb.judge.parsers.parse_text`).

Parsing a verdict (:func:`parse_pairwise`)
    ``{"winner": "a" | "b" | "tie", "reasoning": str}`` from the first line: a bare verdict (``Output (a)``,
    ``(b)``, ``A``, ``Tie``), or a verdict sentence that starts with it (``Output (a) is better.``,
    ``Output (b) is clearly the better one``); the following lines are the reasoning. A JSON object with a
    ``winner`` field is accepted too. Anything else — prose naming no verdict ("The output is better."),
    a first line naming both outputs as better — is a :class:`ParseError`. :func:`parse_pairwise_forced` (the
    forced-choice template) reads the same way but a ``Tie`` verdict is a :class:`ParseError` too (re-asked with the
    follow-up, then counted as a failure — never a verdict).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial
from types import MappingProxyType
from typing import Any

from thtb.judge.parsers import ParseError, find_json_object, get_field, parse_text, reasoning_field, strip_noise
from thtb.judge.prompts import Messages, PromptTemplate

_VERDICT = re.compile(r"^\W*(?:output|response|assistant)?\s*\(?\s*([ab]|tie)\s*\)?\W*$", re.IGNORECASE)
_VERDICT_SENTENCE = re.compile(
    r"^\W*(?:output|response|assistant)\s*\(?\s*([ab])\s*\)?\s+is\s+(?:\w+\s+){0,2}better\b", re.IGNORECASE
)
_BOTH = re.compile(r"(?:output|response)\s*\(?\s*([ab])\s*\)?", re.IGNORECASE)


def _verdict(value: Any) -> str:
    if isinstance(value, str):
        match = _VERDICT.match(value.strip())
        if match:
            return match[1].lower()
    raise ParseError(f"winner {value!r} is not one of a, b, tie")


def parse_pairwise(text: str) -> dict:
    """``{"winner": "a"|"b"|"tie", "reasoning": str}`` from a pairwise comparison (see module doc)."""
    clean = strip_noise(text).strip()
    if not clean:
        raise ParseError("empty answer")
    if clean.startswith("{"):
        obj = find_json_object(clean)
        return {"winner": _verdict(get_field(obj, "winner")), "reasoning": reasoning_field(obj)}
    first, _, rest = clean.partition("\n")
    first = first.replace("*", "").strip()
    reasoning = " ".join(rest.split())
    if _VERDICT.match(first):
        return {"winner": _verdict(first), "reasoning": reasoning}
    sentence = _VERDICT_SENTENCE.match(first)
    if sentence:
        named = {m.lower() for m in _BOTH.findall(first.split(".")[0])}
        if len(named) > 1 and "than" not in first.lower():  # "Output (a) is better and output (b) …"
            raise ParseError(f"first line {first[:80]!r} names both outputs")
        return {"winner": sentence[1].lower(), "reasoning": " ".join(f"{first} {reasoning}".split())}
    raise ParseError(f"first line {first[:80]!r} is not a verdict (Output (a), Output (b) or Tie)")


def parse_pairwise_forced(text: str) -> dict:
    """``{"winner": "a"|"b", "reasoning": str}``: :func:`parse_pairwise` without the tie (a ``Tie`` verdict is a
    :class:`ParseError`: the forced-choice template offers no tie)."""
    value = parse_pairwise(text)
    if value["winner"] == "tie":
        raise ParseError("a tie is not an allowed verdict: choose Output (a) or Output (b)")
    return value


# ---------------------------------------------------------------------------------- pairwise
_PAIRWISE_ROLE = (
    "You are a careful, impartial judge of AI assistants. You compare two outputs to the same instruction "
    "and decide which one a thoughtful human would prefer: the one that follows the instruction better and "
    "is more helpful, accurate, complete and clear. Length is not a merit in itself; do not let the order in "
    "which the outputs are shown influence you."
)
_PAIRWISE_SYSTEM = (
    f"{_PAIRWISE_ROLE} Answer in plain text: your verdict alone on the first line (Output (a), Output (b) or "
    "Tie), then one short sentence saying why on the second line."
)
_PAIRWISE_FORCED_SYSTEM = (
    f"{_PAIRWISE_ROLE} Answer in plain text: your verdict alone on the first line (Output (a) or Output (b); "
    "there is no tie, so when the outputs are close, choose the one you prefer), then one short sentence saying "
    "why on the second line."
)


def _pairwise_messages(system: str, ask: str, item: Mapping[str, Any]) -> Messages:
    """The system message, then the instruction and both outputs followed by ``ask``."""
    user = (f"## Instruction\n{item['instruction']}\n\n## Output (a)\n{item['output_a']}\n\n"
            f"## Output (b)\n{item['output_b']}\n\n{ask}")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


_PAIRWISE_FIELDS = {"fields": ("instruction", "output_a", "output_b"),
                    "params": MappingProxyType({"temperature": 0.0, "max_tokens": 96})}

PAIRWISE = PromptTemplate(
    name="pairwise", version="3", parser=parse_pairwise, **_PAIRWISE_FIELDS,
    build=partial(_pairwise_messages, _PAIRWISE_SYSTEM, 'Which output is better? On the first line write only "Output '
                  '(a)" or "Output (b)" — or "Tie" if they are equally good (or equally bad). On the second line, give '
                  "one short sentence saying why."),
    followup=("Your answer could not be used: {error}. Answer with exactly \"Output (a)\", \"Output (b)\" or "
              "\"Tie\" on the first line. No other text on that line."),
    choices=("Output (a)", "Output (b)", "Tie"),
)
"""AlpacaEval-style pairwise comparison of two outputs to one instruction, ties allowed (wording ours)."""

PAIRWISE_FORCED = PromptTemplate(
    name="pairwise_forced", version="1", parser=parse_pairwise_forced, **_PAIRWISE_FIELDS,
    build=partial(_pairwise_messages, _PAIRWISE_FORCED_SYSTEM, 'Which output is better? On the first line write only '
                  '"Output (a)" or "Output (b)" — you must choose one, even if they are very similar (a tie is not an '
                  "answer). On the second line, give one short sentence saying why."),
    followup=("Your answer could not be used: {error}. Answer with exactly \"Output (a)\" or \"Output (b)\" on the "
              "first line — a tie is not allowed, choose the better one. No other text on that line."),
    choices=("Output (a)", "Output (b)"),
)
"""AlpacaEval-style forced choice between two outputs (no tie option; the ``eval=paper`` default)."""

PAIRWISE_TEMPLATES: Mapping[str, PromptTemplate] = MappingProxyType({"forced": PAIRWISE_FORCED, "with_tie": PAIRWISE})
"""The pairwise templates by their ``eval.pairwise.template`` config value."""


def _respond_messages(item: Mapping[str, Any]) -> Messages:
    return [{"role": "user", "content": str(item["instruction"])}]


RESPOND = PromptTemplate(name="respond", version="1", build=_respond_messages, parser=parse_text,
                         fields=("instruction",), params=MappingProxyType({"temperature": 0.0, "max_tokens": 1024}),
                         followup="{error}")
"""A model's own greedy response to an evaluation prompt (user turn only, no system prompt); used to
generate — and cache — the outputs that the pairwise judge compares."""
