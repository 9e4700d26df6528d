"""The ``train`` stage: LoRA SFT of a base model on the selected subset (or any dataset) with TRL + PEFT.

Outputs ``<run_dir>/train/{adapter,merged,summary.json}``, links into the content-addressed artifact
``<paths.cache_dir>/artifacts/train/<fingerprint>/`` (so an identical training is never repeated); the README's
"Training" section describes them. Every check that can fail runs before any weight is loaded
(:func:`plan_training`); an interrupted run resumes from the newest complete checkpoint (:func:`resume_point`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thtb import __version__
from thtb.io import atomic_write_text
from thtb.cost import stage_cost, visible_devices
from thtb.data.loaders import data_source_problem, dataset_source
from thtb.provenance import environment, model_revision
from thtb.tracking import Tracker
from thtb.train.args import (accumulation, lora_config, method_name, pick_options, pick_precision, run_name, sft_args,
                             sft_config, world_size)
from thtb.artifacts import check_free_space
from thtb.train.artifacts import (TrainingWorkspace, link_outputs, record_artifact, train_fingerprint,
                                  training_provenance, training_space_needed)
from thtb.train.data import (TrainData, conversations, eval_split, fit_to_length, load_train_data, pick_loss_mask,
                             to_example, token_lengths)
from thtb.train.models import load_model, load_tokenizer, resolve_model

log = logging.getLogger(__name__)


@dataclass
class TrainingPlan:
    """Everything decided before any weights load: data, model, examples, split, batch arithmetic, identity."""

    data: TrainData
    model_path: str
    tokenizer: Any
    precision: str
    world: int
    accum: int
    mask: str
    train_examples: list[dict]
    eval_examples: list[dict]
    lengths: dict
    key: str
    name: str

    def meta(self, cfg: dict[str, Any]) -> dict[str, Any]:
        train, model_cfg = cfg["train"], cfg["model"]
        return {
            "fingerprint": self.key, "subset_fingerprint": self.data.digest,
            "selection_fingerprint": self.data.selection_fingerprint, "dataset": self.data.source,
            "n_rows": len(self.data.records), "data_format": self.data.info.get("format"),
            "n_multi_turn": self.data.info.get("n_multi_turn"), "n_train": len(self.train_examples),
            "n_eval": len(self.eval_examples), "lengths": self.lengths,
            "model": {"name": model_cfg.get("name"), "path": self.model_path, "size": model_cfg.get("size"),
                      "revision": model_revision(self.model_path)},
            "loss_mask": self.mask, "precision": self.precision, "seed": int(cfg["seed"]),
            "effective_batch_size": int(train["effective_batch_size"]),
            "per_device_train_batch_size": int(train["sft"]["per_device_train_batch_size"]),
            "gradient_accumulation_steps": self.accum, "world_size": self.world, "train_config": dict(train),
            "thtb_version": __version__, "environment": environment(),
        }


def run_provenance(cfg: dict[str, Any], run_dir: Path, train_summary: dict[str, Any]) -> dict[str, Any]:
    """What produced this run's model: the selection behind its data (this run's ``selection/summary.json``; a
    dataset given with ``train.dataset`` has none), the training recipe and model, the environment."""
    dataset = (cfg.get("train") or {}).get("dataset")
    sel_summary = Path(run_dir) / "selection" / "summary.json"
    selection = None
    if dataset:
        selection = {"method": method_name(cfg, False), "source": str(dataset), "scorers": {}, "scorer_setup": "none"}
    elif sel_summary.is_file():
        selection = (json.loads(sel_summary.read_text(encoding="utf-8")).get("provenance") or {}).get("selection")
    return {"selection": selection, "training": training_provenance(cfg, train_summary), **environment()}


def plan_training(cfg: dict[str, Any], run_dir: Path) -> TrainingPlan:
    """Every check that can fail, before any weight loads: dataset, model, batch arithmetic, lengths."""
    train, model_cfg, seed = dict(cfg["train"]), cfg.get("model"), int(cfg["seed"])
    sft = sft_args(train)  # a derived argument set in train.sft stops the run here
    data = load_train_data(cfg, Path(run_dir))
    model_path = resolve_model(model_cfg, Path(cfg["paths"]["cache_dir"]))
    precision = pick_precision(train["precision"])
    world = world_size()
    accum = accumulation(train, world)
    tokenizer = load_tokenizer(model_path, model_cfg)
    mask = pick_loss_mask(train["loss_mask"], tokenizer.chat_template)
    convs = conversations(data.records, train["system_prompt"])
    full, prompt = token_lengths(tokenizer, convs)
    keep, lengths = fit_to_length(convs, full, prompt, int(sft["max_length"]))
    train_idx, eval_idx = eval_split(len(keep), float(train["eval_fraction"]), seed)
    examples = [to_example(convs[i], mask) for i in keep]
    key = train_fingerprint(data_digest=data.content_digest, model={**model_cfg, "revision": model_revision(model_path)},
                            train=train, seed=seed, precision=precision, loss_mask=mask, n_train=len(train_idx))
    return TrainingPlan(data=data, model_path=model_path, tokenizer=tokenizer, precision=precision, world=world,
                        accum=accum, mask=mask, train_examples=[examples[i] for i in train_idx],
                        eval_examples=[examples[i] for i in eval_idx], lengths=lengths, key=key,
                        name=run_name(cfg, not train.get("dataset")))


def run_train(cfg: dict[str, Any], run_dir: Path, tracker: Tracker | None = None, *,
              callbacks: list | None = None) -> dict[str, Any]:
    """Run the train stage from a resolved config dict; returns the run's training summary. ``callbacks``: extra
    ``transformers.TrainerCallback`` instances (tests, custom monitoring)."""
    from accelerate import PartialState

    tracker = tracker or Tracker()
    start = time.perf_counter()
    run_dir = Path(run_dir)
    train = cfg["train"]
    plan = plan_training(cfg, run_dir)
    log.info("train: %d examples from %s (%d held out), model %s, loss mask %s, %s, effective batch %d = %d × %d × %d",
             len(plan.train_examples), plan.data.source, len(plan.eval_examples), plan.model_path, plan.mask,
             plan.precision, int(train["effective_batch_size"]), int(train["sft"]["per_device_train_batch_size"]),
             plan.accum, plan.world)
    store = TrainingWorkspace(cfg["paths"]["cache_dir"], plan.key)
    state = PartialState()
    reused = store.is_complete()
    if reused:
        log.info("train: reusing finished artifact %s", store.final)
    else:
        # one process trains a fingerprint at a time (a concurrent sweep job waits, then reuses its result)
        with store.lock(enabled=state.is_main_process):
            state.wait_for_everyone()
            reused = store.is_complete()
            if not reused:
                if state.is_main_process:
                    check_free_space(store.root, training_space_needed(plan.model_path, bool(train["merge"])),
                                     f"training {plan.key}")
                _train(cfg, store, plan, state, callbacks=callbacks)
            state.wait_for_everyone()

    summary = json.loads((store.final / TrainingWorkspace.SUMMARY).read_text())
    summary.update({"reused": reused, "artifact": str(store.final), "run_name": plan.name,
                    "stage_wall_time_s": round(time.perf_counter() - start, 3),
                    "provenance": run_provenance(cfg, run_dir, summary)})
    if state.is_main_process:
        out = run_dir / "train"
        link_outputs(store.final, out)
        record_artifact(cfg["paths"]["cache_dir"], {
            "fingerprint": plan.key, "experiment": cfg.get("experiment_name"), "method": method_name(cfg),
            "model": (cfg.get("model") or {}).get("name"), "seed": int(cfg["seed"]), "train": train.get("name"),
            "run_dir": str(run_dir), "reused": reused,
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n")
        _log_to_tracker(tracker, summary, plan.name)
    log.info("train: %s (%s) → %s", "reused" if reused else "trained", plan.key, run_dir / "train")
    return summary


def build_trainer(cfg: dict[str, Any], plan: TrainingPlan, output_dir: str | Path, *,
                  train_examples: list[dict] | None = None, callbacks: list | None = None):
    """The ``SFTTrainer`` (LoRA via ``peft_config``) for a plan; returns ``(trainer, options)``."""
    from datasets import Dataset
    from trl import SFTTrainer

    train, model_cfg = cfg["train"], cfg["model"]
    options = pick_options(train)
    wandb = (cfg.get("logger") or {}).get("backend") == "wandb"
    examples = plan.train_examples if train_examples is None else train_examples
    args = sft_config(train, output_dir=str(output_dir), seed=int(cfg["seed"]), precision=plan.precision,
                      options=options, assistant_only=plan.mask == "assistant", world=plan.world,
                      report_to=["wandb"] if wandb else "none", run_name=plan.name, has_eval=bool(plan.eval_examples))
    model = load_model(plan.model_path, model_cfg, precision=plan.precision,
                       attn_implementation=options.attn_implementation)
    if args.gradient_checkpointing and not getattr(model, "supports_gradient_checkpointing", False):
        options.notes.append(f"gradient_checkpointing: {type(model).__name__} does not support it; off")
        log.warning("train option unavailable — %s", options.notes[-1])
        args.gradient_checkpointing = False
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(examples),
                         eval_dataset=Dataset.from_list(plan.eval_examples) if plan.eval_examples else None,
                         processing_class=plan.tokenizer, peft_config=lora_config(train),
                         callbacks=[progress_callback(), *(callbacks or [])])
    return trainer, options


def progress_callback():
    """A ``TrainerCallback`` that logs the total number of optimizer steps when training starts and, at every
    logging step, ``step i/N (p%), elapsed, ETA`` (the trainer's own progress bar is off in non-TTY logs)."""
    from transformers import TrainerCallback

    class StepsAndETA(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start, self.first = time.perf_counter(), state.global_step
            log.info("train: %d optimizer steps (%s epoch(s), effective batch %d)%s", state.max_steps,
                     f"{args.num_train_epochs:g}" if args.max_steps <= 0 else "max_steps",
                     args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size),
                     f", resuming at step {state.global_step}" if state.global_step else "")

        def on_log(self, args, state, control, logs=None, **kwargs):
            done, total = state.global_step, max(state.max_steps, 1)
            if done <= max(self.first, getattr(self, "last", -1)):  # the end-of-training logs repeat the last step
                return
            self.last = done
            elapsed = time.perf_counter() - self.start
            eta = elapsed / (done - self.first) * (total - done)
            log.info("train: step %d/%d (%.0f%%), %.0f s elapsed, ETA %.0f s", done, total, 100 * done / total,
                     elapsed, eta)

    return StepsAndETA()


def _train(cfg: dict[str, Any], store: TrainingWorkspace, plan: TrainingPlan, state, *,
           callbacks: list | None = None) -> None:
    """Train into the store's partial folder (resuming from its last checkpoint) and commit it; ``state``:
    accelerate's ``PartialState``."""
    train, model_cfg = cfg["train"], cfg["model"]
    partial = store.start()
    trainer, options = build_trainer(cfg, plan, store.checkpoints, callbacks=callbacks)
    trainable, total = trainer.model.get_nb_trainable_parameters()
    resume, skipped = resume_point(store, state)
    tokens_before = _tokens_in_checkpoint(resume)
    wall = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    wall = time.perf_counter() - wall
    eval_metrics = trainer.evaluate() if plan.eval_examples else {}
    adapter = partial / "adapter"
    trainer.save_model(str(adapter))
    if state.is_main_process:
        plan.tokenizer.save_pretrained(str(adapter))
        if train["merge"]:
            merge_adapter(plan.model_path, model_cfg, adapter, partial / "merged", precision=plan.precision,
                          tokenizer=plan.tokenizer)
        tokens = int(trainer.state.num_input_tokens_seen or 0)
        devices = visible_devices()  # the devices training held: one GPU per process on CUDA, else the CPU host
        if devices["kind"] == "cuda":
            devices = {**devices, "count": max(1, int(plan.world))}
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h] or [None]
        summary = {
            **plan.meta(cfg), "train_loss": result.training_loss,
            "train_loss_first_logged": losses[0], "train_loss_last_logged": losses[-1],
            "eval_loss": eval_metrics.get("eval_loss"), "steps": int(trainer.state.global_step),
            "epochs": float(trainer.state.epoch or 0.0), "tokens_seen": tokens,
            "tokens_per_s": round((tokens - tokens_before) / wall, 2) if wall > 0 else None,
            "train_wall_time_s": round(wall, 3),
            "cost": stage_cost(wall, devices=devices, tokens=tokens, token_kind="trained"),
            "resumed_from": str(resume) if resume else None, "skipped_checkpoints": skipped,
            "trainable_parameters": int(trainable), "total_parameters": int(total),
            "options": {"gradient_checkpointing": trainer.args.gradient_checkpointing, "packing": trainer.args.packing,
                        "liger": options.liger, "attn_implementation": options.attn_implementation,
                        "unavailable": options.notes},
            "log_history": trainer.state.log_history,
        }
        atomic_write_text(partial / TrainingWorkspace.SUMMARY, json.dumps(summary, indent=2, default=str) + "\n")
        store.commit(keep_checkpoints=bool(train["keep_checkpoints"]))


