"""Helpers for the ``thtb_mmlu_pro_tiger`` tasks: MMLU-Pro with TIGER-AI-Lab's ``evaluate_from_api.py`` prompt.

The whole user message (instruction, shots, question) is built once per question when the data is loaded
(:func:`thtb.eval.mmlu_pro.load_tiger_dataset`, column ``tiger_prompt``) and returned as the task's
context. The number of shots and the data folder come from lm-eval's task metadata::

    TaskManager(include_path="eval/tasks/mmlu_pro_tiger",
                metadata={"mmlu_pro_data_dir": "/data/mmlu_pro", "mmlu_pro_fewshot": 5})

A missing ``mmlu_pro_data_dir`` (and no ``$THTB_MMLU_PRO_DIR``) loads ``TIGER-Lab/MMLU-Pro`` from the hub.
"""

# lm-eval's per-category document filters of its built-in mmlu_pro task (``process_docs: !function
# utils.process_<category>`` in the task YAMLs)
from lm_eval.tasks.mmlu_pro.utils import (  # noqa: F401
    process_biology, process_business, process_chemistry, process_computer_science, process_economics,
    process_engineering, process_health, process_history, process_law, process_math, process_other,
    process_philosophy, process_physics, process_psychology,
)


def load_dataset(**metadata):
    """``custom_dataset`` hook: ``{"test": …}`` with the ``tiger_prompt`` column (see the module docstring)."""
    from thtb.eval.mmlu_pro import FEWSHOT_KEY, load_tiger_dataset

    return load_tiger_dataset(metadata.get("mmlu_pro_data_dir"), int(metadata.get(FEWSHOT_KEY, 5)))


def doc_to_text(doc):
    return doc["tiger_prompt"]

