"""Reward-model quality scorers on a tiny, randomly initialised local Llama reward model."""

from __future__ import annotations

import math
import random
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from tests.helpers import REFERENCE, shared_file
from thtb.scorers.base import QualityScorer  # noqa: E402
from thtb.scorers.reward import (  # noqa: E402
    INTERNLM2_REWARD_TOKEN,
    InternLM2Reward,
    SequenceClassificationReward,
)

ROOT = Path(__file__).resolve().parents[1]
SPECIALS = ["[UNK]", "<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", INTERNLM2_REWARD_TOKEN]
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {{ eos_token }} "
    "{% endfor %}"
)


def _words(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = set()
    while len(words) < n:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(2, 7))))
    return sorted(words)


VOCAB = _words(300)


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory) -> Path:
    """A tiny LlamaForSequenceClassification + a locally trained WordLevel tokenizer, on disk.

    Like InternLM2's tokenizer (``add_bos_token=True``), ``tok(text)`` prepends ``<s>`` (its template
    writes one too), so ``add_special_tokens`` changes the ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator([" ".join(VOCAB)] * 3, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    bos = ("<s>", raw.token_to_id("<s>"))
    raw.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[bos])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="[UNK]", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=["<|user|>", "<|assistant|>", INTERNLM2_REWARD_TOKEN],
    )
    tok.chat_template = TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=512, num_labels=1, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    model = LlamaForSequenceClassification(config).eval()
    path = tmp_path_factory.mktemp("tiny_rm")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def reference(tiny_rm):
    """One-by-one, unpadded forward pass: the ground truth for the batched scorer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_rm)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_rm, dtype=torch.float32).eval()

    def score_one(query: str, response: str, reward_token: bool = False, add_special_tokens: bool = False) -> float:
        chat = [{"role": "user", "content": query}, {"role": "assistant", "content": response}]
        text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=False)
        ids = tok(text, add_special_tokens=add_special_tokens)["input_ids"]
        assert ids.count(tok.bos_token_id) == (2 if add_special_tokens else 1)
        if reward_token:
            ids = ids + [tok.convert_tokens_to_ids(INTERNLM2_REWARD_TOKEN)]
        with torch.inference_mode():
            return float(model(input_ids=torch.tensor([ids])).logits[0, 0])

    return score_one


@pytest.fixture(scope="module")
def pairs() -> tuple[list[str], list[str]]:
    rng = random.Random(1)
    lengths = [5, 40, 0, 17, 3, 60, 11, 25, 1, 33]  # unsorted, so batches reorder the input
    queries = [_text(rng, rng.randint(1, 12)) for _ in lengths]
    responses = [_text(rng, n) for n in lengths]
    return queries, responses


def _scorer(path: Path, **kwargs) -> SequenceClassificationReward:
    kwargs.setdefault("batch_size", 3)
    return SequenceClassificationReward(model=str(path), device="cpu", show_progress=False, **kwargs)


def test_batched_scores_match_one_by_one_reference(tiny_rm, reference, pairs):
    queries, responses = pairs
    scorer = _scorer(tiny_rm)
    assert not scorer.loaded  # lazy
    frame = scorer.score(queries, responses)
    assert scorer.loaded
    assert list(frame.columns[:3]) == ["quality_raw", "quality_reason", "error"]
    assert len(frame) == len(queries)
    assert frame["error"].isna().all()
    raw = frame["quality_raw"].to_numpy()
    assert np.isfinite(raw).all() and raw.dtype == np.float64
    expected = np.array([reference(q, r) for q, r in zip(queries, responses)])
    np.testing.assert_allclose(raw, expected, atol=1e-5, rtol=0)
    assert np.ptp(raw) > 1e-4  # distinct scores, so an order mix-up could not pass
    assert frame["quality_reason"].str.startswith("reward ").all()


def test_deterministic_and_batch_size_invariant(tiny_rm, pairs):
    queries, responses = pairs
    a = _scorer(tiny_rm, batch_size=4).score(queries, responses)["quality_raw"].to_numpy()
    b = _scorer(tiny_rm, batch_size=4).score(queries, responses)["quality_raw"].to_numpy()
    c = _scorer(tiny_rm, batch_size=1).score(queries, responses)["quality_raw"].to_numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-5, rtol=0)


def test_empty_response_is_scored(tiny_rm, reference):
    frame = _scorer(tiny_rm).score(["tell me", "", "x"], ["", "", None])
    assert frame["error"].isna().all()
    assert np.isfinite(frame["quality_raw"]).all()
    assert frame["quality_raw"][0] == pytest.approx(reference("tell me", ""), abs=1e-5)


