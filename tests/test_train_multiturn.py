"""Multi-turn conversations are selected and trained whole: system turn, every exchange, every assistant turn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import ROOT, make_cfg
from tests.tiny_models import CHAT_TEMPLATE
from thtb.data import load_records, write_jsonl, write_messages_jsonl
from thtb.fingerprint import ids_digest
from thtb.stages.select import run_select
from thtb.train.stage import build_trainer, plan_training, run_train
from thtb.train.data import load_train_data

QUESTIONS = [
    "explain the theory of relativity in simple terms .", "write a poem about the sea and the sky .",
    "compare the economic policies of two countries .", "what is the capital of france ?",
    "solve the equation x plus two equals five .", "list three primary colours :",
    "design a research plan for measuring air quality in cities .",
]
ANSWERS = ["the answer is three .", "red blue yellow .", "paris .", "the sea and the sky .",
           "evaluate the argument carefully .", "measuring air quality in cities ."]
SYSTEM = "evaluate the argument carefully ."


def conversation(i: int) -> list[dict[str, str]]:
    """A system turn and three user/assistant exchanges (the first exchange differs between conversations)."""
    turns = [{"role": "system", "content": SYSTEM}]
    for k in range(3):
        turns.append({"role": "user", "content": QUESTIONS[(i + 2 * k) % len(QUESTIONS)]})
        turns.append({"role": "assistant", "content": ANSWERS[(i + 3 * k) % len(ANSWERS)]})
    turns[-1]["content"] += " paris ."  # the last assistant turn is unlike any other
    return turns


def write_dataset(path: Path, n: int = 12) -> Path:
    path.write_text("".join(json.dumps({"messages": conversation(i)}) + "\n" for i in range(n)))
    return path


@pytest.fixture
def selected(tmp_path):
    """A random selection (8 of 12) of the multi-turn set through the select stage; (cfg, run_dir)."""
    data = write_dataset(tmp_path / "chats.jsonl")
    cfg = make_cfg(tmp_path, "selection=random", "selection.size=8", f"data.path={data}", "train.sft.max_length=128",
                   "train.sft.max_steps=2")
    assert cfg["selection"]["_target_"] == "thtb.methods.random.RandomSelection"
    run_dir = Path(cfg["paths"]["run_dir"])
    run_select(cfg, run_dir)
    return cfg, run_dir


def source_conversations(path: Path) -> dict[str, list[dict[str, str]]]:
    records, _ = load_records(path)
    return {i: [dict(t) for t in m] for i, m in zip(records["id"], records["messages"], strict=True)}


def assistant_spans(tokenizer, ids: list[int]) -> list[list[int]]:
    """Token positions of each assistant turn's content and its ``</s>`` (the template's generation spans)."""
    start_tok, end_tok = tokenizer.convert_tokens_to_ids("<|assistant|>"), tokenizer.convert_tokens_to_ids("</s>")
    spans = []
    for j, tok in enumerate(ids):
        if tok == start_tok:
            end = next(k for k in range(j + 1, len(ids)) if ids[k] == end_tok)
            spans.append(list(range(j + 1, end + 1)))
    return spans


def test_training_reads_the_whole_conversation_with_the_selections_ids(tmp_path, selected):
    cfg, run_dir = selected
    subset_ids = [json.loads(line)["id"] for line in (run_dir / "selection" / "subset.jsonl").read_text().splitlines()]
    assert len(subset_ids) == 8
    plan = plan_training(cfg, run_dir)
    assert plan.data.source.endswith("subset_messages.jsonl")
    assert plan.data.records["id"].tolist() == subset_ids and plan.data.digest == ids_digest(subset_ids)
    assert plan.data.info["n_multi_turn"] == 8
    source = source_conversations(tmp_path / "chats.jsonl")
    examples = plan.train_examples + plan.eval_examples
    assert plan.mask == "assistant" and len(examples) == 8
    trained = sorted(json.dumps(e["messages"]) for e in examples)
    assert trained == sorted(json.dumps(source[i]) for i in subset_ids)  # 7 turns each, system included
    assert all(len(e["messages"]) == 7 and e["messages"][0]["role"] == "system" for e in examples)


@pytest.mark.parametrize("mask", ["assistant", "completion"])
def test_every_turn_is_tokenised_and_every_assistant_turn_carries_labels(tmp_path, selected, mask):
    cfg, run_dir = selected
    if mask == "completion":  # the template without {% generation %}: the prompt/completion fallback
        plain = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
        (tmp_path / "plain.jinja").write_text(plain)
        cfg["model"]["chat_template"] = str(tmp_path / "plain.jinja")
    plan = plan_training(cfg, run_dir)
    assert plan.mask == mask
    trainer, _ = build_trainer(cfg, plan, tmp_path / "out")
    n = len(trainer.train_dataset)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(n)])
    tok = plan.tokenizer
    for row, example in enumerate(plan.train_examples):
        conv = example["messages"] if mask == "assistant" else example["prompt"] + example["completion"]
        assert len(conv) == 7
        ids = tok.apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"]
        assert batch["input_ids"][row, : len(ids)].tolist() == ids  # the whole conversation, nothing cut
        text = tok.decode(ids).replace(" ", "")
        for turn in conv:
            assert f"<|{turn['role']}|>{turn['content']}</s>".replace(" ", "") in text
        spans = assistant_spans(tok, ids)
        assert len(spans) == 3
        labels = batch["labels"][row]
        carried = (labels != -100).nonzero().flatten().tolist()
        # assistant-only loss: every assistant turn; the prompt/completion fallback: the last one only
        expected = [p for span in spans for p in span] if mask == "assistant" else spans[-1]
        assert carried == expected, tok.convert_ids_to_tokens(ids)
        assert labels[carried].tolist() == [ids[p] for p in carried]
        last = tok.decode([ids[p] for p in spans[-1]]).replace(" ", "")
        assert last == (conv[-1]["content"] + "</s>").replace(" ", "") and "paris" in conv[-1]["content"]


def test_a_selected_multi_turn_subset_trains_through_the_stage(selected):
    cfg, run_dir = selected
    summary = run_train(cfg, run_dir)
    assert summary["steps"] == 2 and summary["dataset"].endswith("subset_messages.jsonl")
    assert summary["n_multi_turn"] == summary["n_rows"] == 8 and summary["train_loss"] > 0


def _cfg(**train) -> dict:
    """The paper recipe's ``train`` block (``conf/train/lora_paper.yaml``) with ``train`` over it."""
    recipe = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "train" / "lora_paper.yaml"))
    return {"train": {**recipe, **train}, "fidelity": "reference"}


