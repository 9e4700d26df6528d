"""Hooks of the local MMLU-Pro task (``thtb_mmlu_pro``), read from ``test.parquet`` and ``validation.parquet`` in
a folder given as lm-eval metadata ``mmlu_pro_data_dir`` (or ``$THTB_MMLU_PRO_DIR``); see ``eval/README.md``.

The prompt functions are lm-eval's own, imported from its built-in ``mmlu_pro`` task (lm-eval 0.4.13, task
version 3.1, ``lm_eval/tasks/mmlu_pro/utils.py``) so that offline and hub runs give the same number on the same
model; ``tests/test_eval_mmlu_pro.py`` renders prompts with both tasks and compares them byte for byte.
"""

# lm-eval's own functions of its built-in ``mmlu_pro`` task (the prompt, the few-shot target and the per-category
# document filters ``process_<category>`` the task YAMLs name), used unchanged
from lm_eval.tasks.mmlu_pro.utils import (  # noqa: F401
    doc_to_text, fewshot_to_target, fewshot_to_text, process_biology, process_business, process_chemistry,
    process_computer_science, process_economics, process_engineering, process_health, process_history, process_law,
    process_math, process_other, process_philosophy, process_physics, process_psychology,
)


def load_dataset(**metadata):
    """``custom_dataset`` hook (lm-eval passes the task's metadata): the two parquet files as a ``DatasetDict``."""
    from thtb.eval.mmlu_pro import load_mmlu_pro_dataset, resolve_data_dir

    return load_mmlu_pro_dataset(resolve_data_dir(metadata.get("mmlu_pro_data_dir")))
