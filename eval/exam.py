"""A user-supplied multiple-choice exam (the paper's TCM experiment) as a local lm-eval generation task.

Why generation and not lm-eval's log-likelihood ``multiple_choice``: the exam mixes single-answer and
multiple-answer questions ("AC"), and log-likelihood ranking can only pick one option; the authors' own exam
rows (``thtb_released/*.jsonl``, the last 30) are chat prompts whose reference answer is the bare letter(s),
so the fine-tuned model is asked the same way and its letters are read back. One generate-until task covers
both types with one metric: exact match of the *set* of letters (order, case, separators ignored).

Exam file: ``.jsonl`` / ``.json`` (a list) / ``.csv`` / ``.xlsx`` (xlsx needs ``openpyxl``). Fields per row:

* ``question`` — text;
* options — ``options`` as a list (``["..", ".."]``), a dict letter → text (``{"A": "..", "B": ".."}``), or a
  JSON string of either (csv/xlsx); or columns ``A`` … ``J``;
* ``answer`` — one or more letters: ``"C"``, ``"AC"``, ``"A,C"``, ``["A", "C"]``;
* ``type`` (optional) — ``single`` / ``multiple`` (also 单选/多选); inferred from the number of answer letters;
* ``id`` (optional) — defaults to the row number.

Prompt: the authors' format (``prompt_language="zh"``: 这是一道单选题…单选题题目：…), or its English version
(``"en"``); ``"auto"`` picks zh when the question contains CJK characters. Applied through the model's chat
template by default (the models are chat-tuned on this format).
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from thtb.eval import harness
from thtb.io import read_jsonl

LETTERS = "ABCDEFGHIJ"
TASK = "thtb_exam_mcq"
EXAM_PATH_KEY = "exam_path"
LANGUAGE_KEY = "prompt_language"
INVALID = "[invalid]"
JSON_NAME = "exam.json"
SAMPLES_NAME = "exam_samples.jsonl"
_TYPE_ALIASES = {
    "single": "single", "single_choice": "single", "single-choice": "single", "单选": "single", "单选题": "single",
    "multiple": "multiple", "multi": "multiple", "multiple_choice": "multiple", "multiple-choice": "multiple",
    "多选": "multiple", "多选题": "multiple",
}
PROMPTS = {
    "zh": {
        "single": "这是一道单选题，请根据题目要求选择唯一正确答案，仅给出相应题目的正确选项即可。\n单选题题目：{question}\n{options}",
        "multiple": "这是一道多选题，请根据题目要求选择所有正确答案，仅给出相应题目的正确选项即可。\n多选题题目：{question}\n{options}",
    },
    "en": {
        "single": "This is a single-answer multiple-choice question. Choose the one correct option and reply with "
        "its letter only.\nQuestion: {question}\n{options}",
        "multiple": "This is a multiple-answer multiple-choice question. Choose all correct options and reply with "
        "their letters only.\nQuestion: {question}\n{options}",
    },
}
_CJK = re.compile(r"[\u4e00-\u9fff]")


class ExamFormatError(ValueError):
    """An exam file that cannot be used; the message names the file, the row and the field."""


# ----------------------------------------------------------------------------------------------- loading
def _read_rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl(path, ExamFormatError)
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ExamFormatError(f"{path}: expected a JSON list of questions, got {type(data).__name__}")
        return data
    if suffix == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return [dict(r) for r in csv.DictReader(fh)]
    if suffix in (".xlsx", ".xlsm"):
        try:
            import openpyxl  # noqa: F401
        except ImportError:
            raise ImportError(f"{path}: reading .xlsx exams needs the 'openpyxl' package, which is not installed; "
                              "install it (pip install openpyxl) or save the sheet as .csv") from None
        import pandas as pd

        return pd.read_excel(path, dtype=str).fillna("").to_dict(orient="records")
    raise ExamFormatError(f"{path}: unsupported exam format {suffix!r} (use .jsonl, .json, .csv or .xlsx)")


def _blank(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or (isinstance(value, float) and value != value)


def _parse_options(row: Mapping[str, Any], where: str) -> list[str]:
    raw = row.get("options")
    if _blank(raw):
        cols = [row.get(letter) for letter in LETTERS]
        present = [i for i, v in enumerate(cols) if not _blank(v)]
        if not present:
            raise ExamFormatError(f"{where}: field 'options': missing (give 'options' or columns A, B, ...)")
        if present != list(range(len(present))):
            raise ExamFormatError(f"{where}: field 'options': option columns must be consecutive from A")
        return [str(cols[i]).strip() for i in present]
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise ExamFormatError(f"{where}: field 'options': a string must be a JSON list or object") from None
    if isinstance(raw, Mapping):
        by_letter = {str(k).strip().upper(): v for k, v in raw.items()}
        if sorted(by_letter) != list(LETTERS[: len(raw)]):  # a key repeated once normalised fails too
            raise ExamFormatError(f"{where}: field 'options': keys must be consecutive letters from A, got {list(raw)}")
        raw = [by_letter[letter] for letter in sorted(by_letter)]
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        raise ExamFormatError(f"{where}: field 'options': expected a list or a letter→text object")
    options = [str(o).strip() for o in raw]
    if not options:
        raise ExamFormatError(f"{where}: field 'options': empty")
    if len(options) > len(LETTERS):
        raise ExamFormatError(f"{where}: field 'options': at most {len(LETTERS)} options (A-J), got {len(options)}")
    if any(not o for o in options):
        raise ExamFormatError(f"{where}: field 'options': an option text is empty")
    return options


def _parse_answer(raw: Any, n_options: int, where: str) -> str:
    if _blank(raw):
        raise ExamFormatError(f"{where}: field 'answer': missing")
    text = "".join(str(x) for x in raw) if isinstance(raw, (list, tuple)) else str(raw)
    letters = re.sub(r"[\s,，、;；/|+和]", "", text).upper()
    if not letters or not letters.isalpha():
        raise ExamFormatError(f"{where}: field 'answer': {raw!r} is not one or more option letters like 'A' or 'AC'")
    valid = LETTERS[:n_options]
    bad = sorted({c for c in letters if c not in valid})
    if bad:
        raise ExamFormatError(f"{where}: field 'answer': letter(s) {', '.join(bad)} outside the options A-{valid[-1]}")
    if len(set(letters)) != len(letters):
        raise ExamFormatError(f"{where}: field 'answer': repeated letter in {raw!r}")
    return "".join(sorted(letters))


def load_exam(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read and validate an exam file; returns one normalised record per question:
    ``{id, row, question, options: [str], answer: "AC" (sorted letters), type: "single"|"multiple"}``.

    Raises:
        FileNotFoundError: no such file.
        ExamFormatError: a bad row (the message names the file, the 1-based row and the field).
        ImportError: an ``.xlsx`` file without ``openpyxl``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"exam file not found: {path}")
    rows = _read_rows(path)
    if not rows:
        raise ExamFormatError(f"{path}: no questions")
    records, seen = [], set()
    for i, row in enumerate(rows, 1):
        where = f"{path}: row {i}"
        if not isinstance(row, Mapping):
            raise ExamFormatError(f"{where}: expected an object with question/options/answer")
        question = row.get("question")
        if _blank(question):
            raise ExamFormatError(f"{where}: field 'question': missing")
        options = _parse_options(row, where)
        answer = _parse_answer(row.get("answer"), len(options), where)
        qtype = row.get("type")
        if _blank(qtype):
            qtype = "single" if len(answer) == 1 else "multiple"
        else:
            qtype = _TYPE_ALIASES.get(str(qtype).strip().lower())
            if qtype is None:
                raise ExamFormatError(f"{where}: field 'type': {row.get('type')!r} is not single or multiple")
            if qtype == "single" and len(answer) != 1:
                raise ExamFormatError(f"{where}: field 'answer': type is single but the answer is {answer!r}")
        qid = str(row["id"]) if not _blank(row.get("id")) else str(i)
        if qid in seen:
            raise ExamFormatError(f"{where}: field 'id': duplicate id {qid!r}")
        seen.add(qid)
        records.append({"id": qid, "row": i, "question": str(question).strip(), "options": options,
                        "answer": answer, "type": qtype})
    return records


# ----------------------------------------------------------------------------------------------- prompting
def render_prompt(record: Mapping[str, Any], language: str = "auto") -> str:
    """The question in the authors' exam format (zh) or its English version (en); ``auto`` = zh when the
    question or options contain CJK characters."""
    if language == "auto":
        text = record["question"] + "".join(record["options"])
        language = "zh" if _CJK.search(text) else "en"
    if language not in PROMPTS:
        raise ValueError(f"prompt_language must be 'auto', 'zh' or 'en', got {language!r}")
    options = "".join(f"{LETTERS[i]}. {opt}\n" for i, opt in enumerate(record["options"]))
    return PROMPTS[language][record["type"]].format(question=record["question"], options=options)


_EXPLICIT = re.compile(r"(?:(?i:answer)\s*(?:is|:)?|答案\s*(?:是|为)?\s*[:：]?|正确选项\s*(?:是|为)?\s*[:：]?)\s*"
                       r"[\(（\[]?\s*([A-J](?:[\s,，、;；和与及&/]*(?:and\s+)?[A-J])*)(?![A-Za-z])")
_BARE = re.compile(r"^[\s\(（\[\*]*([A-J](?:[\s,，、;；和与及&/]*(?:and\s+)?[A-J])*)[\s\)）\]\*\.。,，:：]*(?:$|\n)")
_LEADING = re.compile(r"^[\s\(（\[\*]*([A-J]+)(?=[\)）\]\*\.。,，:：、]|\s*$)")


def extract_letters(response: str, n_options: int) -> str:
    """The option letters a response gives, sorted and de-duplicated (``"AC"``), or ``"[invalid]"``.

    In order: drop a ``<think>…</think>`` block; an explicit "answer is (X)" / "Answer: A, C" / "答案：AC";
    a response that is just letters ("AC", "A, C", "(B)."); a leading run of letters followed by punctuation
    ("D. because…"; not by a space, so "A lot…" is no answer). Letters beyond the question's options make it a
    parse failure."""
    text = str(response or "")
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    text = text.strip()
    m = _EXPLICIT.search(text) or _BARE.match(text) or _LEADING.match(text)  # each group holds a letter
    letters = "".join(sorted(set(re.findall(r"[A-J]", m.group(1))))) if m else ""
    return letters if letters and all(c in LETTERS[:n_options] for c in letters) else INVALID


def load_exam_dataset(**metadata):
    """``custom_dataset`` hook of the ``thtb_exam_mcq`` task: the validated exam as a ``DatasetDict`` with one
    ``test`` split; each doc carries its rendered ``prompt``. Metadata: ``exam_path``, ``prompt_language``."""
    import datasets

    path = metadata.get(EXAM_PATH_KEY) or os.environ.get("THTB_EXAM_PATH")
    if not path:
        raise ValueError(f"no exam file given: pass lm-eval metadata '{EXAM_PATH_KEY}' or set $THTB_EXAM_PATH")
    language = metadata.get(LANGUAGE_KEY) or "auto"
    records = [{**r, "prompt": render_prompt(r, language), "n_options": len(r["options"])} for r in load_exam(path)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(records)})


def letters_filter(resps, docs):
    """lm-eval ``custom`` filter: each response → its sorted option letters or ``[invalid]``."""
    return [[extract_letters(r, doc["n_options"]) for r in inst] for inst, doc in zip(resps, docs)]


# ----------------------------------------------------------------------------------------------- running
def _tally(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Accuracy (exact letter-set match), counts and parse failures of ``rows``."""
    n, correct = len(rows), sum(r["correct"] for r in rows)
    return {"accuracy": correct / n if n else None, "n": n, "correct": correct,
            "parse_failures": sum(r["extracted"] is None for r in rows)}


