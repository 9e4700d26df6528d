"""LLM-judge backends of the stage-2 scorer interfaces (docs/METHOD.md "Stage 2 — intrinsic hardness").

:class:`JudgeBloomScorer` (:class:`~thtb.scorers.base.BloomScorer`)
    ``fidelity="reference"``: the :data:`~thtb.judge.prompts.BLOOM` prompt (query and response);
    ``bloom_score`` is the judge's 1–21 score inside its level's band, an ``int`` or, when the judge
    wrote a fractional score (``7.5``), a ``float`` as the authors kept it (``Bloom = (score − 1) / 20``
    downstream; :func:`~thtb.judge.parsers.eval_score`).
    ``fidelity="paper"``: the level-only :data:`~thtb.judge.prompts.BLOOM_LEVEL` prompt; as the
    contract needs a score 1–21, ``bloom_score`` is the **lower bound** of the level's band
    (Remember 1, Understand 4, Apply 7, Analyze 10, Evaluate 13, Create 16). It carries no
    information beyond the level: paper mode normalises by the level index
    (``(i − min) / (max − min)``, :func:`thtb.maths.bloom_normalized`), not by this score.
    ``bloom_reason`` is the judge's reasoning.

:class:`JudgeDisciplineTagger` (:class:`~thtb.scorers.base.DisciplineTagger`)
    :meth:`~JudgeDisciplineTagger.tag` asks the :data:`~thtb.judge.prompts.DISCIPLINES` prompt
    with the query only; :meth:`~JudgeDisciplineTagger.describe` makes one
    :data:`~thtb.judge.prompts.DISCIPLINE_DESCRIPTION` call per unique discipline (through the
    cache, so across runs each discipline is described once) and raises
    :class:`~thtb.scorers.base.DescriptionError` (with the descriptions it got) if any fails: the
    cascade then fails the samples tagged with an undescribed discipline, against the failure budget.

:class:`JudgeAlpaGasusScorer` (the AlpaGasus baseline, :mod:`thtb.methods.alpagasus`)
    :meth:`~JudgeAlpaGasusScorer.score` asks the :data:`~thtb.judge.prompts.ALPAGASUS` prompt with
    the query and the response: ``alpagasus_score`` (float, 0–5) and ``alpagasus_reason``.

Queries are sent as the data layer built them (docs/METHOD.md "Input text": the same query text everywhere), so
in ``reference`` fidelity the judge sees the authors' ``"\\nnan"`` placeholder for an empty Alpaca input, as their
pipeline did; ``strip_nan=True`` passes queries through :func:`~thtb.scorers.embedder.clean_query` instead. A
sample the judge could not score gets ``error`` set and ``None`` fields, never a default; an empty query is an
error without a call.

Every constructor takes ``judge`` as a judge backend or a mapping of OpenAIJudge's constructor arguments, and
accepts and ignores ``embedder=`` (the pipeline passes the shared embedder to every judge scorer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from thtb.judge.base import JudgeBackend
from thtb.judge.client import OpenAIJudge
from thtb.judge.prompts import ALPAGASUS, BLOOM, BLOOM_LEVEL, DISCIPLINE_DESCRIPTION, DISCIPLINES
from thtb.scorers.base import BLOOM_BANDS, BloomScorer, DescriptionError, DisciplineTagger, check_result
from thtb.scorers.embedder import clean_query

FIDELITIES = ("reference", "paper")


def _as_judge(judge: JudgeBackend | Mapping[str, Any]) -> JudgeBackend:
    if isinstance(judge, JudgeBackend):
        return judge
    if isinstance(judge, Mapping):
        return OpenAIJudge(**dict(judge))
    raise TypeError("judge must be a judge backend (OpenAIJudge, HFJudge, VLLMJudge) or a mapping of OpenAIJudge "
                    f"arguments, got {type(judge).__name__}")


def _query(text: Any, strip_nan: bool) -> str:
    text = "" if text is None else str(text)
    return clean_query(text) if strip_nan else text.strip()


class _JudgeBacked:
    """What every judge-backed scorer shares: the judge client, the ``strip_nan`` switch, and running one
    template over the non-empty queries."""

    def __init__(self, judge: JudgeBackend | Mapping[str, Any], strip_nan: bool = False,
                 embedder: Any = None) -> None:  # noqa: ARG002 - embedder accepted and ignored (pipeline convention)
        self.judge = _as_judge(judge)
        self.strip_nan = bool(strip_nan)

    def _run(self, template, queries: Sequence[str],
             responses: Sequence[str] | None = None) -> tuple[list[Any], list[str | None]]:
        """Run ``template`` on every non-empty query (with its response when given), in input order.

        Returns the parsed values (``None`` where the judge failed) and the errors; an empty query is
        the error ``"empty query"`` without a call.
        """
        if responses is not None and len(queries) != len(responses):
            raise ValueError(f"{len(queries)} queries but {len(responses)} responses")
        texts = [_query(q, self.strip_nan) for q in queries]
        values: list[Any] = [None] * len(texts)
        errors: list[str | None] = [None if t else "empty query" for t in texts]
        todo = [i for i, t in enumerate(texts) if t]
        items = [{"query": texts[i]} for i in todo]
        if responses is not None:
            for item, i in zip(items, todo, strict=True):
                item["response"] = "" if responses[i] is None else str(responses[i])
        for i, result in zip(todo, self.judge.run(template, items), strict=True):
            if result.error is None:
                values[i] = result.value
            errors[i] = result.error
        return values, errors


class JudgeBloomScorer(_JudgeBacked, BloomScorer):
    """Bloom level/score/reason from an LLM judge (see module doc)."""

    name = "judge_bloom"

    def __init__(self, judge: JudgeBackend | Mapping[str, Any], fidelity: str = "reference", strip_nan: bool = False,
                 embedder: Any = None) -> None:  # noqa: ARG002 - embedder accepted and ignored (pipeline convention)
        if fidelity not in FIDELITIES:
            raise ValueError(f"fidelity must be one of {FIDELITIES}, got {fidelity!r}")
        super().__init__(judge, strip_nan)
        self.fidelity = fidelity
        self.template = BLOOM if fidelity == "reference" else BLOOM_LEVEL

    def score(self, queries: Sequence[str], responses: Sequence[str]) -> pd.DataFrame:
        values, error = self._run(self.template, queries, responses)
        level = [v["level"] if v is not None else None for v in values]
        if self.fidelity == "reference":
            score = [v["score"] if v is not None else None for v in values]  # int, or float if fractional
        else:
            score = [BLOOM_BANDS[v["level"]][0] if v is not None else None for v in values]
        reason = [v.get("reasoning", "") if v is not None else None for v in values]
        frame = pd.DataFrame({"bloom_level": level, "bloom_score": score, "bloom_reason": reason, "error": error},
                             dtype=object)
        return check_result(frame, len(values), ("bloom_level", "bloom_score", "bloom_reason"), self.name)


class JudgeDisciplineTagger(_JudgeBacked, DisciplineTagger):
    """Academic disciplines of a query and their descriptions from an LLM judge (see module doc)."""

    name = "judge_disciplines"

    def tag(self, queries: Sequence[str]) -> pd.DataFrame:
        values, error = self._run(DISCIPLINES, queries)
        disciplines = [list(v) if v is not None else None for v in values]
        frame = pd.DataFrame({"disciplines": disciplines, "error": error}, dtype=object)
        return check_result(frame, len(values), ("disciplines",), self.name)

    def describe(self, disciplines: Sequence[str]) -> dict[str, str]:
        names = list(dict.fromkeys(disciplines))
        results = self.judge.run(DISCIPLINE_DESCRIPTION, [{"discipline": d} for d in names])
        failed = {d: r.error for d, r in zip(names, results, strict=True) if r.error is not None}
        described = {d: r.value for d, r in zip(names, results, strict=True) if r.error is None}
        if failed:
            raise DescriptionError(failed, described)
        return described


class JudgeAlpaGasusScorer(_JudgeBacked):
    """AlpaGasus's 0–5 accuracy rating of each (query, response) pair from an LLM judge (see module doc)."""

    name = "judge_alpagasus"

    def score(self, queries: Sequence[str], responses: Sequence[str]) -> pd.DataFrame:
        values, error = self._run(ALPAGASUS, queries, responses)
        score = [float(v["score"]) if v is not None else float("nan") for v in values]
        reason = [v.get("reason", "") if v is not None else None for v in values]
        frame = pd.DataFrame({"alpagasus_score": score, "alpagasus_reason": reason, "error": error}, dtype=object)
        return check_result(frame.astype({"alpagasus_score": "float64"}), len(values),
                            ("alpagasus_score", "alpagasus_reason"), self.name)
