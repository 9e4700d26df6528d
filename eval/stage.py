"""The ``eval`` stage: MMLU-Pro, the pairwise (AlpacaEval-style) win rate and the exam, for the trained model.

Outputs, under ``<run_dir>/eval/``:

- ``sanity.json``         how the model was checked to differ from its base (the stage refuses otherwise)
- ``mmlu_pro.json`` / ``mmlu_pro_samples.jsonl``   per-category and question-weighted accuracy, parse failures,
  model and data fingerprints, lm-eval version / one row per question
- ``pairwise.json`` / ``pairwise_samples.jsonl``   win rate (tie 0 and tie ½) with bootstrap CIs per subset and
  overall, position consistency, mean lengths, judge and prompt version, failures / one row per prompt
- ``exam.json`` / ``exam_samples.jsonl``           exam accuracy overall and per question type
- ``summary.json``        the run line below, plus where everything is; ``mmlu_pro_categories.png`` a bar chart

and one JSON line appended to ``<eval.results_dir>/<experiment>.jsonl`` (the run line the paper tables read:
experiment, method, model, size, seed, subset fingerprint, metrics in percent). Everything is also logged to
W&B (metrics, the bar chart, per-question tables) when a logger is on.

Which model: ``eval.model=trained`` (default) is the train stage's merged model of this run; ``base`` is the
untrained base model (a "vanilla" row); a folder evaluates that folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from thtb import __version__
from thtb.artifacts import MANIFEST, StageArtifact, copy_outputs
from thtb.cost import run_cost, stage_cost
from thtb.eval import harness, run_exam, run_mmlu_pro
from thtb.eval.mmlu_pro import config_kwargs, data_fingerprint
from thtb.eval.protocol import eval_provenance
from thtb.eval.sanity import check_trained
from thtb.fingerprint import fingerprint
from thtb.io import atomic_write_text, read_jsonl
from thtb.provenance import environment, stage_key_inputs
from thtb.tracking import Tracker

log = logging.getLogger(__name__)

TASKS = ("mmlu_pro", "pairwise", "exam")
BASELINE_KINDS = ("run", "base", "model", "outputs")


class EvalConfigError(ValueError):
    """The eval config cannot work (checked before any model loads)."""


# --------------------------------------------------------------------------------------- models
def base_model_path(cfg: dict[str, Any]) -> str:
    from thtb.train.models import resolve_model

    return resolve_model(cfg.get("model"), Path(cfg["paths"]["cache_dir"]))


def evaluated_model(cfg: dict[str, Any], run_dir: Path) -> tuple[str, bool]:
    """``(model folder or id, is_trained)`` for ``eval.model``."""
    choice = str(cfg["eval"].get("model", "trained"))
    if choice == "trained":
        merged = run_dir / "train" / "merged"
        if not (merged / "config.json").is_file():
            raise EvalConfigError(f"eval.model=trained but {merged} holds no model: run the train stage first "
                                  "(stages=[select,train,eval]) or set eval.model=base or eval.model=<model folder>")
        return str(merged.resolve()), True
    if choice == "base":
        return base_model_path(cfg), False
    if not (Path(choice) / "config.json").is_file():
        raise EvalConfigError(f"eval.model={choice}: not a model folder (no config.json), nor 'trained' or 'base'")
    return choice, True


def baseline_model(cfg: dict[str, Any]) -> tuple[str, str]:
    """``(kind, model folder or outputs file)`` of the pairwise baseline (see conf/eval/paper.yaml)."""
    spec = cfg["eval"]["pairwise"]["baseline"]
    kind = spec.get("kind")
    if kind not in BASELINE_KINDS:
        raise EvalConfigError(f"eval.pairwise.baseline.kind must be one of {BASELINE_KINDS}, got {kind!r}")
    if kind == "base":
        return kind, base_model_path(cfg)
    if kind in ("model", "outputs"):
        path = spec.get("path")
        if not path or not Path(path).exists():
            raise EvalConfigError(f"eval.pairwise.baseline.path={path!r} does not exist (baseline kind {kind})")
        return kind, str(path)
    from thtb.train.artifacts import find_artifact

    experiment = spec.get("experiment")
    model_name, seed = (cfg.get("model") or {}).get("name"), int(cfg.get("seed", 42))
    found = find_artifact(cfg["paths"]["cache_dir"], experiment=experiment, model=model_name, seed=seed)
    if found is None:
        raise EvalConfigError(
            f"no finished training of experiment {experiment!r} for model {model_name!r} and seed {seed} in "
            f"{Path(cfg['paths']['cache_dir']) / 'artifacts' / 'train'}: train the baseline first "
            f"(python run.py +experiment={experiment} model={model_name} seed={seed}), or set "
            "eval.pairwise.baseline to {kind: base} / {kind: model, path: …} / {kind: outputs, path: …}")
    return kind, str(found / "merged")


def check_config(cfg: dict[str, Any]) -> list[str]:
    """The tasks to run; every config mistake that can be seen without a model raises here."""
    ev = cfg["eval"]
    tasks = list(ev.get("tasks") or [])
    if not tasks or not set(tasks) <= set(TASKS):
        raise EvalConfigError(f"eval.tasks must be a non-empty subset of {list(TASKS)}, got {tasks}")
    try:
        if "pairwise" in tasks:
            from thtb.eval.pairwise import pairwise_template

            pairwise_template(ev["pairwise"].get("template", "forced"))
        if "mmlu_pro" in tasks:
            config_kwargs(ev["mmlu_pro"])  # prompt format, schemes, budget: checked before any model loads
    except ValueError as err:
        raise EvalConfigError(str(err)) from err
    if "pairwise" in tasks and not ev["pairwise"].get("judge"):
        raise EvalConfigError("eval.pairwise needs an LLM judge: judge=openai (judge.base_url=…, judge.model=…), "
                              "judge=hf or judge=vllm, or set eval.pairwise.judge to a judge backend config")
    if "exam" in tasks:
        path = ev["exam"].get("path")
        if not path or not Path(path).is_file():
            raise EvalConfigError(f"eval.exam.path={path!r} is not a file (the multiple-choice exam to score)")
    if "mmlu_pro" in tasks and ev["mmlu_pro"].get("data_dir"):
        data_fingerprint(ev["mmlu_pro"]["data_dir"])  # a missing parquet fails now, naming the path
    return tasks


# ---------------------------------------------------------------------------------------- tasks
def _lm_eval_kwargs(ev: dict[str, Any]) -> dict[str, Any]:
    """The settings MMLU-Pro and the exam share: backend, dtype, parallelism, and the device (``eval.device``, or
    CUDA when available, else CPU)."""
    return {"backend": ev.get("backend", "hf"), "device": harness.resolve_device(ev.get("device")),
            "dtype": ev.get("dtype", "auto"), "tensor_parallel_size": int(ev.get("tensor_parallel_size", 1)),
            "data_parallel_size": int(ev.get("data_parallel_size", 1))}


def _mmlu_pro(cfg: dict[str, Any], model: str, out: Path) -> dict[str, Any]:
    ev, mp = cfg["eval"], cfg["eval"]["mmlu_pro"]
    return run_mmlu_pro(model, data_dir=mp.get("data_dir"), builtin=not mp.get("data_dir"), out_dir=out,
                        batch_size=ev.get("batch_size", "auto"), **_lm_eval_kwargs(ev),
                        **config_kwargs(mp))  # fewshot, limit, max_gen_toks, prompt_format, chat template, schemes


def _pairwise(cfg: dict[str, Any], model: str, out: Path) -> dict[str, Any]:
    from hydra.utils import instantiate

    from thtb.eval.pairwise import (generate_outputs, load_eval_set, model_generator, outputs_from_file,
                                    resolve_prompts, run_pairwise)
    from thtb.judge.cache import RequestCache

    ev, pw = cfg["eval"], cfg["eval"]["pairwise"]
    prompts = load_eval_set(resolve_prompts(pw["prompts"]), subsets=pw.get("subsets"), limit=pw.get("limit"))
    instructions = prompts["instruction"].tolist()
    cache = RequestCache(Path(cfg["paths"]["cache_dir"]) / "generations.sqlite")
    gen_kw = {"backend": ev.get("backend", "hf"), "cache": cache, "decoding": {"max_tokens": int(pw["max_new_tokens"])}}
    if gen_kw["backend"] == "hf":
        gen_kw["batch_size"] = int(pw.get("batch_size", 8))
    mine = generate_outputs(model_generator(model, **gen_kw), instructions, name=cfg.get("experiment_name"))
    kind, where = baseline_model(cfg)
    name = pw["baseline"].get("name") or kind
    theirs = (outputs_from_file(where, instructions, name=name) if kind == "outputs"
              else generate_outputs(model_generator(where, **gen_kw), instructions, name=name))
    return run_pairwise(prompts, mine, theirs, instantiate(pw["judge"]), out_dir=out, order=pw.get("order", "random"),
                        template=pw.get("template", "forced"), seed=int(pw.get("seed", 42)),
                        failure_budget=int(pw.get("failure_budget", 0)), n_boot=int(pw.get("bootstrap", 2000)),
                        extra={"baseline_kind": kind,
                               "generation_stats": {"model": mine.stats, "baseline": theirs.stats}})


def _exam(cfg: dict[str, Any], model: str, out: Path) -> dict[str, Any]:
    ev, ex = cfg["eval"], cfg["eval"]["exam"]
    return run_exam(model, exam_path=ex["path"], out_dir=out, batch_size=ev.get("batch_size", 1),
                    **_lm_eval_kwargs(ev), max_gen_toks=ex.get("max_gen_toks"), limit=ex.get("limit"),
                    prompt_language=ex.get("prompt_language", "auto"), extra_model_args=exam_model_args(ex))


def exam_model_args(ex: dict[str, Any]) -> dict[str, Any] | None:
    """lm-eval model arguments of the exam: ``enable_thinking`` (Qwen3-family templates), the same for every row."""
    thinking = ex.get("enable_thinking")
    return None if thinking is None else {"enable_thinking": bool(thinking)}


# ------------------------------------------------------------------------------ result reuse
CACHED_TASKS = {"mmlu_pro": ("mmlu_pro.json", "mmlu_pro_samples.jsonl"), "exam": ("exam.json", "exam_samples.jsonl")}
EVAL_VERSION = 2
"""Part of the fingerprint, with the eval stage's code digest (the lm-eval task files included) and library
versions (:func:`thtb.provenance.stage_key_inputs`), which change by themselves."""


def model_identity(model: str) -> str:
    """A trained model is identified by its training artifact's fingerprint, read from the artifact's manifest
    (``manifest.json`` beside the model folder, ``stage: train``, listing the model's files) wherever the folder
    lies; any other model by its content."""
    path = Path(model)
    try:
        body = json.loads((path.parent / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no manifest (or an unreadable one): not a training artifact
        body = {}
    if body.get("stage") == "train" and body.get("fingerprint") and any(
            f.startswith(f"{path.name}/") for f in body.get("files") or {}):
        return f"train:{body['fingerprint']}"
    return harness.model_fingerprint(model)["fingerprint"]


def task_fingerprint(cfg: dict[str, Any], task: str, model: str) -> str:
    """Everything that determines a task's result: the model, the task's config, the shared eval settings,
    the data files, the eval code with the lm-eval task files it reads, and the libraries' versions."""
    ev = cfg["eval"]
    data: Any = None
    if task == "mmlu_pro" and ev["mmlu_pro"].get("data_dir"):
        data = data_fingerprint(ev["mmlu_pro"]["data_dir"])
    elif task == "exam":
        data = harness.file_digest(ev["exam"]["path"])
    shared = {k: ev.get(k) for k in ("backend", "dtype", "tensor_parallel_size", "data_parallel_size")}
    return fingerprint({"version": EVAL_VERSION, "task": task, "model": model_identity(model), "config": ev[task],
                        "shared": shared, "data": data, "lm_eval": harness.lm_eval_version(),
                        **stage_key_inputs("eval", extra_files=[harness.tasks_dir()])})


def _cached(cfg: dict[str, Any], task: str, model: str, out: Path, runner) -> tuple[dict[str, Any], bool]:
    """Run ``task`` or restore its stored result (``<cache>/artifacts/eval/<fingerprint>/``)."""
    artifact = StageArtifact(cfg["paths"]["cache_dir"], "eval", task_fingerprint(cfg, task, model))
    summary_name = CACHED_TASKS[task][0]
    if cfg.get("reuse", True) and artifact.is_complete():
        artifact.restore(out)
        log.info("eval: reusing the finished %s result %s", task, artifact.key)
        return json.loads((out / summary_name).read_text(encoding="utf-8")), True
    work = artifact.staging()  # this process's own outputs, published whole, then copied to the run dir
    try:
        result = stamp_provenance(work / summary_name, runner(cfg, model, work), cfg, task)
        copy_outputs(work, out)
        artifact.publish(work, {"task": task, "model": model_identity(model), "provenance": result["provenance"]})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result, False


def stamp_provenance(path: Path, result: dict[str, Any], cfg: dict[str, Any], task: str) -> dict[str, Any]:
    """Add ``provenance`` (the task's protocol, the environment) to a task's result and its JSON file."""
    result = {**result, "provenance": {"protocol": eval_provenance(cfg, [task])[task], **environment()}}
    atomic_write_text(path, json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")
    return result


# ------------------------------------------------------------------------------------- run line
def _pct(x: float | None) -> float | None:
    return None if x is None else round(100.0 * float(x), 2)


def _pct_ci(ci: list[float] | None) -> list[float | None] | None:
    return [_pct(x) for x in ci] if ci else None


def _stage_summary(run_dir: Path, stage: str) -> dict[str, Any]:
    """``<run_dir>/<stage>/summary.json``; {} when that stage did not run here."""
    path = run_dir / stage / "summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def run_line(cfg: dict[str, Any], run_dir: Path, results: dict[str, dict], *, timings: dict[str, float] | None = None,
             reused: dict[str, bool] | None = None) -> dict[str, Any]:
    """The one-line record of this evaluation that the paper tables read (results/README.md)."""
    from thtb.train.args import method_name

    metrics: dict[str, Any] = {}
    if "mmlu_pro" in results:
        r = results["mmlu_pro"]
        o = r["overall"]
        metrics["mmlu_pro"] = {
            "overall": _pct(o["accuracy"]), "n": o["n"], "parse_failures": o["parse_failures"],
            "limit": cfg["eval"]["mmlu_pro"].get("limit"), "scheme": o.get("scheme", "strict"),
            "prompt_format": (r.get("settings") or {}).get("prompt_format", "lm_eval"),
            "ci95": _pct_ci(o.get("ci95")), "truncation_rate": _pct(o.get("truncation_rate")),
            "categories": {c: {"accuracy": _pct(v["accuracy"]), "n": v["n"], "ci95": _pct_ci(v.get("ci95"))}
                           for c, v in r["per_category"].items()},
            "schemes": {s: {"overall": _pct(b["overall"]["accuracy"]), "ci95": _pct_ci(b["overall"].get("ci95")),
                            "parse_failures": b["overall"]["parse_failures"],
                            **({"expected": _pct(b["overall"]["expected_accuracy"])}
                               if "expected_accuracy" in b["overall"] else {})}
                        for s, b in (r.get("schemes") or {}).items()},
        }
    if "pairwise" in results:
        r = results["pairwise"]
        keep = ("win_rate", "win_rate_ci95", "win_rate_tie_half", "n", "n_failed")
        metrics["pairwise"] = {
            "baseline": r["baseline"]["name"], "judge": r["judge"]["model"], "n_prompts": r["n_prompts"],
            "limit": cfg["eval"]["pairwise"].get("limit"), "order": r["order"],
            "template": r["judge"].get("template"), "length_ratio": r.get("length_ratio"),
            "truncation": {side: (r.get("truncation") or {}).get(side, {}).get("rate")
                           for side in ("model", "baseline")},
            "overall": {**{k: r["overall"][k] for k in keep}, "lc_win_rate": r["overall"].get("lc_win_rate"),
                        "lc_win_rate_ci95": r["overall"].get("lc_win_rate_ci95")},
            "subsets": {s: {k: v[k] for k in keep} for s, v in r["subsets"].items()},
            "position_consistency": r["position_consistency"],
        }
    if "exam" in results:
        r = results["exam"]
        overall = r.get("overall", r)
        metrics["exam"] = {"accuracy": _pct(overall.get("accuracy")), "n": overall.get("n"),
                           "correct": overall.get("correct"), "limit": cfg["eval"]["exam"].get("limit"),
                           "by_type": {t: {"accuracy": _pct(v.get("accuracy")), "n": v.get("n")}
                                       for t, v in (r.get("per_type") or {}).items()}}
    score = _stage_summary(run_dir, "score")
    if score:  # the score stage ran: the training data's THTB score (Table 3)
        metrics["thtb_score"] = score["thtb_score"]
    trained = _stage_summary(run_dir, "train")
    model_cfg = cfg.get("model") or {}
    return {
        "experiment": cfg.get("experiment_name"),
        "method": method_name(cfg) if cfg["eval"].get("model", "trained") != "base" else "vanilla",
        "data": (cfg.get("data") or {}).get("name"), "model": model_cfg.get("name"),
        "model_size": model_cfg.get("size"), "seed": int(cfg.get("seed", 42)),
        "subset_fingerprint": trained.get("subset_fingerprint"), "train_fingerprint": trained.get("fingerprint"),
        "n_train": trained.get("n_train"), "run_dir": str(run_dir),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "thtb_version": __version__,
        "provenance": {**_provenance(cfg, run_dir, trained, results),
                       **({"score": (score.get("provenance") or {}).get("selection")} if score else {})},
        "metrics": metrics,
        "cost": _cost(run_dir, trained, results, timings or {}, reused or {}),
        "contamination": _contamination(run_dir),
    }


def _contamination(run_dir: Path) -> dict[str, Any] | None:
    """The training subset's overlap with each evaluation set, as the select stage measured it (None: no selection
    here, e.g. a released subset or the full data)."""
    sets = (_stage_summary(run_dir, "selection").get("contamination") or {}).get("sets") or {}
    return {name: {k: s.get(k) for k in ("checked", "n_selected", "n_flagged", "rate")}
            for name, s in sets.items()} or None


def _cost(run_dir: Path, trained: dict[str, Any], results: dict[str, dict], timings: dict[str, float],
          reused: dict[str, bool]) -> dict[str, Any]:
    """The run line's ``cost`` (:mod:`thtb.cost`): the selection's and the training's as their summaries recorded
    them (the runs that computed them), and this evaluation's: its wall time, devices, and the judge's and the
    generators' requests (tasks reused from a cache are listed: their cost was paid earlier)."""
    selection = _stage_summary(run_dir, "selection").get("cost")
    counts = [s for r in results.values()
              for s in (r.get("judge_stats") or {}, *(r.get("generation_stats") or {}).values())]
    judge = {k: sum(int(s.get(k, 0) or 0) for s in counts) for k in ("calls", "prompt_tokens", "completion_tokens")}
    evaluation = stage_cost(sum(timings.values()) if timings else None, judge=judge if counts else None,
                            reused_tasks=sorted(t for t, r in reused.items() if r))
    return run_cost(selection, trained.get("cost"), evaluation)


def _provenance(cfg: dict[str, Any], run_dir: Path, trained: dict[str, Any], results: dict[str, dict]) -> dict:
    """What produced the evaluated model (selection, training: from the train stage's summary) and how it was
    evaluated (protocol per task), with the environment."""
    from thtb.train.artifacts import training_provenance

    base = cfg["eval"].get("model", "trained") == "base"
    made = trained.get("provenance") or {}
    selection = None if base else made.get("selection")
    training = None if base else (made.get("training") or (training_provenance(cfg, trained) if trained else None))
    return {"selection": selection, "training": training, "eval": eval_provenance(cfg, list(results)),
            **environment()}


def append_run_line(results_dir: str | Path, line: dict[str, Any]) -> Path:
    path = Path(results_dir) / f"{line['experiment']}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n")
    return path


