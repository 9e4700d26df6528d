"""Benchmark evaluation through lm-eval: MMLU-Pro (local parquet task or lm-eval's built-in) and a user-supplied
multiple-choice exam. Task YAMLs live in ``eval/tasks/``; see ``eval/README.md``."""

from thtb.evaluation.exam import ExamFormatError, load_exam, run_exam
from thtb.evaluation.mmlu_pro import CATEGORIES as MMLU_PRO_CATEGORIES
from thtb.evaluation.mmlu_pro import run_mmlu_pro

__all__ = ["MMLU_PRO_CATEGORIES", "ExamFormatError", "load_exam", "run_exam", "run_mmlu_pro"]
