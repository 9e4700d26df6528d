"""The exam MCQ task: loading and validation of user files, letter extraction, and real lm-eval runs (a tiny
model, and a scripted LM whose answers are known)."""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest

from thtb.eval import exam, harness
from thtb.eval.exam import ExamFormatError, extract_letters, load_exam

ROWS = [
    {"question": "what is the capital of france ?", "options": ["paris", "red", "blue", "sky"], "answer": "A"},
    {"question": "list two primary colours", "options": {"A": "red", "B": "sea", "C": "blue", "D": "paris"},
     "answer": "A,C"},
    {"id": "q3", "question": "以下哪项属于五脏？", "A": "心", "B": "胃", "C": "胆", "answer": "A", "type": "单选"},
    {"question": "which are colours ?", "options": ["red", "blue", "sea"], "answer": ["B", "A"], "type": "multiple"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def exam_file(tmp_path):
    return write_jsonl(tmp_path / "exam.jsonl", ROWS)


def test_load_exam_normalises(exam_file):
    recs = load_exam(exam_file)
    assert [r["answer"] for r in recs] == ["A", "AC", "A", "AB"]
    assert [r["type"] for r in recs] == ["single", "multiple", "single", "multiple"]
    assert [r["id"] for r in recs] == ["1", "2", "q3", "4"]
    assert recs[1]["options"] == ["red", "sea", "blue", "paris"]
    assert recs[2]["options"] == ["心", "胃", "胆"]


def test_csv_with_option_columns_and_json_options(tmp_path):
    path = tmp_path / "exam.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["question", "A", "B", "C", "options", "answer"])
        w.writeheader()
        w.writerow({"question": "q1", "A": "x", "B": "y", "C": "", "options": "", "answer": "b"})
        w.writerow({"question": "q2", "A": "", "B": "", "C": "", "options": '["u", "v", "w"]', "answer": "A C"})
    recs = load_exam(path)
    assert [(r["options"], r["answer"], r["type"]) for r in recs] == [
        (["x", "y"], "B", "single"), (["u", "v", "w"], "AC", "multiple")]


def test_prompt_formats(exam_file):
    single, multiple, zh, _ = load_exam(exam_file)
    assert exam.render_prompt(zh) == (
        "这是一道单选题，请根据题目要求选择唯一正确答案，仅给出相应题目的正确选项即可。\n"
        "单选题题目：以下哪项属于五脏？\nA. 心\nB. 胃\nC. 胆\n"
    )
    assert exam.render_prompt(multiple).startswith("This is a multiple-answer multiple-choice question.")
    assert "\nQuestion: what is the capital of france ?\nA. paris\nB. red\n" in exam.render_prompt(single, "en")
    assert exam.render_prompt(single, "zh").startswith("这是一道单选题")


@pytest.mark.parametrize(
    ("response", "n", "expected"),
    [
        ("A", 4, "A"), ("AC", 4, "AC"), ("C, A", 4, "AC"), ("(B).", 4, "B"), ("答案：BD", 4, "BD"),
        ("<think>\n\n</think>\n\nD", 4, "D"), ("The answer is (C) because", 4, "C"),
        ("Answer: A and C", 4, "AC"), ("D. because it is", 4, "D"), ("I think so", 4, "[invalid]"), ("A lot of reasons", 4, "[invalid]"),
        ("", 4, "[invalid]"), ("E", 4, "[invalid]"), ("the answer is (J)", 4, "[invalid]"), ("a", 4, "[invalid]"),
    ],
)
def test_extract_letters(response, n, expected):
    assert extract_letters(response, n) == expected


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"question": "q", "options": ["a", "b"], "answer": "C"}, r"row 2: field 'answer': letter\(s\) C outside the options A-B"),
        ({"question": "q", "options": ["a", "b"]}, r"row 2: field 'answer': missing"),
        ({"options": ["a", "b"], "answer": "A"}, r"row 2: field 'question': missing"),
        ({"question": "q", "options": [], "answer": "A"}, r"row 2: field 'options': empty"),
        ({"question": "q", "answer": "A"}, r"row 2: field 'options': missing"),
        ({"question": "q", "options": ["a", "b"], "answer": "AB", "type": "single"}, r"row 2: field 'answer': type is single"),
        ({"question": "q", "options": ["a", "b"], "answer": "A", "type": "essay"}, r"row 2: field 'type'"),
        ({"question": "q", "options": {"A": "a", "C": "c"}, "answer": "A"}, r"row 2: field 'options': keys"),
        ({"question": "q", "options": ["a", "b"], "answer": "1"}, r"row 2: field 'answer': '1' is not"),
    ],
)
def test_bad_rows_are_named(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], row])
    with pytest.raises(ExamFormatError, match=message) as err:
        load_exam(path)
    assert str(path) in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="exam file not found"):
        load_exam(tmp_path / "nope.jsonl")
    (tmp_path / "exam.txt").write_text("x")
    with pytest.raises(ExamFormatError, match="unsupported exam format"):
        load_exam(tmp_path / "exam.txt")
    (tmp_path / "broken.jsonl").write_text('{"question": 1}\n{oops\n')
    with pytest.raises(ExamFormatError, match="line 2: not valid JSON"):
        load_exam(tmp_path / "broken.jsonl")


