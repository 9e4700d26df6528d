"""The evaluation stage (the repository's ``eval/``): the ``eval`` stage (:mod:`thtb.eval.stage`) — MMLU-Pro
through lm-eval (local parquet task, TIGER's prompt or lm-eval's built-in), the pairwise win rate with an LLM judge,
a user-supplied multiple-choice exam, the sanity check — and the paper tables (:mod:`thtb.eval.tables`, the
``tables`` stage). Task YAMLs live in ``tasks/`` and ship inside this package; see ``eval/README.md``."""

from thtb.eval.exam import ExamFormatError, load_exam, run_exam
from thtb.eval.mmlu_pro import CATEGORIES as MMLU_PRO_CATEGORIES
from thtb.eval.mmlu_pro import run_mmlu_pro

__all__ = ["MMLU_PRO_CATEGORIES", "ExamFormatError", "load_exam", "run_exam", "run_mmlu_pro"]
