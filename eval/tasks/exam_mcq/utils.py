"""Hooks of the ``thtb_exam_mcq`` task; the logic (loading, validation, prompt, letter extraction) lives in
:mod:`thtb.eval.exam` so it is importable and unit-tested without lm-eval.

Run through :func:`thtb.eval.exam.run_exam`, or the lm-eval CLI::

    lm_eval --include_path eval/tasks/exam_mcq --tasks thtb_exam_mcq --apply_chat_template \
        --metadata '{"exam_path": "/data/tcm_exam.jsonl", "prompt_language": "auto"}' ...
"""

from thtb.eval.exam import letters_filter, load_exam_dataset

__all__ = ["letters_filter", "load_exam_dataset"]
