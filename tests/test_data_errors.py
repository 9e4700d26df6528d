"""Bad input found by the reliability review: each case gets a DataError naming file, line/row and
field, or is counted in the load report; nothing is silently dropped or silently accepted."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from thtb.data import DataError, load_records

ROOT = Path(__file__).resolve().parents[1]
DEEP = 100_000


def write_lines(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def load_error(path: Path | str, **kwargs: Any) -> DataError:
    with pytest.raises(DataError) as info:
        load_records(path, **kwargs)
    return info.value


GOOD = '{"instruction": "ok", "output": "fine"}'


# --------------------------------------------------------------------------- 1. lone surrogates


def test_lone_surrogate_in_jsonl_names_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "sur.jsonl"
    path.write_text(GOOD + '\n{"instruction": "a\\ud800b", "output": "x"}\n', encoding="utf-8")
    error = load_error(path)
    assert str(error).startswith(f"{path}: line 2: field 'instruction' holds a lone UTF-16 surrogate \\ud800")
    assert (error.row, error.line, error.field) == (1, 2, "instruction")


def test_lone_surrogate_in_json_array_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "sur.json"
    path.write_text(f'[{GOOD},\n {{"instruction": "a", "output": "x\\udc00"}}]\n', encoding="utf-8")
    error = load_error(path)
    assert str(error).startswith(f"{path}: row 1: field 'output' holds a lone UTF-16 surrogate \\udc00")
    assert (error.row, error.field) == (1, "output")


def test_lone_surrogate_in_a_nested_turn_and_in_a_csv_cell(tmp_path: Path) -> None:
    turns = '[{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A\\udbff"}]'
    path = tmp_path / "m.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}\n'
                    f'{{"messages": {turns}}}\n', encoding="utf-8")
    error = load_error(path)
    assert "m.jsonl: line 2: field 'messages[1].content' holds a lone UTF-16 surrogate \\udbff" in str(error)
    csv_path = tmp_path / "m.csv"
    pd.DataFrame({"messages": [turns]}).to_csv(csv_path, index=False)
    error = load_error(csv_path)
    assert "m.csv: row 0: field 'messages[1].content' holds a lone UTF-16 surrogate" in str(error)


def test_lone_surrogate_in_a_key_or_an_extra_field(tmp_path: Path) -> None:
    path = tmp_path / "k.jsonl"
    path.write_text(GOOD + '\n{"instruction": "i", "output": "o", "meta": {"tags": ["x", "\\ud800"]}}\n')
    assert "k.jsonl: line 2: field 'meta.tags[1]' holds a lone UTF-16 surrogate" in str(load_error(path))
    path.write_text(GOOD + '\n{"instruction": "i", "output": "o", "n\\udfffote": 1}\n')
    error = load_error(path)
    assert "k.jsonl: line 2: field name 'n\\udfffote' holds a lone UTF-16 surrogate" in str(error)


def test_surrogate_pairs_and_escaped_backslashes_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_text('{"instruction": "smile \\ud83d\\ude00", "output": "literal \\\\ud800 text"}\n')
    frame, _ = load_records(path)
    assert frame["query"].tolist() == ["smile \U0001f600"]
    assert frame["response"].tolist() == ["literal \\ud800 text"]


# --------------------------------------------------------------------------- 2. deep nesting


@pytest.mark.parametrize("deep", ["[" * DEEP + "]" * DEEP, '{"a":' * DEEP + "1" + "}" * DEEP])
def test_deep_nesting_in_jsonl_names_the_line(tmp_path: Path, deep: str) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text(f"{GOOD}\n{GOOD}\n{deep}\n", encoding="utf-8")
    error = load_error(path)
    assert str(error).startswith(f"{path}: line 3: JSON nested too deeply to parse ({DEEP:,} levels")
    assert (error.row, error.line) == (2, 3)


def test_deep_nesting_in_json_array_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    deep = '{"instruction": "i", "output": "o", "meta": ' + "[" * DEEP + "]" * DEEP + "}"
    path.write_text(f"[\n{GOOD},\n{deep}\n]\n", encoding="utf-8")
    error = load_error(path)
    assert str(error).startswith(f"{path}: row 1: JSON nested too deeply to parse ({DEEP + 1:,} levels")
    assert "starts on line 3" in str(error) and error.row == 1


def test_deep_nesting_in_a_csv_conversation_cell(tmp_path: Path) -> None:
    path = tmp_path / "deep.csv"
    path.write_text('messages\n"' + "[" * DEEP + "]" * DEEP + '"\n', encoding="utf-8")
    error = load_error(path)
    assert f"deep.csv: row 0: field 'messages': JSON nested too deeply to parse ({DEEP:,} levels" in str(error)


# --------------------------------------------------------------------------- 3. a JSON array named .jsonl


@pytest.mark.parametrize("indent", [None, 2])
def test_json_array_in_a_jsonl_file_is_explained(tmp_path: Path, indent: int | None) -> None:
    path = tmp_path / "misnamed.jsonl"
    path.write_text("\n" + json.dumps([json.loads(GOOD), json.loads(GOOD)], indent=indent) + "\n")
    error = load_error(path)
    assert str(error) == (
        f"{path}: holds one JSON array of 2 records, not one JSON object per line as JSON Lines (.jsonl) "
        "expects; rename it to .json to read it as a JSON array"
    )


def test_broken_array_in_a_jsonl_file_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "half.jsonl"
    path.write_text(f"[\n{GOOD},\n", encoding="utf-8")
    error = load_error(path)
    assert "half.jsonl: line 1, column 2: invalid JSON: Expecting value (the file starts like a JSON array" in str(error)


# --------------------------------------------------------------------------- 4. short csv rows


def test_short_csv_row_names_the_row_and_missing_fields(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("instruction,input,output\nA,,B\n\nC\nD,,E\n", encoding="utf-8")
    error = load_error(path)
    assert str(error).startswith(
        f"{path}: row 1: field(s) 'input', 'output' missing: the row has 1 of 3 cells (line 4)"
    )
    assert (error.row, error.field) == (1, "input")


def test_unquoted_line_break_shows_up_as_a_short_tsv_row(tmp_path: Path) -> None:
    path = tmp_path / "broken.tsv"
    path.write_text("instruction\tinput\toutput\tgrade\nA\t\tfirst line\nsecond line\t3\n", encoding="utf-8")
    error = load_error(path)
    assert "broken.tsv: row 0: field(s) 'grade' missing: the row has 3 of 4 cells (line 2)" in str(error)


def test_explicitly_empty_csv_cells_are_kept_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text('instruction,input,output\nA,,B\n   \nC,,""\n"D",,\n', encoding="utf-8")
    frame, report = load_records(path)
    assert frame["response"].tolist() == ["B", "", ""]
    assert frame["row"].tolist() == [0, 1, 2] and report.empty_response_rows == [1, 2]


# --------------------------------------------------------------------------- 5. Bloom labels


def test_invalid_bloom_label_is_rejected_at_load(tmp_path: Path) -> None:
    rows = [{"instruction": f"I{i}", "output": f"O{i}", "bloom_level": "Apply"} for i in range(4)]
    rows[2]["bloom_level"] = "Synthesis"
    rows[3]["bloom_level"] = 4
    error = load_error(write_lines(tmp_path / "labels.jsonl", rows))
    assert str(error).startswith(
        f"{tmp_path / 'labels.jsonl'}: line 3: field 'bloom_level': 'Synthesis' is not a Bloom level "
        "(expected one of Remember, Understand, Apply, Analyze, Evaluate, Create, in any case; "
        "empty means unlabelled); 2 rows have invalid labels (lines 3, 4)"
    )
    assert (error.row, error.field) == (2, "bloom_level")


def test_bloom_labels_are_case_insensitive_and_empties_are_counted(tmp_path: Path) -> None:
    rows = [{"instruction": f"I{i}", "output": f"O{i}"} for i in range(5)]
    for row, label in zip(rows, [" apply ", "ANALYZE", "", None]):
        row["bloom_level"] = label
    frame, report = load_records(write_lines(tmp_path / "labels.jsonl", rows))
    assert frame["bloom_level"].tolist()[:2] == ["Apply", "Analyze"]
    assert frame["bloom_level"].iloc[2:].isna().all()
    assert report.n_unlabelled == 3
    _, plain = load_records(write_lines(tmp_path / "plain.jsonl", [{"instruction": "I", "output": "O"}]))
    assert plain.n_unlabelled is None


def test_data_layer_bloom_labels_match_the_scorers() -> None:
    from thtb.data.formats import BLOOM_LABELS
    from thtb.scorers.base import BLOOM_LEVELS

    assert BLOOM_LABELS == BLOOM_LEVELS


def test_bloom_accuracy_counts_every_sample() -> None:
    from thtb.report import bloom_accuracy

    card = pd.DataFrame({"bloom_level": ["Apply", "Apply", "Create", "Remember", None, "Apply", "Apply"]})
    labels = pd.Series(["Apply", "analyze", "Remember", "", "Apply", "Synthesis", None])
    acc = bloom_accuracy(card, labels)
    assert acc is not None
    assert (acc["n"], acc["accuracy"], acc["within_one_level"]) == (3, pytest.approx(1 / 3), pytest.approx(2 / 3))
    assert (acc["n_samples"], acc["n_unscored"], acc["n_unlabelled"], acc["n_invalid_labels"]) == (7, 1, 2, 1)
    assert acc["invalid_label_examples"] == ["Synthesis"]
    assert acc["n"] + acc["n_unscored"] + acc["n_unlabelled"] + acc["n_invalid_labels"] == acc["n_samples"]
    assert bloom_accuracy(card, pd.Series([None] * 7)) is None


# --------------------------------------------------------------------------- 6. all responses empty


def test_all_empty_responses_fail_the_load(tmp_path: Path) -> None:
    rows = [{"instruction": f"Question {i}?", "input": "", "output": " " if i % 2 else ""} for i in range(33)]
    error = load_error(write_lines(tmp_path / "hollow.jsonl", rows))
    assert str(error).startswith(f"{tmp_path / 'hollow.jsonl'}: all 33 rows have an empty response (field 'output')")
    error = load_error(write_lines(tmp_path / "hollow.jsonl", rows + [{"instruction": "Q", "output": "A"}]), limit=5)
    assert "all 5 rows (limit=5) have an empty response" in str(error)


def test_drop_empty_that_would_leave_nothing_fails(tmp_path: Path) -> None:
    rows = [{"instruction": "", "output": "A"}, {"instruction": "Q", "output": ""}]
    path = write_lines(tmp_path / "mixed.jsonl", rows)
    frame, report = load_records(path)
    assert len(frame) == 2 and report.empty_query_rows == [0] and report.empty_response_rows == [1]
    error = load_error(path, drop_empty=True)
    assert "mixed.jsonl: all 2 rows have an empty query or response; drop_empty=True would leave no records" in str(error)


# --------------------------------------------------------------------------- 7. duplicates policy

DUPLICATES = [
    {"instruction": "Explain X.", "input": "", "output": "Y."},
    {"instruction": "Other.", "input": "", "output": "Z."},
    {"instruction": " Explain X. ", "input": "", "output": "Y.\n"},
    {"instruction": "Empty.", "input": "", "output": ""},
    {"instruction": "Explain X.", "input": " ", "output": "Y."},
    {"instruction": "Empty.", "input": "", "output": ""},
]


def test_duplicates_are_kept_and_counted_by_default(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="thtb.data"):
        frame, report = load_records(write_lines(tmp_path / "d.jsonl", DUPLICATES))
    assert len(frame) == 6 and report.dedupe is False
    assert report.n_duplicates == 3 and report.n_dropped_duplicates == 0
    base = frame["id"].iloc[0]
    assert report.duplicate_ids == [f"{base}-dup1", f"{base}-dup2", f"{frame['id'].iloc[3]}-dup1"]
    assert "kept (data.dedupe=false)" in caplog.text


def test_dedupe_drops_later_copies_and_counts_them(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", DUPLICATES)
    frame, report = load_records(path, dedupe=True)
    assert frame["row"].tolist() == [0, 1, 3] and not frame["id"].str.contains("-dup").any()
    assert report.dedupe is True and report.n_dropped_duplicates == 3
    base = frame["id"].iloc[0]
    assert report.dropped_duplicate_ids == [f"{base}-dup1", f"{base}-dup2", f"{frame['id'].iloc[2]}-dup1"]
    assert (report.n_excluded, report.excluded_rows) == (3, [2, 4, 5])
    assert len(frame) + report.n_excluded == report.n_rows == 6

    both, report = load_records(path, dedupe=True, drop_empty=True)
    assert both["row"].tolist() == [0, 1]
    assert report.n_dropped_duplicates == 2 and report.excluded_rows == [2, 3, 4, 5]
    assert len(both) + report.n_excluded == report.n_rows


@pytest.mark.parametrize("name", ["alpaca", "demo"])
def test_data_configs_declare_the_dedupe_policy(name: str) -> None:
    config = yaml.safe_load((ROOT / "conf" / "data" / f"{name}.yaml").read_text())
    assert config["dedupe"] is False