def resume_point(store: TrainingWorkspace, state) -> tuple[Path | None, list[dict[str, str]]]:
    """The newest complete checkpoint to resume from (``None``: a fresh start), and the incomplete ones skipped
    — each set aside as ``incomplete-checkpoint-N`` (by the main process, after every process has looked) so
    neither the trainer's resume nor its checkpoint rotation sees it again; ``[{checkpoint, reason, moved_to}]``."""
    resume, incomplete = store.scan_checkpoints()
    state.wait_for_everyone()
    skipped = []
    if state.is_main_process:
        for path, reason in incomplete:
            moved = store.set_aside(path)
            log.warning("train: checkpoint %s is incomplete (%s): not resuming from it; set aside as %s",
                        path, reason, moved.name)
            skipped.append({"checkpoint": str(path), "reason": reason, "moved_to": str(moved)})
        if resume:
            log.info("train: resuming from %s", resume)
        elif incomplete:
            log.warning("train: no complete checkpoint in %s: training from the start", store.checkpoints)
    state.wait_for_everyone()
    return resume, skipped


def merge_adapter(base_path: str, model_cfg: dict, adapter: Path, out: Path, *, precision: str, tokenizer) -> None:
    """Base model + LoRA adapter → ``merge_and_unload`` → a plain model folder (with the tokenizer)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, "auto")
    base = AutoModelForCausalLM.from_pretrained(base_path, revision=model_cfg.get("revision"), dtype=dtype,
                                                trust_remote_code=bool(model_cfg["trust_remote_code"]))
    PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def _tokens_in_checkpoint(checkpoint: Path | None) -> int:
    state = checkpoint / "trainer_state.json" if checkpoint else None
    return int(json.loads(state.read_text()).get("num_input_tokens_seen") or 0) if state and state.is_file() else 0


def _log_to_tracker(tracker: Tracker, summary: dict, name: str) -> None:
    keys = ("train_loss", "eval_loss", "steps", "tokens_seen", "tokens_per_s", "train_wall_time_s",
            "effective_batch_size", "gradient_accumulation_steps", "world_size", "trainable_parameters", "reused")
    tracker.log_summary({**{f"train/{k}": summary.get(k) for k in keys if summary.get(k) is not None},
                         "train/provenance": summary.get("provenance"), "train/cost": summary.get("cost"),
                         "train/fingerprint": summary["fingerprint"], "train/run_name": name,
                         "train/subset_fingerprint": summary["subset_fingerprint"]})
    run = getattr(tracker, "run", None)
    if run is not None:  # W&B: name the run after experiment, method, model size and seed
        try:
            run.name = name
        except Exception:  # noqa: BLE001 — naming is cosmetic, never fail a finished training on it
            log.debug("could not rename the W&B run", exc_info=True)


def preflight(cfg: dict[str, Any], run_dir: Path, stages: list[str]) -> list[str]:
    """Every problem the train stage would hit, found before the run's first stage: the base model (resolvable;
    in the local cache when offline), the training data when no select stage of this run writes it."""
    problems = []
    try:
        resolve_model(cfg.get("model"), Path(cfg["paths"]["cache_dir"]))
    except (ValueError, FileNotFoundError, OSError) as exc:
        problems.append(f"train: {exc}")
    if "select" not in stages or cfg["train"].get("dataset"):
        try:
            source = dataset_source(cfg, Path(run_dir))
        except FileNotFoundError as exc:
            problems.append(f"train: {exc}")
        else:
            if problem := data_source_problem(source):
                problems.append(f"train: train.dataset={source} {problem}")
    return problems
