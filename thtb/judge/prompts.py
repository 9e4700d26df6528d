"""Versioned prompt templates for the LLM judge of the selection (docs/METHOD.md "Stage 2 — intrinsic hardness");
the evaluation's own (pairwise verdicts, a model's responses) are in :mod:`thtb.eval.prompts`.

A :class:`PromptTemplate`'s name and version are part of every cache key: bump the version whenever the
wording, the decoding parameters or the parser change meaning.

Templates
---------
``bloom`` (:data:`BLOOM`, fidelity ``reference``)
    The judge sees the query **and** the response and returns
    ``{"level", "score" 1–21, "reasoning"}`` with the bands Remember 1–3, Understand 4–6,
    Apply 7–9, Analyze 10–12, Evaluate 13–15, Create 16–21 (written in the spirit of the
    authors' prompt; the wording is ours).
``bloom_level`` (:data:`BLOOM_LEVEL`, fidelity ``paper``)
    Same inputs, level only: ``{"level", "reasoning"}``.
``disciplines`` (:data:`DISCIPLINES`)
    The query **only**; a comma-separated list of ``lower_snake_case`` academic disciplines;
    temperature 0.
``discipline_description`` (:data:`DISCIPLINE_DESCRIPTION`)
    One call per unique discipline: a 3–5 sentence description (embedded for IC's distance term).
``alpagasus`` (:data:`ALPAGASUS`, the AlpaGasus baseline)
    The rating prompt of Chen et al. (2024), "AlpaGasus: Training a Better Alpaca with Fewer
    Data": the query (instruction and input, as the data layer joined them) and the response;
    an accuracy score 0–5 on the first line, then an explanation (:func:`~thtb.judge.parsers.parse_alpagasus`).
All templates decode greedily (``temperature = 0``) so a cached answer is what a rerun would get.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any

from thtb.judge import parsers

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class PromptTemplate:
    """A versioned judge prompt.

    Attributes:
        name: template id (cache key part).
        version: bump on any change of wording, parameters or parser semantics.
        build: ``build(item) -> messages`` (``item`` a mapping of the template's fields).
        params: decoding parameters passed to ``chat.completions.create``.
        parser: ``parser(raw_text) -> value``; raises :class:`~thtb.judge.parsers.ParseError`.
        followup: the stricter instruction appended after an unparsable answer (``{error}`` is
            replaced by the parse error).
        fields: the item keys ``build`` needs.
        json_schema: the JSON schema of a valid answer, for backends with guided decoding (vLLM);
            ``None`` for free-text answers.
        choices: the complete allowed answers of a closed question (a pairwise verdict); backends that can
            constrain to them do — transformers by comparing the choices' log-likelihoods, vLLM with
            choice-guided decoding — so a small judge yields a verdict on every item. ``None``: open answers.
    """

    name: str
    version: str
    build: Callable[[Mapping[str, Any]], Messages]
    parser: Callable[[str], Any]
    followup: str
    fields: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    json_schema: Mapping[str, Any] | None = None
    choices: tuple[str, ...] | None = None

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def messages(self, item: Mapping[str, Any]) -> Messages:
        missing = [f for f in self.fields if f not in item]
        if missing:
            raise KeyError(f"template {self.id} needs field(s) {missing}")
        return self.build(item)

    def followup_message(self, error: str) -> str:
        return self.followup.replace("{error}", error)


# ------------------------------------------------------------------------------------- Bloom
_BLOOM_LEVELS_TEXT = """Bloom's revised taxonomy orders the cognitive processes a task demands, from lowest to highest:
1. Remember - retrieve facts, terms, definitions or lists from memory (name, list, define, recall).
2. Understand - explain, summarise, paraphrase, classify or give examples of ideas (explain, describe, summarize, translate).
3. Apply - carry out a known procedure or method in a given situation (calculate, solve, convert, use, implement).
4. Analyze - break material into parts, find relationships, causes, structure or assumptions (compare, contrast, analyse, debug, infer).
5. Evaluate - judge or justify a decision against criteria or standards (assess, critique, recommend, argue, prioritise).
6. Create - put elements together into a new, original whole (design, compose, write a story or poem, plan, invent)."""

_BLOOM_SYSTEM = (
    "You are an expert in educational assessment. You classify instruction-following tasks by the "
    "highest level of Bloom's revised taxonomy that answering them well requires. Judge the task "
    "(the instruction together with the reference response that shows what a full answer involves), "
    "not the quality of the response. Always answer with a single JSON object and nothing else."
)

_BLOOM_SCORE_TEXT = """Then give a difficulty score from 1 to 21 inside the band of the chosen level:
- Remember: 1-3
- Understand: 4-6
- Apply: 7-9
- Analyze: 10-12
- Evaluate: 13-15
- Create: 16-21
Within a band, a higher score means the task is more demanding for that level (more steps, more
knowledge, more constraints, longer or more original output)."""


_LEVEL_SCHEMA = {"type": "string", "enum": ["Remember", "Understand", "Apply", "Analyze", "Evaluate", "Create"]}
_REASONING_SCHEMA = {"type": "string", "maxLength": 400}  # bounded: a guided answer closes its JSON within max_tokens
_BLOOM_SCHEMA = {  # one alternative per level, its score tied to the level's band (what parse_bloom accepts)
    "anyOf": [
        {"type": "object",
         "properties": {"level": {"const": level}, "score": {"type": "integer", "minimum": lo, "maximum": hi},
                        "reasoning": _REASONING_SCHEMA},
         "required": ["level", "score", "reasoning"], "additionalProperties": False}
        for level, (lo, hi) in parsers.BLOOM_BANDS.items()
    ]
}
_BLOOM_LEVEL_SCHEMA = {"type": "object", "properties": {"level": _LEVEL_SCHEMA, "reasoning": _REASONING_SCHEMA},
                       "required": ["level", "reasoning"]}


def _bloom_messages(item: Mapping[str, Any], score: bool = True) -> Messages:
    """The Bloom prompt; ``score=False``: the level-only one."""
    score_text = f"{_BLOOM_SCORE_TEXT}\n\n" if score else ""
    score_field = '"score": <integer in the level\'s band>, ' if score else ""
    user = (
        f"{_BLOOM_LEVELS_TEXT}\n\nDecide which level the following task requires.\n\n{score_text}"
        f"### Instruction\n{item['query']}\n\n### Response\n{item['response']}\n\n"
        'Answer with exactly one JSON object: {"level": "<Remember|Understand|Apply|Analyze|Evaluate|Create>", '
        f'{score_field}"reasoning": "<one or two sentences>"}}'
    )
    return [{"role": "system", "content": _BLOOM_SYSTEM}, {"role": "user", "content": user}]


BLOOM = PromptTemplate(
    name="bloom",
    version="1",
    build=_bloom_messages,
    parser=parsers.parse_bloom,
    fields=("query", "response"),
    params=MappingProxyType({"temperature": 0.0, "max_tokens": 512}),
    json_schema=_BLOOM_SCHEMA,
    followup=(
        "Your answer could not be used: {error}. Answer only with one JSON object "
        '{"level": ..., "score": ..., "reasoning": ...} where level is one of Remember, Understand, '
        "Apply, Analyze, Evaluate, Create and score is a single integer inside that level's band "
        "(Remember 1-3, Understand 4-6, Apply 7-9, Analyze 10-12, Evaluate 13-15, Create 16-21). No other text."
    ),
)

BLOOM_LEVEL = PromptTemplate(
    name="bloom_level",
    version="1",
    build=partial(_bloom_messages, score=False),
    parser=parsers.parse_bloom_level,
    fields=("query", "response"),
    params=MappingProxyType({"temperature": 0.0, "max_tokens": 384}),
    json_schema=_BLOOM_LEVEL_SCHEMA,
    followup=(
        "Your answer could not be used: {error}. Answer only with one JSON object "
        '{"level": ..., "reasoning": ...} where level is one of Remember, Understand, Apply, Analyze, '
        "Evaluate, Create. No other text."
    ),
)

# ------------------------------------------------------------------------------- disciplines
_DISCIPLINE_SYSTEM = (
    "You are a university librarian who knows the classification of academic disciplines. "
    "You name the academic disciplines whose knowledge is needed to answer a question."
)


def _discipline_messages(item: Mapping[str, Any]) -> Messages:
    user = (
        "List the academic disciplines (fields of study such as physics, molecular_biology, "
        "computer_science, economics, linguistics, law, music_theory) whose knowledge is needed to "
        "answer the following question or instruction well. Name each discipline once, most relevant "
        "first; list several only when the question genuinely draws on several fields.\n\n"
        f"### Question\n{item['query']}\n\n"
        "Answer only with a comma-separated list of discipline names in lower_snake_case, "
        "for example: biology, chemistry"
    )
    return [{"role": "system", "content": _DISCIPLINE_SYSTEM}, {"role": "user", "content": user}]


_DISCIPLINES_SCHEMA = {  # a JSON list of names: parse_disciplines reads it like the comma-separated answer
    "type": "array",
    "items": {"type": "string", "pattern": f"^[a-z]+(_[a-z]+){{0,{parsers.MAX_DISCIPLINE_WORDS - 1}}}$"},  # a name
    "minItems": 1, "maxItems": 6,
}

DISCIPLINES = PromptTemplate(
    name="disciplines",
    version="1",
    build=_discipline_messages,
    parser=parsers.parse_disciplines,
    fields=("query",),
    params=MappingProxyType({"temperature": 0.0, "max_tokens": 128}),
    json_schema=_DISCIPLINES_SCHEMA,
    followup=(
        "Your answer could not be used: {error}. Answer only with a comma-separated list of academic "
        "discipline names in lower_snake_case (for example: physics, computer_science). No other text."
    ),
)


def _description_messages(item: Mapping[str, Any]) -> Messages:
    name = str(item["discipline"]).replace("_", " ")
    user = (
        f"Describe the academic discipline \"{name}\" in 3 to 5 sentences: what it studies, its central "
        "concepts and methods, and the kinds of questions it answers. Write plain prose in one paragraph, "
        "without a title, list or markdown."
    )
    return [{"role": "system", "content": _DISCIPLINE_SYSTEM}, {"role": "user", "content": user}]


DISCIPLINE_DESCRIPTION = PromptTemplate(
    name="discipline_description",
    version="1",
    build=_description_messages,
    parser=parsers.parse_description,
    fields=("discipline",),
    params=MappingProxyType({"temperature": 0.0, "max_tokens": 320}),
    followup=(
        "Your answer could not be used: {error}. Answer only with a 3 to 5 sentence plain-prose "
        "description of the discipline. No other text."
    ),
)

# --------------------------------------------------------------------------------- AlpaGasus
_ALPAGASUS_SYSTEM = (
    "We would like to request your feedback on the performance of AI assistant in response to the "
    "instruction and the given input displayed following."
)

_ALPAGASUS_RATE = (
    "Please rate according to the accuracy of the response to the instruction and the input. Each "
    "assistant receives a score on a scale of 0 to 5, where a higher score indicates higher level of the "
    "accuracy. Please first output a single line containing the value indicating the scores. In the "
    "subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any "
    "potential bias."
)


def _alpagasus_messages(item: Mapping[str, Any]) -> Messages:
    user = f"### Instruction:\n{item['query']}\n\n### Response:\n{item['response']}\n\n{_ALPAGASUS_RATE}"
    return [{"role": "system", "content": _ALPAGASUS_SYSTEM}, {"role": "user", "content": user}]


ALPAGASUS = PromptTemplate(
    name="alpagasus",
    version="1",
    build=_alpagasus_messages,
    parser=parsers.parse_alpagasus,
    fields=("query", "response"),
    params=MappingProxyType({"temperature": 0.0, "max_tokens": 512}),
    followup=(
        "Your answer could not be used: {error}. Output on the first line only the score, a single "
        "number from 0 to 5 (for example: 4.5). On the next line, give your explanation."
    ),
)

TEMPLATES: Mapping[str, PromptTemplate] = MappingProxyType(
    {t.name: t for t in (BLOOM, BLOOM_LEVEL, DISCIPLINES, DISCIPLINE_DESCRIPTION, ALPAGASUS)}
)
