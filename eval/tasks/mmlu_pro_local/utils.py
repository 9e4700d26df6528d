"""Helpers for the local MMLU-Pro task (``thtb_mmlu_pro``), read from two parquet files on disk.

The prompt functions are a verbatim copy of lm-eval 0.4.13's built-in ``mmlu_pro`` task (task version 3.1,
``lm_eval/tasks/mmlu_pro/utils.py``) so that offline and hub runs give the same number on the same model;
``tests/test_eval_mmlu_pro.py`` renders prompts with both tasks and compares them byte for byte.

The data folder is injected at run time through lm-eval's task metadata (``custom_dataset`` receives it)::

    TaskManager(include_path="eval/tasks/mmlu_pro_local", metadata={"mmlu_pro_data_dir": "/data/mmlu_pro"})
    lm_eval --include_path eval/tasks/mmlu_pro_local --tasks thtb_mmlu_pro \
        --metadata '{"mmlu_pro_data_dir": "/data/mmlu_pro"}' ...

or, failing that, the ``THTB_MMLU_PRO_DIR`` environment variable. The folder holds ``test.parquet`` and
``validation.parquet`` (the hub's ``TIGER-Lab/MMLU-Pro`` splits).
"""

from functools import partial

from thtb.eval.mmlu_pro_prompts import category_filters

choices = ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J"]


def format_cot_example(example, including_answer=True):
    prompt = "Question:\n"
    question: str = example["question"]
    options: list[str] = example["options"]
    prompt += question + "\n"
    prompt += "Options:\n"

    for i, opt in enumerate(options):
        if i >= len(choices):
            break
        prompt += f"{choices[i]}. {opt.strip()}\n"

    if including_answer:
        cot_content = example["cot_content"].replace(
            "A: Let's think step by step.", "Answer: Let's think step by step."
        )
        prompt += cot_content + "\n\n"
    else:
        prompt += "Answer: Let's think step by step."

    return prompt


def format_cot_target(example, including_answer=True):
    cot_content = example["cot_content"].replace("A: Let's think step by step. ", "")
    return cot_content


doc_to_text = partial(format_cot_example, including_answer=False)
fewshot_to_text = partial(format_cot_example, including_answer=False)
fewshot_to_target = partial(format_cot_target, including_answer=True)


# per-category document filters (``process_docs: !function utils.process_<category>`` in the task YAMLs)
globals().update(category_filters())


def load_dataset(**metadata):
    """``custom_dataset`` hook: the two parquet files as a ``DatasetDict`` with ``test`` and ``validation``.

    lm-eval calls it with the task's metadata as keyword arguments; the folder comes from
    ``mmlu_pro_data_dir`` there, else from ``$THTB_MMLU_PRO_DIR``.
    """
    from thtb.eval.mmlu_pro import load_mmlu_pro_dataset, resolve_data_dir

    return load_mmlu_pro_dataset(resolve_data_dir(metadata.get("mmlu_pro_data_dir")))