@pytest.mark.skipif(importlib.util.find_spec("openpyxl") is not None, reason="openpyxl is installed")
def test_xlsx_without_openpyxl_is_explained(tmp_path):
    (tmp_path / "exam.xlsx").write_bytes(b"PK")
    with pytest.raises(ImportError, match="openpyxl"):
        load_exam(tmp_path / "exam.xlsx")


def test_bad_exam_fails_before_loading_model(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "options": ["a"], "answer": "B"}])
    with pytest.raises(ExamFormatError, match="row 1"):
        exam.run_exam(tmp_path / "no-such-model", exam_path=path, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_exam_runs_on_tiny_model(exam_file, tmp_path):
    from tests.tiny_models import tiny_llama

    model = tiny_llama(tmp_path / "model")
    summary = exam.run_exam(model, exam_path=exam_file, out_dir=tmp_path / "out", max_gen_toks=4, device="cpu",
                            batch_size=4)
    on_disk = json.loads((tmp_path / "out" / "exam.json").read_text())
    rows = [json.loads(x) for x in (tmp_path / "out" / "exam_samples.jsonl").read_text().splitlines()]
    assert on_disk["overall"]["n"] == 4 == len(rows)
    assert {t: v["n"] for t, v in on_disk["per_type"].items()} == {"multiple": 2, "single": 2}
    assert on_disk["overall"]["accuracy"] == pytest.approx(on_disk["lm_eval_exact_match"])
    assert on_disk["overall"]["parse_failures"] == sum(r["extracted"] is None for r in rows)
    assert [r["target"] for r in rows] == ["A", "AC", "A", "AB"]
    assert summary["settings"]["apply_chat_template"] is True
    assert on_disk["data"]["sha256"] == harness.file_digest(exam_file)
    assert on_disk["data"]["types"] == {"single": 2, "multiple": 2}


QWEN3_LIKE = (  # the switch as Qwen3's template has it: thinking unless enable_thinking is false
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}<|assistant|>"
    "{% if enable_thinking is defined and enable_thinking is false %}NOTHINK{% else %}THINK{% endif %}"
)


def test_exam_turns_thinking_off_through_the_chat_template(exam_file, tmp_path):
    """`eval.exam.enable_thinking: false` (the default) reaches the model's chat template, for every row alike."""
    from tests.tiny_models import tiny_llama
    from thtb.eval.stage import exam_model_args
    from transformers import AutoTokenizer

    model = tiny_llama(tmp_path / "model")
    tok = AutoTokenizer.from_pretrained(model)
    tok.chat_template = QWEN3_LIKE
    tok.save_pretrained(model)
    assert exam_model_args({"enable_thinking": False}) == {"enable_thinking": False}
    assert exam_model_args({"enable_thinking": None}) is None
    for thinking, marker in ((False, "NOTHINK"), (None, "THINK")):
        out = tmp_path / f"out-{thinking}"
        exam.run_exam(model, exam_path=exam_file, out_dir=out, max_gen_toks=2, device="cpu", batch_size=4,
                      extra_model_args=exam_model_args({"enable_thinking": thinking}))
        rows = [json.loads(x) for x in (out / "exam_samples.jsonl").read_text().splitlines()]
        assert len(rows) == 4 and all(r["prompt"].endswith(f"<|assistant|>{marker}") for r in rows), rows[0]["prompt"]


def test_exam_scoring_with_scripted_answers(exam_file):
    """Known replies through lm-eval's real task, filter and metric: per-type accuracy and parse failures."""
    from lm_eval.api.model import LM

    replies = {"capital of france": "A", "primary colours": "答案：C、A", "五脏": "<think>\n\n</think>\n\nB",
               "which are colours": "no idea"}

    class Scripted(LM):
        def generate_until(self, requests):
            return [next(v for k, v in replies.items() if k in r.args[0]) for r in requests]

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    results = harness.run_lm_eval(
        backend=Scripted(), model_args={}, tasks=[exam.TASK], include_path=harness.tasks_dir() / "exam_mcq",
        include_defaults=False, task_metadata={exam.EXAM_PATH_KEY: str(exam_file)},
    )
    summary, rows = exam.summarize(results)
    assert [r["extracted"] for r in rows] == ["A", "AC", "B", None]
    assert [r["correct"] for r in rows] == [True, True, False, False]
    assert summary["overall"] == {"accuracy": 0.5, "n": 4, "correct": 2, "parse_failures": 1}
    assert summary["per_type"]["single"]["accuracy"] == 0.5
    assert summary["per_type"]["multiple"] == {"n": 2, "correct": 1, "parse_failures": 1, "accuracy": 0.5}
    assert summary["lm_eval_exact_match"] == pytest.approx(0.5)
