"""MMLU-Pro prompt formats.

``lm_eval``
    lm-eval's built-in ``mmlu_pro`` task (v3.1): a description line, the shots as ``Question:\\n…\\nOptions:\\n…``
    blocks, 2,048 new tokens, stop at ``Question:`` (``eval/tasks/mmlu_pro_local/``).
``tiger_api``
    TIGER-AI-Lab's ``evaluate_from_api.py`` (the MMLU-Pro authors' script for served models, which the THTB
    authors point to): ONE user message holding their instruction line, the ``k`` validation shots of the
    question's category and the question, each laid out by their ``format_example``, with ``"N/A"`` options
    dropped (their ``preprocess``); sent through the model's chat template; 4,000 new tokens, greedy, no stop
    string (``eval/tasks/mmlu_pro_tiger/``). The functions below produce their messages character for character
    (``tests/test_mmlu_pro_tiger.py`` compares the messages with their own builder on every question).

    Note: their instruction line is the one hard-coded in ``evaluate_from_api.py`` ("… output the answer in the
    format of "The answer is (X)" at the end."), not ``cot_prompt_lib/initial_prompt.txt`` ("… finish your
    answer with "the answer is (X)" …"), which only their vLLM script ``evaluate_from_local.py`` reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PROMPT_FORMATS = ("lm_eval", "tiger_api")
DEFAULT_MAX_GEN_TOKS = {"lm_eval": 2048, "tiger_api": 4000}

TIGER_API_INSTRUCTION = (
    "The following are multiple choice questions (with answers) about {}. Think step by"
    " step and then output the answer in the format of \"The answer is (X)\" at the end.\n\n"
)
CHOICE_MAP = "ABCDEFGHIJ"


def drop_na(options: Iterable[str]) -> list[str]:
    """TIGER's ``preprocess``: the options other than the literal ``"N/A"`` padding, in order."""
    return [opt for opt in options if opt != "N/A"]


def tiger_format_example(question: str, options: Sequence[str], cot_content: str = "") -> str:
    """One example in TIGER's layout: ``Question: …\nOptions: A. …\nB. …\n`` then ``Answer: `` and the chain
    of thought without its leading ``A: `` (``Let's think step by step.`` for the question being asked), then a
    blank line — an answer left empty after the ``A: `` is cut ends at ``Answer: `` with no blank line.
    (Output identical to their ``format_example``; ``tests/test_mmlu_pro_tiger.py`` checks every question.)"""
    answer = (cot_content or "Let's think step by step.").removeprefix("A: ")
    listed = "".join(f"{letter}. {option}\n" for letter, option in zip(CHOICE_MAP, options, strict=False))
    return f"Question: {question}\nOptions: {listed}Answer: " + (f"{answer}\n\n" if answer else "")


def tiger_api_message(doc: Mapping[str, Any], shots: Sequence[Mapping[str, Any]]) -> str:
    """The user message TIGER's ``single_request`` sends for ``doc`` (``instruction + inputs``): the instruction
    line for the question's category, the shots (their ``cot_content`` included) and the question, "N/A"
    options dropped everywhere."""
    prompt = TIGER_API_INSTRUCTION.format(doc["category"])
    for shot in shots:
        prompt += tiger_format_example(shot["question"], drop_na(shot["options"]), shot["cot_content"])
    return prompt + tiger_format_example(doc["question"], drop_na(doc["options"]))


def shots_by_category(validation: Iterable[Mapping[str, Any]], k: int) -> dict[str, list[dict[str, Any]]]:
    """The first ``k`` validation questions of each category, in file order (TIGER uses all five)."""
    if not 0 <= int(k) <= 5:
        raise ValueError(f"the number of shots must be between 0 and 5, got {k}")
    out: dict[str, list[dict[str, Any]]] = {}
    for row in validation:
        bucket = out.setdefault(row["category"], [])
        if len(bucket) < int(k):
            bucket.append({key: row[key] for key in ("question", "options", "cot_content")})
    return out


CATEGORIES = ("biology", "business", "chemistry", "computer science", "economics", "engineering", "health",
              "history", "law", "math", "other", "philosophy", "physics", "psychology")
"""MMLU-Pro's 14 categories."""

