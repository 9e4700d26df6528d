"""Hooks of the ``thtb_mmlu_pro_tiger`` tasks: MMLU-Pro with TIGER-AI-Lab's ``evaluate_from_api.py`` prompt.

The whole user message (instruction, shots, question) is built once per question when the data is loaded
(:func:`thtb.eval.mmlu_pro.load_tiger_dataset`, column ``tiger_prompt``) and returned as the task's context.
lm-eval's task metadata gives the number of shots (``mmlu_pro_fewshot``) and the data folder
(``mmlu_pro_data_dir``; without it, and without ``$THTB_MMLU_PRO_DIR``, ``TIGER-Lab/MMLU-Pro`` from the hub).
"""

# lm-eval's per-category document filters of its built-in mmlu_pro task (``process_docs: !function
# utils.process_<category>`` in the task YAMLs)
from lm_eval.tasks.mmlu_pro.utils import (  # noqa: F401
    process_biology, process_business, process_chemistry, process_computer_science, process_economics,
    process_engineering, process_health, process_history, process_law, process_math, process_other,
    process_philosophy, process_physics, process_psychology,
)


def load_dataset(**metadata):
    """``custom_dataset`` hook: ``{"test": …}`` with the ``tiger_prompt`` column."""
    from thtb.eval.mmlu_pro import FEWSHOT_KEY, load_tiger_dataset

    return load_tiger_dataset(metadata.get("mmlu_pro_data_dir"), int(metadata.get(FEWSHOT_KEY, 5)))


def doc_to_text(doc):
    return doc["tiger_prompt"]
