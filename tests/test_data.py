"""Tests for thtb.data: loading instruction datasets as canonical records, ids, errors, writers."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from thtb.data import (
    DataError,
    LoadReport,
    alpaca_query,
    load_records,
    record_id,
    strip_nan_artifact,
    write_alpaca_json,
    write_jsonl,
    write_messages_jsonl,
)

ALPACA_ROWS = [
    {"instruction": "Explain X.", "input": "", "output": "X is a letter.", "bloom_level": "Understand"},
    {"instruction": "Add the numbers.", "input": "2 3", "output": "5", "bloom_level": "Apply"},
    {"instruction": "Name a colour.", "input": "   ", "output": "Blue.", "bloom_level": "Remember"},
]


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def write_lines(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def expected_id(query_clean: str, response: str) -> str:
    """The id rule, written out independently of the implementation."""
    q = unicodedata.normalize("NFC", query_clean).strip()
    r = unicodedata.normalize("NFC", response).strip()
    return hashlib.sha256(json.dumps([q, r], ensure_ascii=False).encode()).hexdigest()[:16]


def load_error(path: Path | str, **kwargs: Any) -> DataError:
    with pytest.raises(DataError) as info:
        load_records(path, **kwargs)
    return info.value


# --------------------------------------------------------------------------- query text and ids


@pytest.mark.parametrize(
    ("instruction", "input_text", "fidelity", "query"),
    [
        ("Explain X.", "", "reference", "Explain X.\nnan"),
        ("Explain X.", "", "paper", "Explain X."),
        ("Explain X.", "  \n", "paper", "Explain X."),
        ("Explain X.", "  ", "reference", "Explain X.\n  "),
        ("Sum.", "1 2", "reference", "Sum.\n1 2"),
        ("Sum.", "1 2", "paper", "Sum.\n1 2"),
    ],
)
def test_alpaca_query_per_fidelity(instruction: str, input_text: str, fidelity: str, query: str) -> None:
    assert alpaca_query(instruction, input_text, fidelity) == query  # type: ignore[arg-type]


def test_strip_nan_artifact_only_strips_the_trailing_line() -> None:
    assert strip_nan_artifact("Explain X.\nnan") == "Explain X."
    assert strip_nan_artifact("Explain X.\nnan \n") == "Explain X."
    assert strip_nan_artifact("Is banana a nan") == "Is banana a nan"
    assert strip_nan_artifact("nan\nExplain") == "nan\nExplain"


def test_record_id_matches_the_written_rule_and_normalises() -> None:
    assert record_id("Explain X.", "X is a letter.") == expected_id("Explain X.", "X is a letter.")
    decomposed, composed = "Cafe\u0301 \u2028?", "Caf\u00e9 \u2028?"
    assert record_id(f"  {decomposed}\n", "réponse  ") == record_id(composed, "réponse")
    assert record_id("a", "b") != record_id("b", "a")
    assert record_id("a", "b") != record_id("a\nb", "")
    assert len(record_id("q", "r")) == 16


# --------------------------------------------------------------------------- formats


def test_alpaca_json_reference_and_paper(tmp_path: Path) -> None:
    path = write_json(tmp_path / "alpaca.json", ALPACA_ROWS)
    ref, report = load_records(path)
    paper, _ = load_records(path, fidelity="paper")
    assert ref.columns.tolist()[:4] == ["id", "query", "response", "row"]
    assert ref["query"].tolist() == ["Explain X.\nnan", "Add the numbers.\n2 3", "Name a colour.\n   "]
    assert paper["query"].tolist() == ["Explain X.", "Add the numbers.\n2 3", "Name a colour."]
    assert ref["id"].tolist() == paper["id"].tolist()
    assert ref["id"].iloc[0] == expected_id("Explain X.", "X is a letter.")
    assert ref["id"].iloc[2] == expected_id("Name a colour.", "Blue.")
    assert ref["row"].tolist() == [0, 1, 2] and ref["row"].dtype == "int64"
    assert ref["bloom_level"].tolist() == ["Understand", "Apply", "Remember"]
    assert ref["instruction"].tolist() == [r["instruction"] for r in ALPACA_ROWS]
    assert (report.format, report.fidelity, report.n_rows, report.n_excluded) == ("alpaca", "reference", 3, 0)
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_alpaca_jsonl_gives_the_same_ids_as_json(tmp_path: Path) -> None:
    from_json, _ = load_records(write_json(tmp_path / "a.json", ALPACA_ROWS))
    from_jsonl, report = load_records(write_lines(tmp_path / "a.jsonl", ALPACA_ROWS))
    assert from_jsonl["id"].tolist() == from_json["id"].tolist()
    assert from_jsonl["query"].tolist() == from_json["query"].tolist()
    assert report.format == "alpaca"


def test_alpaca_input_is_optional(tmp_path: Path) -> None:
    rows = [{"instruction": "Explain X.", "output": "Y."}, {"instruction": "Sum.", "input": "1 2", "output": "3"}]
    some, _ = load_records(write_lines(tmp_path / "some.jsonl", rows))
    assert some["query"].tolist() == ["Explain X.\nnan", "Sum.\n1 2"]
    assert pd.isna(some["input"].iloc[0])
    none, _ = load_records(write_lines(tmp_path / "none.jsonl", rows[:1]))
    assert none["query"].tolist() == ["Explain X."]
    assert none["id"].tolist() == some["id"].tolist()[:1] == [expected_id("Explain X.", "Y.")]


def test_query_response_matches_alpaca_ids(tmp_path: Path) -> None:
    rows = [
        {"query": "Explain X.\nnan", "response": "X is a letter."},
        {"query": "Add the numbers.\n2 3", "response": "5"},
    ]
    path = write_lines(tmp_path / "released.jsonl", rows)
    ref, report = load_records(path)
    paper, _ = load_records(path, fidelity="paper")
    alpaca, _ = load_records(write_json(tmp_path / "a.json", ALPACA_ROWS[:2]))
    assert report.format == "query_response"
    assert ref["query"].tolist() == ["Explain X.\nnan", "Add the numbers.\n2 3"]
    assert paper["query"].tolist() == ["Explain X.", "Add the numbers.\n2 3"]
    assert ref["id"].tolist() == paper["id"].tolist() == alpaca["id"].tolist()
    assert ref.columns.tolist() == ["id", "query", "response", "row"]


def test_sharegpt_single_turn_with_system(tmp_path: Path) -> None:
    conversation = [
        {"from": "system", "value": "Be terse."},
        {"from": "human", "value": "Explain X."},
        {"from": "gpt", "value": "X is a letter."},
    ]
    path = write_lines(tmp_path / "sg.jsonl", [{"id": "conv-1", "conversations": conversation}])
    frame, report = load_records(path)
    assert report.format == "sharegpt" and report.n_multi_turn == 0
    assert frame["query"].tolist() == ["Explain X."]
    assert frame["response"].tolist() == ["X is a letter."]
    assert frame["id"].tolist() == [expected_id("Explain X.", "X is a letter.")]
    assert frame["orig_id"].tolist() == ["conv-1"]
    assert frame["conversations"].iloc[0] == conversation
    assert frame["messages"].iloc[0] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Explain X."},
        {"role": "assistant", "content": "X is a letter."},
    ]


def test_multi_turn_is_kept_whole_and_scored_on_the_first_exchange(tmp_path: Path) -> None:
    messages = [
        {"role": "user", "content": "Hi, explain X."},
        {"role": "assistant", "content": "X is a letter."},
        {"role": "user", "content": "And Y?"},
        {"role": "assistant", "content": "Y too."},
    ]
    path = write_json(tmp_path / "msgs.json", [{"messages": messages, "source": "chat"}])
    frame, report = load_records(path)
    assert report.format == "messages" and report.n_multi_turn == 1
    assert frame["query"].tolist() == ["Hi, explain X."]
    assert frame["response"].tolist() == ["X is a letter."]
    assert frame["messages"].iloc[0] == messages
    assert frame.columns.tolist() == ["id", "query", "response", "row", "source", "messages"]


def test_messages_extra_turn_keys_are_dropped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    messages = [{"role": "user", "content": "Q", "name": "ann"}, {"role": "assistant", "content": "A"}]
    path = write_lines(tmp_path / "m.jsonl", [{"messages": messages}])
    with caplog.at_level(logging.WARNING, logger="thtb.data"):
        frame, _ = load_records(path)
    assert frame["messages"].iloc[0][0] == {"role": "user", "content": "Q"}
    assert "role/content" in caplog.text


def test_parquet_and_csv_with_both_schemas(tmp_path: Path) -> None:
    alpaca = pd.DataFrame(ALPACA_ROWS)
    alpaca.to_parquet(tmp_path / "a.parquet")
    alpaca.to_csv(tmp_path / "a.csv", index=False)
    reference, _ = load_records(write_json(tmp_path / "a.json", ALPACA_ROWS))
    for name in ("a.parquet", "a.csv"):
        frame, report = load_records(tmp_path / name)
        assert report.format == "alpaca", name
        assert frame["id"].tolist() == reference["id"].tolist(), name
        assert frame["query"].tolist() == reference["query"].tolist(), name
        assert frame["bloom_level"].tolist() == ["Understand", "Apply", "Remember"], name
    qr = pd.DataFrame({"query": ["Explain X.\nnan"], "response": ["X is a letter."], "score": [3]})
    qr.to_parquet(tmp_path / "qr.parquet")
    qr.to_csv(tmp_path / "qr.tsv", sep="\t", index=False)
    for name in ("qr.parquet", "qr.tsv"):
        frame, report = load_records(tmp_path / name)
        assert report.format == "query_response", name
        assert frame["id"].tolist() == [reference["id"].iloc[0]], name
        assert frame["score"].tolist() == [3], name


def test_csv_text_cells_stay_literal(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("instruction,input,output,grade\nSay it.,nan,NA,\nExplain X.,,Y.,2\n", encoding="utf-8")
    frame, _ = load_records(path)
    assert frame["query"].tolist() == ["Say it.\nnan", "Explain X.\nnan"]
    assert frame["response"].tolist() == ["NA", "Y."]
    assert frame["input"].tolist() == ["nan", ""]
    assert pd.isna(frame["grade"].iloc[0]) and frame["grade"].iloc[1] == 2


def test_conversations_in_a_csv_cell_are_parsed(tmp_path: Path) -> None:
    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    pd.DataFrame({"messages": [json.dumps(messages)]}).to_csv(tmp_path / "m.csv", index=False)
    frame, _ = load_records(tmp_path / "m.csv")
    assert (frame["query"].iloc[0], frame["response"].iloc[0]) == ("Q", "A")


def test_json_file_in_json_lines_layout(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "hf_export.json", ALPACA_ROWS)
    frame, report = load_records(path)
    assert len(frame) == 3 and report.format == "alpaca"


def test_hf_dataset_directory_and_split(tmp_path: Path) -> None:
    import datasets

    train = datasets.Dataset.from_list(ALPACA_ROWS)
    test = datasets.Dataset.from_list([{"query": "Q\nnan", "response": "A"}])
    train.save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dict"))
    reference, _ = load_records(write_json(tmp_path / "a.json", ALPACA_ROWS))

    single, report = load_records(tmp_path / "single")
    assert single["id"].tolist() == reference["id"].tolist() and report.sha256 is None
    from_dict, report = load_records(tmp_path / "dict")
    assert from_dict["id"].tolist() == reference["id"].tolist() and report.split == "train"
    test_split, report = load_records(tmp_path / "dict", split="test")
    assert test_split["id"].tolist() == [expected_id("Q", "A")] and report.format == "query_response"
    error = load_error(tmp_path / "dict", split="validation")
    assert "split 'validation' not found" in str(error) and "train" in str(error)


def test_hub_id_is_routed_to_load_dataset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import datasets

    calls: list[tuple[str, str]] = []

    def fake_load_dataset(name: str, split: str) -> datasets.Dataset:
        calls.append((name, split))
        return datasets.Dataset.from_list(ALPACA_ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.chdir(tmp_path)
    frame, report = load_records("tatsu-lab/alpaca", split="train")
    assert calls == [("tatsu-lab/alpaca", "train")]
    assert report.source == "tatsu-lab/alpaca" and report.sha256 is None and len(frame) == 3
    assert frame["query"].iloc[0] == "Explain X.\nnan"


def test_hub_failure_names_the_id(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import datasets

    def failing(name: str, split: str) -> None:
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    monkeypatch.chdir(tmp_path)
    error = load_error("owner/dataset")
    assert str(error).startswith("owner/dataset: ") and "ConnectionError: offline" in str(error)


def test_missing_file_is_file_not_found_with_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("hub must not be tried"))
    for missing in (tmp_path / "nope.json", str(tmp_path / "nope.json"), "data/train.jsonl"):
        with pytest.raises(FileNotFoundError) as info:
            load_records(missing)
        assert str(missing) in str(info.value)


def test_format_override(tmp_path: Path) -> None:
    rows = [{"instruction": "I", "output": "O", "query": "Q", "response": "R"}]
    path = write_lines(tmp_path / "both.jsonl", rows)
    detected, report = load_records(path)
    assert report.format == "alpaca" and detected["query"].tolist() == ["I"]
    forced, report = load_records(path, format="query_response")
    assert report.format == "query_response" and forced["query"].tolist() == ["Q"]
    assert forced["instruction"].tolist() == ["I"]
    error = load_error(path, format="sharegpt")
    assert "both.jsonl" in str(error) and "conversations" in str(error) and "instruction" in str(error)
    with pytest.raises(ValueError, match="format must be one of"):
        load_records(path, format="dolly")
    with pytest.raises(ValueError, match="fidelity must be one of"):
        load_records(path, fidelity="clean")


def test_reserved_names_are_prefixed(tmp_path: Path) -> None:
    rows = [{"id": 7, "row": "r", "orig_id": "x", "instruction": "I", "input": "", "output": "O"}]
    frame, _ = load_records(write_lines(tmp_path / "a.jsonl", rows))
    assert frame.columns.tolist() == [
        "id", "query", "response", "row", "orig_id", "orig_row", "orig_orig_id", "instruction", "input", "output",
    ]
    assert (frame["orig_id"].iloc[0], frame["orig_row"].iloc[0], frame["orig_orig_id"].iloc[0]) == (7, "r", "x")


# --------------------------------------------------------------------------- duplicates, empties, limit


def test_duplicates_get_suffixed_unique_ids(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [
        {"instruction": "Explain X.", "input": "", "output": "Y."},
        {"instruction": "Other.", "input": "", "output": "Z."},
        {"instruction": " Explain X. ", "input": "", "output": "Y.\n"},
        {"instruction": "Explain X.", "input": " ", "output": "Y."},
    ]
    with caplog.at_level(logging.WARNING, logger="thtb.data"):
        frame, report = load_records(write_json(tmp_path / "d.json", rows))
    base = expected_id("Explain X.", "Y.")
    assert frame["id"].tolist() == [base, expected_id("Other.", "Z."), f"{base}-dup1", f"{base}-dup2"]
    assert frame["id"].is_unique
    assert (report.n_duplicates, report.n_duplicate_groups, report.duplicate_groups) == (2, 1, [[0, 2, 3]])
    assert "2 rows repeat" in caplog.text


def test_empty_rows_are_reported_and_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [
        {"instruction": "Fine.", "input": "", "output": "Ok."},
        {"instruction": "  ", "input": "", "output": "Answer."},
        {"instruction": "No answer.", "input": "", "output": " \n"},
        {"instruction": "", "input": "", "output": ""},
    ]
    path = write_lines(tmp_path / "e.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="thtb.data"):
        frame, report = load_records(path)
    assert len(frame) == 4 and report.n_excluded == 0
    assert report.empty_query_rows == [1, 3] and report.empty_response_rows == [2, 3]
    assert "2 rows with an empty query" in caplog.text and "rows 1, 3" in caplog.text

    dropped, report = load_records(path, drop_empty=True)
    assert dropped["row"].tolist() == [0] and dropped.index.tolist() == [0]
    assert report.n_excluded == 3 and report.excluded_rows == [1, 2, 3]
    assert len(dropped) + report.n_excluded == report.n_rows == 4


def test_jsonl_rows_are_physical_line_indices(tmp_path: Path) -> None:
    path = tmp_path / "gaps.jsonl"
    path.write_text('\n{"query": "a", "response": "b"}\n\n{"query": "c", "response": ""}\n', encoding="utf-8")
    frame, report = load_records(path)
    assert frame["row"].tolist() == [1, 3]
    assert report.empty_response_rows == [3]


def test_limit_keeps_the_first_rows_before_validation(tmp_path: Path) -> None:
    rows = [{"instruction": f"I{i}", "input": "", "output": f"O{i}"} for i in range(5)]
    rows.append({"instruction": "bad", "input": "", "output": 3})
    frame, report = load_records(write_json(tmp_path / "l.json", rows), limit=2)
    assert frame["row"].tolist() == [0, 1] and frame["query"].iloc[1] == "I1\nnan"
    assert (report.n_rows, report.n_source_rows, report.limit) == (2, 6, 2)
    with pytest.raises(ValueError, match="limit"):
        load_records(tmp_path / "l.json", limit=0)


def test_load_report_is_serialisable(tmp_path: Path) -> None:
    _, report = load_records(write_json(tmp_path / "a.json", ALPACA_ROWS))
    assert isinstance(report, LoadReport)
    assert json.loads(json.dumps(report.to_dict()))["n_rows"] == 3


# --------------------------------------------------------------------------- errors


def test_non_string_field_message_names_file_row_and_field(tmp_path: Path) -> None:
    rows = [{"instruction": f"I{i}", "input": "", "output": f"O{i}"} for i in range(18)]
    rows[17]["output"] = 5
    error = load_error(write_json(tmp_path / "alpaca_data.json", rows))
    assert str(error) == f"{tmp_path / 'alpaca_data.json'}: row 17: field 'output' must be a string, got int"
    assert (error.row, error.field, error.path) == (17, "output", str(tmp_path / "alpaca_data.json"))


@pytest.mark.parametrize(("value", "name"), [(None, "null"), (3.5, "float"), (["a"], "list"), ({"a": 1}, "dict")])
def test_non_string_values_in_jsonl(tmp_path: Path, value: Any, name: str) -> None:
    rows = [{"query": "q", "response": "r"}, {"query": value, "response": "r"}]
    error = load_error(write_lines(tmp_path / "bad.jsonl", rows))
    assert str(error).endswith(f"bad.jsonl: line 2: field 'query' must be a string, got {name}")
    assert (error.row, error.line, error.field) == (1, 2, "query")


def test_null_in_parquet_names_the_row(tmp_path: Path) -> None:
    pd.DataFrame({"query": ["a", "b", None], "response": ["x", "y", "z"]}).to_parquet(tmp_path / "n.parquet")
    error = load_error(tmp_path / "n.parquet")
    assert "n.parquet: row 2: field 'query' must be a string, got null" in str(error)


def test_missing_field_lists_what_is_present(tmp_path: Path) -> None:
    rows = [{"instruction": "I", "input": "", "output": "O"}, {"instruction": "I", "input": "x"}]
    error = load_error(write_json(tmp_path / "m.json", rows))
    assert "m.json: row 1: field 'output' is missing (fields present: instruction, input)" in str(error)
    assert error.field == "output" and error.row == 1


def test_malformed_json_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"query": "a", "response": "b"}\n{"query": "a", "response": "b"}\n{"query": "a" "response"}\n')
    error = load_error(path)
    assert "broken.jsonl: line 3, column 15: invalid JSON" in str(error)
    assert (error.row, error.line) == (2, 3)


def test_jsonl_record_must_be_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_text('{"query": "a", "response": "b"}\n["a", "b"]\n')
    assert "list.jsonl: line 2: record must be a JSON object, got list" in str(load_error(path))


def test_malformed_json_array(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"instruction": "I", "output": "O"},\n  {"instruction": "I", "output": }\n]\n')
    error = load_error(path)
    assert "broken.json: line 3, column 34: invalid JSON" in str(error)
    assert (error.line, error.column, error.row) == (3, 34, None)


def test_top_level_object_is_explained(tmp_path: Path) -> None:
    path = write_json(tmp_path / "obj.json", {"data": ALPACA_ROWS})
    assert "top-level JSON dict (keys: data)" in str(load_error(path))


def test_invalid_utf8_names_line_and_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"query": "a", "response": "b"}\n{"query": "caf\xe9", "response": "b"}\n')
    error = load_error(path)
    assert "latin1.jsonl: line 2, byte offset 46: not valid UTF-8 (byte 0xe9" in str(error)
    assert (error.line, error.byte_offset) == (2, 46)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"query": "a", "response": "b"}\n')
    frame, _ = load_records(path)
    assert frame["query"].tolist() == ["a"]


@pytest.mark.parametrize(
    ("name", "content", "detail"),
    [
        ("zero.json", b"", "file is empty (0 bytes)"),
        ("empty.json", b"[]\n", "contains no records (empty JSON array)"),
        ("blank.jsonl", b"\n  \n\n", "contains no records (only blank lines)"),
        ("header.csv", b"instruction,input,output\n", "contains no records (0 rows"),
    ],
)
def test_empty_sources(tmp_path: Path, name: str, content: bytes, detail: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert str(load_error(path)).startswith(f"{path}: {detail}")


def test_unrecognised_fields_are_listed(tmp_path: Path) -> None:
    error = load_error(write_lines(tmp_path / "odd.jsonl", [{"prompt": "p", "completion": "c"}]))
    assert str(error).startswith(f"{tmp_path / 'odd.jsonl'}: no recognisable fields: found prompt, completion")


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("hello")
    assert "data.txt: unsupported file type '.txt'" in str(load_error(path))


@pytest.mark.parametrize(
    ("conversation", "message"),
    [
        ([{"from": "human", "value": "Q"}], "field 'conversations': no assistant turn after the first user turn"),
        (
            [{"from": "human", "value": "Q"}, {"from": "bot", "value": "A"}],
            "field 'conversations[1].from': unknown role 'bot'",
        ),
        ([{"from": "gpt", "value": "A"}], "field 'conversations[0]': the first non-system turn must be from the user"),
        ([{"from": "human", "value": "Q"}, {"from": "gpt"}], "field 'conversations[1].value' is missing"),
        ([{"from": "human", "value": 1}, {"from": "gpt", "value": "A"}], "field 'conversations[0].value' must be a string, got int"),
        ("not json", "field 'conversations' is a string but not JSON"),
        ([], "field 'conversations' must be a non-empty list of turns, got an empty list"),
        ([["human", "Q"]], "field 'conversations[0]' must be an object, got list"),
    ],
)
def test_bad_conversations(tmp_path: Path, conversation: Any, message: str) -> None:
    good = {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}
    error = load_error(write_lines(tmp_path / "sg.jsonl", [good, {"conversations": conversation}]))
    assert f"sg.jsonl: line 2: {message}" in str(error)
    assert error.row == 1 and error.field is not None and error.field.startswith("conversations")


def test_messages_with_unknown_role(tmp_path: Path) -> None:
    rows = [{"messages": [{"role": "user", "content": "Q"}, {"role": "tool", "content": "A"}]}]
    error = load_error(write_json(tmp_path / "m.json", rows))
    assert "m.json: row 0: field 'messages[1].role': unknown role 'tool'" in str(error)


# --------------------------------------------------------------------------- writers


def _mixed_frames(tmp_path: Path) -> list[pd.DataFrame]:
    alpaca, _ = load_records(write_json(tmp_path / "src_a.json", ALPACA_ROWS + [{"instruction": "Ü", "input": "", "output": "ß"}]))
    qr, _ = load_records(write_lines(tmp_path / "src_q.jsonl", [{"query": "Q1\nnan", "response": "R1"}, {"query": "Q\nx", "response": "R"}]))
    conversation = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "U2"},
        {"role": "assistant", "content": "A2"},
    ]
    chat, _ = load_records(write_lines(tmp_path / "src_m.jsonl", [{"messages": conversation}]))
    return [alpaca, qr, chat]


def test_write_jsonl_content_and_determinism(tmp_path: Path) -> None:
    frame, _ = load_records(write_json(tmp_path / "a.json", ALPACA_ROWS + [{"instruction": "Ü", "input": "", "output": "ß"}]))
    first = write_jsonl(frame, tmp_path / "out" / "a.jsonl")
    content = first.read_bytes()
    lines = content.decode("utf-8").splitlines()
    assert json.loads(lines[0]) == {"id": frame["id"].iloc[0], "query": "Explain X.\nnan", "response": "X is a letter."}
    assert "Ü" in lines[3]
    assert content.endswith(b"\n") and content.count(b"\n") == 4
    write_jsonl(frame.copy(), tmp_path / "again.jsonl")
    assert (tmp_path / "again.jsonl").read_bytes() == content
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jsonl"]


@pytest.mark.parametrize(("writer", "suffix"), [(write_jsonl, ".jsonl"), (write_alpaca_json, ".json"), (write_messages_jsonl, ".jsonl")])
def test_round_trip_keeps_ids_and_bytes(tmp_path: Path, writer: Any, suffix: str) -> None:
    for index, frame in enumerate(_mixed_frames(tmp_path)):
        path = writer(frame, tmp_path / f"out{index}{suffix}")
        again, _ = load_records(path)
        assert again["id"].tolist() == frame["id"].tolist(), (writer.__name__, index)
        copy = writer(again, tmp_path / f"copy{index}{suffix}")
        assert copy.read_bytes() == path.read_bytes(), (writer.__name__, index)


def test_write_alpaca_json_fields(tmp_path: Path) -> None:
    alpaca, qr, chat = _mixed_frames(tmp_path)
    written = json.loads(write_alpaca_json(alpaca, tmp_path / "a.json").read_text(encoding="utf-8"))
    assert written[:3] == [{k: r[k] for k in ("instruction", "input", "output")} for r in ALPACA_ROWS]
    written = json.loads(write_alpaca_json(qr, tmp_path / "q.json").read_text(encoding="utf-8"))
    assert written == [{"instruction": "Q1", "input": "", "output": "R1"}, {"instruction": "Q\nx", "input": "", "output": "R"}]
    reloaded, _ = load_records(tmp_path / "q.json")
    assert reloaded["query"].iloc[0] == "Q1\nnan"


def test_write_messages_jsonl_single_and_multi_turn(tmp_path: Path) -> None:
    alpaca, _, chat = _mixed_frames(tmp_path)
    single = [json.loads(x) for x in write_messages_jsonl(alpaca, tmp_path / "s.jsonl").read_text().splitlines()]
    assert single[0] == {
        "id": alpaca["id"].iloc[0],
        "messages": [{"role": "user", "content": "Explain X.\nnan"}, {"role": "assistant", "content": "X is a letter."}],
    }
    multi = [json.loads(x) for x in write_messages_jsonl(chat, tmp_path / "m.jsonl").read_text().splitlines()]
    assert [m["content"] for m in multi[0]["messages"]] == ["S", "U1", "A1", "U2", "A2"]


def test_writers_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame, _ = load_records(write_json(tmp_path / "a.json", ALPACA_ROWS))
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_jsonl(frame, target)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "out.jsonl"]


def test_writer_rejects_a_frame_without_text(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": ["a"], "query": [None], "response": ["r"]})
    with pytest.raises(ValueError, match="column 'query' at position 0 must be a string"):
        write_jsonl(frame, tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="no 'id' column"):
        write_messages_jsonl(frame.drop(columns="id"), tmp_path / "x.jsonl")


# --------------------------------------------------------------------------- packaging


def test_import_is_lazy() -> None:
    code = "import sys, thtb.data; print(sorted(m for m in ('datasets', 'pyarrow.parquet') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------- real data


def test_released_random_rows_match_alpaca_ids(shared_data: Path) -> None:
    alpaca, report = load_records(shared_data / "alpaca" / "alpaca_data.json")
    released, _ = load_records(shared_data / "thtb_released" / "random.jsonl")
    first = released.iloc[0]
    instruction = first["query"].removesuffix("\nnan")
    match = alpaca[(alpaca["instruction"] == instruction) & (alpaca["output"] == first["response"])]
    assert len(match) == 1 and match["input"].iloc[0] == ""
    assert match["id"].iloc[0] == first["id"]
    assert match["query"].iloc[0] == first["query"]
    assert released["id"].isin(set(alpaca["id"])).all()
    assert report.n_rows == 52002 and alpaca["id"].is_unique


def test_alpaca_52k_loads_fast_and_writes_back_identically(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "alpaca" / "alpaca_data.json"
    start = time.perf_counter()
    frame, report = load_records(source)
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0, f"52k Alpaca load took {elapsed:.2f} s"
    assert len(frame) + report.n_excluded == report.n_rows == 52002
    assert report.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert len(report.empty_response_rows) == 28 and report.empty_query_rows == []
    assert write_alpaca_json(frame, tmp_path / "alpaca.json").read_bytes() == source.read_bytes()