def test_repeated_samples_keep_the_selections_ids(tmp_path):
    """Exact repeats get ``-dupK`` ids in source order; a subset listing them in another order keeps its ids."""
    rows = [{"query": "what is the capital of france ?", "response": "paris ."},
            {"query": "list three primary colours :", "response": "red blue yellow ."},
            {"query": "what is the capital of france ?", "response": "paris ."}]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, _ = load_records(tmp_path / "data.jsonl")
    first, other, repeat = records["id"].tolist()
    assert repeat == f"{first}-dup1"
    subset = records.set_index("id").loc[[repeat, other, first]].reset_index()  # the repeat ranked first
    run_dir = tmp_path / "run"
    write_jsonl(subset, run_dir / "selection" / "subset.jsonl")
    write_messages_jsonl(subset, run_dir / "selection" / "subset_messages.jsonl")
    data = load_train_data(_cfg(), run_dir)
    assert data.records["id"].tolist() == [repeat, other, first]
    assert data.digest == ids_digest([repeat, other, first])


def test_subset_files_that_disagree_fail_clearly(tmp_path):
    run_dir = tmp_path / "run"
    frame = load_records(write_dataset(tmp_path / "chats.jsonl", 4))[0]
    write_jsonl(frame.iloc[:3], run_dir / "selection" / "subset.jsonl")
    write_messages_jsonl(frame.iloc[1:], run_dir / "selection" / "subset_messages.jsonl")  # a stale file
    with pytest.raises(ValueError, match="subset_messages.jsonl.*subset.jsonl.*select stage"):
        load_train_data(_cfg(), run_dir)


def test_a_selection_without_the_messages_file_still_trains_on_its_pairs(tmp_path):
    run_dir = tmp_path / "run"
    frame = load_records(write_dataset(tmp_path / "chats.jsonl", 4))[0]
    write_jsonl(frame, run_dir / "selection" / "subset.jsonl")
    data = load_train_data(_cfg(), run_dir)
    assert data.source.endswith("subset.jsonl") and data.records["id"].tolist() == frame["id"].tolist()


def test_a_limited_run_reads_the_first_rows_of_both_files(tmp_path):
    run_dir = tmp_path / "run"
    frame = load_records(write_dataset(tmp_path / "chats.jsonl", 4))[0]
    write_jsonl(frame, run_dir / "selection" / "subset.jsonl")
    write_messages_jsonl(frame, run_dir / "selection" / "subset_messages.jsonl")
    data = load_train_data(_cfg(limit=2), run_dir)
    assert data.records["id"].tolist() == frame["id"].tolist()[:2] and len(data.records["messages"][1]) == 7