def test_length_mismatch_and_empty_input(tiny_rm):
    scorer = _scorer(tiny_rm)
    with pytest.raises(ValueError):
        scorer.score(["a"], [])
    frame = scorer.score([], [])
    assert len(frame) == 0 and {"quality_raw", "quality_reason", "error"} <= set(frame.columns)


def test_normalization_attribute():
    assert SequenceClassificationReward(model="x").normalization == "minmax"
    assert SequenceClassificationReward(model="x", normalization="reward_clip").normalization == "reward_clip"
    assert InternLM2Reward().normalization == "reward_clip"
    assert isinstance(InternLM2Reward(), QualityScorer)
    with pytest.raises(ValueError):
        SequenceClassificationReward(model="x", normalization="zscore")


def _poison_forward(model, poison_id: int, fail_batches: bool = False):
    """Wrap ``model.forward``: raise for any input holding ``poison_id`` (or any batch > 1)."""
    original = model.forward
    calls: list[int] = []

    def forward(*args, input_ids=None, **kwargs):
        calls.append(int(input_ids.shape[0]))
        if (input_ids == poison_id).any():
            raise RuntimeError("CUDA out of memory (simulated)")
        if fail_batches and input_ids.shape[0] > 1:
            raise RuntimeError("CUDA out of memory (simulated batch)")
        return original(*args, input_ids=input_ids, **kwargs)

    return forward, calls


def test_failing_batch_retried_and_failing_sample_gets_error(tiny_rm, reference, pairs, monkeypatch):
    queries, responses = list(pairs[0]), list(pairs[1])
    poison = VOCAB[-1]
    responses[3] = responses[3] + " " + poison
    scorer = _scorer(tiny_rm)
    poison_id = scorer.tokenizer.convert_tokens_to_ids(poison)
    forward, calls = _poison_forward(scorer.model, poison_id)
    monkeypatch.setattr(scorer.model, "forward", forward)
    frame = scorer.score(queries, responses)
    assert 1 in calls and 3 in calls  # batched, then one-by-one retries
    assert frame["error"][3] is not None and "out of memory" in frame["error"][3]
    assert math.isnan(frame["quality_raw"][3])  # no default value
    ok = frame.drop(index=3)
    assert ok["error"].isna().all()
    expected = [reference(q, r) for i, (q, r) in enumerate(zip(queries, responses)) if i != 3]
    np.testing.assert_allclose(ok["quality_raw"].to_numpy(), expected, atol=1e-5, rtol=0)


def test_every_batch_failing_recovers_one_by_one(tiny_rm, reference, pairs, monkeypatch):
    queries, responses = pairs
    scorer = _scorer(tiny_rm)
    forward, _ = _poison_forward(scorer.model, poison_id=-1, fail_batches=True)
    monkeypatch.setattr(scorer.model, "forward", forward)
    frame = scorer.score(queries, responses)
    assert frame["error"].isna().all()
    expected = [reference(q, r) for q, r in zip(queries, responses)]
    np.testing.assert_allclose(frame["quality_raw"].to_numpy(), expected, atol=1e-5, rtol=0)


def test_truncation_noted_or_error(tiny_rm, pairs):
    queries, responses = pairs
    long_q, long_r = queries[5], responses[5]  # 60-word response
    scorer = _scorer(tiny_rm, max_length=30)
    ids, note = scorer.encode(long_q, long_r)
    assert len(ids) <= 30 and note.startswith("truncated: response −")
    assert ids[-1] == scorer.tokenizer.eos_token_id  # the template's closing tokens survive
    frame = scorer.score([long_q, "hi"], [long_r, "ok"])
    assert frame["error"].isna().all() and np.isfinite(frame["quality_raw"]).all()
    assert "truncated" in frame["quality_reason"][0] and "truncated" not in frame["quality_reason"][1]

    strict = _scorer(tiny_rm, max_length=30, truncate=False).score([long_q, "hi"], [long_r, "ok"])
    assert "max_length" in strict["error"][0] and math.isnan(strict["quality_raw"][0])
    assert strict["error"][1] is None and np.isfinite(strict["quality_raw"][1])