def summarize(results: Mapping[str, Any], *, max_response_chars: int | None = 2000) -> tuple[dict, list[dict]]:
    """Overall and per-type accuracy (exact letter-set match), parse failures, one row per question."""
    samples = [s for s in (results.get("samples") or {}).get(TASK, []) if s.get("filter") == "letters"]
    rows = []
    for s in samples:
        doc, extracted = s["doc"], harness.filtered_response(s)
        parsed = extracted != INVALID
        rows.append({"id": doc["id"], "row": doc["row"], "type": doc["type"], "target": doc["answer"],
                     "extracted": extracted if parsed else None, "correct": parsed and extracted == doc["answer"],
                     "response": harness.truncate_middle(harness.raw_response(s), max_response_chars),
                     "prompt": s["arguments"][0][0]})  # the model input lm-eval built (chat template applied)
    return {
        "overall": _tally(rows),
        "per_type": {t: _tally([r for r in rows if r["type"] == t]) for t in sorted({r["type"] for r in rows})},
        "lm_eval_exact_match": (results.get("results", {}).get(TASK, {}) or {}).get("exact_match,letters"),
    }, rows


def run_exam(model_path: str | os.PathLike, *, exam_path: str | os.PathLike, out_dir: str | os.PathLike,
             adapter: str | os.PathLike | None = None, backend: str = "hf", batch_size: int | str = 1,
             max_gen_toks: int | None = None, device: str | None = None, dtype: str = "auto",
             tensor_parallel_size: int = 1, data_parallel_size: int = 1, apply_chat_template: bool = True,
             prompt_language: str = "auto", limit: int | None = None, extra_model_args: dict[str, Any] | None = None,
             max_response_chars: int | None = 2000) -> dict[str, Any]:
    """Evaluate a model on an exam file through lm-eval; writes ``exam.json`` and ``exam_samples.jsonl``.

    ``max_gen_toks`` overrides the task's 64. ``extra_model_args={"enable_thinking": False}`` turns a
    Qwen3-family template's thinking off (``eval.exam.enable_thinking``, off by default for every row alike).
    ``limit`` = the first N questions. The exam is validated (and a bad file reported) before any model is loaded.
    Other arguments as in :func:`thtb.eval.mmlu_pro.run_mmlu_pro`."""
    if prompt_language not in ("auto", "zh", "en"):
        raise ValueError(f"prompt_language must be 'auto', 'zh' or 'en', got {prompt_language!r}")
    records = load_exam(exam_path)
    margs = harness.model_args(backend, model_path, adapter=adapter, dtype=dtype, extra=extra_model_args,
                               tensor_parallel_size=tensor_parallel_size, data_parallel_size=data_parallel_size)
    exam = Path(exam_path).expanduser().resolve()
    if backend == "hf":
        device = harness.resolve_device(device)  # lm-eval's hf default is CUDA, even on a CPU box
    started = time.time()
    results = harness.run_lm_eval(
        backend=backend, model_args=margs, tasks=[TASK], include_path=harness.tasks_dir() / "exam_mcq",
        include_defaults=False, task_metadata={EXAM_PATH_KEY: str(exam), LANGUAGE_KEY: prompt_language},
        num_fewshot=0, limit=limit, batch_size=batch_size, device=device, max_gen_toks=max_gen_toks,
        apply_chat_template=apply_chat_template)
    summary, rows = summarize(results, max_response_chars=max_response_chars)
    summary.update({
        "task": TASK, "model": harness.model_fingerprint(model_path, adapter),
        "data": {"path": str(exam), "sha256": harness.file_digest(exam), "questions": len(records),
                 "types": {t: sum(r["type"] == t for r in records) for t in ("single", "multiple")}},
        "settings": {"backend": backend, "model_args": margs, "prompt_language": prompt_language,
                     "apply_chat_template": apply_chat_template, "limit": limit,
                     "generation_kwargs": results.get("configs", {}).get(TASK, {}).get("generation_kwargs"),
                     "scoring": "exact match of the set of option letters", "batch_size": batch_size,
                     "device": device, "dtype": dtype},
        "lm_eval_version": harness.lm_eval_version(), "wall_s": round(time.time() - started, 2),
    })
    harness.write_outputs(out_dir, JSON_NAME, summary, SAMPLES_NAME, rows)
    return summary