def _plot_categories(summary: dict[str, Any], path: Path) -> Path:
    from matplotlib.figure import Figure

    cats = summary["per_category"]
    names = sorted(cats, key=lambda c: -(cats[c]["accuracy"] or 0))
    fig = Figure(figsize=(8, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(names, [100 * (cats[c]["accuracy"] or 0) for c in names], color="#4C72B0")
    ax.axhline(100 * (summary["overall"]["accuracy"] or 0), color="#C44E52", ls="--",
               label=f"overall {100 * (summary['overall']['accuracy'] or 0):.1f}%")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"MMLU-Pro (n={summary['overall']['n']})")
    ax.tick_params(axis="x", labelrotation=60)
    ax.legend()
    fig.savefig(path, dpi=110)
    return path


# ------------------------------------------------------------------------------------------ run
def run_eval(cfg: dict[str, Any], run_dir: Path, tracker: Tracker | None = None) -> dict[str, Any]:
    """Run the eval stage from a resolved config dict; returns the run line (also appended to results)."""
    tracker = tracker or Tracker()
    run_dir = Path(run_dir)
    out = run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    tasks = check_config(cfg)
    if "pairwise" in tasks:
        baseline_model(cfg)  # a missing baseline fails before any model loads
    model, trained = evaluated_model(cfg, run_dir)
    sanity = {"checked": False}
    if trained and cfg["eval"]["sanity"].get("enabled", True):
        sanity = {"checked": True,
                  **check_trained(model, base_model_path(cfg), method=cfg["eval"]["sanity"].get("method", "auto"))}
    atomic_write_text(out / "sanity.json", json.dumps(sanity, indent=2) + "\n")
    results: dict[str, dict] = {}
    timings: dict[str, float] = {}
    reused: dict[str, bool] = {}
    runners = {"mmlu_pro": _mmlu_pro, "pairwise": _pairwise, "exam": _exam}
    for task in tasks:
        log.info("eval: %s on %s", task, model)
        start = time.perf_counter()
        if task in CACHED_TASKS:
            results[task], reused[task] = _cached(cfg, task, model, out, runners[task])
        else:  # pairwise: every generation and judgement is cached per request already
            results[task] = stamp_provenance(out / f"{task}.json", runners[task](cfg, model, out), cfg, task)
            calls = [results[task]["judge_stats"].get("calls", 0),
                     *(s.get("calls", 0) for s in results[task]["generation_stats"].values())]
            reused[task] = not any(calls)  # everything came from the request caches
        timings[task] = round(time.perf_counter() - start, 2)
        log.info("eval: %s %s in %.1f s", task, "reused" if reused.get(task) else "done", timings[task])
    line = run_line(cfg, run_dir, results, timings=timings, reused=reused)
    where = append_run_line(cfg["eval"]["results_dir"], line)
    summary = {**line, "model_path": model, "sanity": sanity, "timings_s": timings, "reused_tasks": reused,
               "run_line_file": str(where)}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    _log(tracker, line, results, out)
    log.info("eval: %s", _headline(line))
    return {**line, "reused": bool(reused) and all(reused.values()), "reused_tasks": reused}


def _headline(line: dict[str, Any]) -> str:
    m = line["metrics"]
    parts = []
    if "mmlu_pro" in m:
        parts.append(f"MMLU-Pro {m['mmlu_pro']['overall']}% (n={m['mmlu_pro']['n']})")
    if "pairwise" in m:
        o = m["pairwise"]["overall"]
        parts.append(f"win rate vs {m['pairwise']['baseline']} {o['win_rate']}% (length-controlled "
                     f"{o.get('lc_win_rate')}%, n={o['n']}, failed {o['n_failed']})")
    if "exam" in m:
        parts.append(f"exam {m['exam']['accuracy']}% (n={m['exam']['n']})")
    return "; ".join(parts)


def _log(tracker: Tracker, line: dict[str, Any], results: dict[str, dict], out: Path) -> None:
    m = line["metrics"]
    flat: dict[str, Any] = {}
    if "mmlu_pro" in m:
        flat = {"eval/mmlu_pro/overall": m["mmlu_pro"]["overall"],
                **{f"eval/mmlu_pro/{c}": v["accuracy"] for c, v in m["mmlu_pro"]["categories"].items()},
                **{f"eval/mmlu_pro/scheme/{s}": v["overall"] for s, v in (m["mmlu_pro"].get("schemes") or {}).items()}}
        tracker.log_images("eval/mmlu_pro_categories",
                           [_plot_categories(results["mmlu_pro"], out / "mmlu_pro_categories.png")])
        tracker.log_table("eval/mmlu_pro_samples", pd.DataFrame(read_jsonl(out / "mmlu_pro_samples.jsonl")))
    if "pairwise" in m:
        flat.update({f"eval/pairwise/{k}": m["pairwise"]["overall"].get(k)
                     for k in ("win_rate", "win_rate_tie_half", "lc_win_rate")})
        flat.update({f"eval/pairwise/{s}": v["win_rate"] for s, v in m["pairwise"]["subsets"].items()})
        tracker.log_table("eval/pairwise_samples", pd.DataFrame(read_jsonl(out / "pairwise_samples.jsonl")).astype(
            {"verdicts": str, "reasoning": str}))
    if "exam" in m:
        flat["eval/exam/accuracy"] = m["exam"]["accuracy"]
    tracker.log_summary({k: v for k, v in flat.items() if v is not None})
    tracker.log_summary({"run_line": line})  # the paper tables read it back with tables.source=wandb


def preflight(cfg: dict[str, Any], run_dir: Path, stages: list[str]) -> list[str]:
    """Every problem the eval stage would hit, found before the run's first stage (no model is loaded): the
    config, the pairwise baseline (another experiment's finished training), the evaluated model when no earlier
    stage of this run makes it, the judge's model or server, the exam file and the MMLU-Pro data."""
    from thtb.scorers.availability import model_unavailable, server_unavailable

    problems: list[str] = []

    def attempt(fn, *args):
        try:
            return fn(*args)
        except (EvalConfigError, ValueError, FileNotFoundError) as exc:
            problems.append(f"eval: {exc}")
            return None

    tasks = attempt(check_config, cfg) or [t for t in cfg["eval"].get("tasks") or [] if t in TASKS]
    if "pairwise" in tasks:
        attempt(baseline_model, cfg)
        judge = cfg["eval"]["pairwise"].get("judge") or {}
        if judge.get("base_url"):
            if why := server_unavailable(str(judge["base_url"])):
                problems.append(f"eval: the pairwise judge at {judge['base_url']}: {why}")
        elif judge.get("model") and (why := model_unavailable(str(judge["model"]))):
            problems.append(f"eval: the pairwise judge {judge['model']}: {why}")
    choice = str(cfg["eval"].get("model", "trained"))
    if choice != "trained" or "train" not in stages:
        attempt(evaluated_model, cfg, Path(run_dir))
    else:
        attempt(base_model_path, cfg)  # the sanity check compares the trained model with its base
    return problems