def test_internlm2_input_construction(tiny_rm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_rm)
    reward_id = tok.convert_tokens_to_ids(INTERNLM2_REWARD_TOKEN)
    ref = InternLM2Reward(model=str(tiny_rm))
    ref._tokenizer = tok  # attach the tokenizer only: no model load
    ids, note = ref.encode("what is up", "not much")
    assert note == ""
    assert ids[-1] == reward_id and ids.count(reward_id) == 1
    assert ids.count(tok.bos_token_id) == 1  # template writes <s>; no second one added
    assert ids[-2] == tok.eos_token_id
    authors = InternLM2Reward(model=str(tiny_rm), last_logit=True)
    authors._tokenizer = tok
    ids2, _ = authors.encode("what is up", "not much")
    # exactly what the authors' _local_model_inference feeds the model: tok(text) with its defaults
    conv = [{"role": "user", "content": "what is up"}, {"role": "assistant", "content": "not much"}]
    assert ids2 == tok(tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=False))["input_ids"]
    assert ids2 == [tok.bos_token_id, *ids[:-1]] and reward_id not in ids2  # double <s>, no reward token
    # max_length counts the reward token
    short = InternLM2Reward(model=str(tiny_rm), max_length=12)
    short._tokenizer = tok
    ids3, note3 = short.encode("what is up", " ".join(VOCAB[:20]))
    assert len(ids3) <= 12 and ids3[-1] == reward_id and "truncated" in note3


def test_internlm2_batched_path_reads_score_at_reward_token(tiny_rm, reference, pairs, monkeypatch):
    """Run InternLM2Reward end to end with the tiny seq-class model standing in for the remote code
    (whose forward, like Llama's head on right-padded input, reads the last attended position)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    def fake_load(self, torch_dtype):
        return (
            AutoTokenizer.from_pretrained(tiny_rm),
            AutoModelForSequenceClassification.from_pretrained(tiny_rm, dtype=torch_dtype),
        )

    monkeypatch.setattr(InternLM2Reward, "_load", fake_load)
    queries, responses = pairs
    for last_logit in (False, True):
        scorer = InternLM2Reward(
            model=str(tiny_rm), last_logit=last_logit, batch_size=4, device="cpu", show_progress=False
        )
        frame = scorer.score(queries, responses)
        assert frame["error"].isna().all()
        expected = [
            reference(q, r, reward_token=not last_logit, add_special_tokens=last_logit)
            for q, r in zip(queries, responses)
        ]
        np.testing.assert_allclose(frame["quality_raw"].to_numpy(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "rel, cls",
    [("reward/skywork.yaml", SequenceClassificationReward), ("reward/internlm2_7b.yaml", InternLM2Reward)],
)
def test_reward_configs_instantiate_lazily(rel, cls):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    scorer = instantiate(OmegaConf.load(ROOT / "conf" / rel))
    assert isinstance(scorer, cls) and not scorer.loaded
    assert scorer.normalization == ("reward_clip" if cls is InternLM2Reward else "minmax")
    if cls is InternLM2Reward:
        assert scorer.trust_remote_code and not scorer.last_logit


def test_skywork_config_scores_a_local_model(tiny_rm, reference):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "reward" / "skywork.yaml")
    scorer = instantiate(cfg, model=str(tiny_rm), device="cpu", show_progress=False)
    frame = scorer.score(["q one"], ["a b c"])
    assert frame["quality_raw"][0] == pytest.approx(reference("q one", "a b c"), abs=1e-5)


def test_bge_embedder_config_instantiates_lazily():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from thtb.scorers.embedder import SentenceTransformerEmbedder

    emb = instantiate(OmegaConf.load(ROOT / "conf" / "embedder" / "bge_large.yaml"))
    assert isinstance(emb, SentenceTransformerEmbedder) and emb._model is None
    assert (emb.model_name, emb.pooling, emb.max_seq_length, emb.batch_size, emb.device) == (
        "BAAI/bge-large-en-v1.5", "cls", 512, 64, None,
    )


def test_last_logit_feeds_the_model_what_the_authors_script_feeds_it(tiny_rm):
    """Oracle: the authors' own ``_local_model_inference`` (../shared/reference/thtb_authors/reward_score/
    reward_score.py, run unchanged with a recording stand-in for the 7B model) sees exactly our input ids."""
    import importlib.util

    import torch
    from transformers import AutoTokenizer

    path = shared_file("thtb_authors", "reward_score", "reward_score.py", base=REFERENCE)
    spec = importlib.util.spec_from_file_location("thtb_authors_reward_score", path)
    authors_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(authors_module)

    class Recorder:  # the model: records its input, returns a known last logit
        def __call__(self, **inputs):
            self.ids = inputs["input_ids"][0].tolist()
            return types.SimpleNamespace(logits=torch.full((1, len(self.ids)), 2.5))

    tok = AutoTokenizer.from_pretrained(tiny_rm)
    ours = InternLM2Reward(model=str(tiny_rm), last_logit=True)
    ours._tokenizer = tok
    for query, response in [("what is up", "not much"), ("say hi\nnan", "hi there friend")]:
        model = Recorder()
        raw, normalized = authors_module._local_model_inference(query, response, model, tok, 0)
        assert model.ids == ours.encode(query, response)[0]
        assert (float(raw), normalized) == (2.5, 0.75)  # clip((r + 5) / 10, 0, 1)
