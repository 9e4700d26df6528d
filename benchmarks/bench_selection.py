"""Benchmarks of the selection maths (figures only, no asserts).

Sections (``--only``):

* ``calibration`` — agreement of the offline scorers with the labels of ``calibration/`` on its held-out
  split (538 Alpaca pairs): the fitted proxies (``judge=proxy``, ``reward=proxy``) beside
  the hand-built scorers (``judge=rules``, ``reward=rules``), recomputed here and checked against the figures the
  proxies' resources record.
* ``silhouette`` — exact O(n·k·d) cosine silhouette vs ``sklearn.metrics.silhouette_samples`` on
  Alpaca query TF-IDF (first n rows, K-Means k=161): seconds each, speedup, max |diff|.
* ``data`` — facts about the Alpaca file that the docs quote: rows with an empty ``input`` (each of whose
  reference-fidelity queries ends in ``"\nnan"``).
* ``cascade`` — the full offline cascade on Alpaca 52k through ``run.py`` (wall seconds with model
  load, peak RSS, byte-identical subsets across runs), then a 2% re-cut of the same scores (score cache), then
  the previous default (``reward=proxy``) once for the ratio of wall times.
* ``scale`` (only with ``--only scale``) — one offline alpaca_5pct selection over a large pool (Alpaca repeated
  ``--rows`` / 52,002 times, each copy's text varied) with ``executor=local`` and with ``executor=ray`` (a local
  Ray), each through ``run.py`` in a process of its own (Ray's: each role's actor with every CPU): wall time and
  their ratio, the driver's own peak RSS (``VmHWM``: not Ray's workers), whether the two subsets are
  byte-identical, and each scorer's rows per second.
* ``static`` (only with ``--only static``) — MiniLM against a static embedder distilled from it (model2vec): the
  time to embed stage 2's 10,400 Alpaca queries, and the Bloom and discipline proxies' held-out agreement when
  refitted on each: why the offline cascade keeps MiniLM.
* ``stage3`` — the stage-3 maths on 1,000,000 synthetic English queries: preprocessing, TF-IDF,
  K-Means k=161, exact silhouette, IREI + EHS; total time and peak RSS.

Usage::

    python benchmarks/bench_selection.py --only silhouette --sizes 5200,20000
    python benchmarks/bench_selection.py --only stage3 --n-stage3 1000000
    python benchmarks/bench_selection.py --only scale --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from thtb import maths  # noqa: E402

SHARED = Path(os.environ.get("THTB_SHARED_DATA", REPO.parent / "shared" / "data"))
ALPACA = Path(os.environ.get("THTB_ALPACA", SHARED / "alpaca" / "alpaca_data.json"))


def _timed(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), the seconds it took)``."""
    t0 = time.perf_counter()
    return fn(*args, **kwargs), time.perf_counter() - t0


def alpaca_queries(path: Path = ALPACA, n: int | None = None) -> list[str] | None:
    """Reference-fidelity queries ``instruction + "\\n" + (input or "nan")``; None if the file is absent."""
    if not path.is_file():
        return None
    rows = json.loads(path.read_text(encoding="utf-8"))[:n]
    return [r["instruction"] + "\n" + (r["input"] if r["input"] else "nan") for r in rows]


def bench_silhouette(sizes=(5200, 20000), k: int = 161, data: Path = ALPACA) -> None:
    """Exact cosine silhouette vs sklearn on Alpaca TF-IDF of the first n queries."""
    from sklearn.metrics import silhouette_samples

    queries = alpaca_queries(data)
    if queries is None:
        print(f"silhouette: skipped, Alpaca data not found at {data} (set THTB_ALPACA)")
        return
    for n in sizes:
        if n > len(queries):
            print(f"silhouette n={n}: skipped, only {len(queries)} rows")
            continue
        X = maths.tfidf_matrix(queries[:n], max_features=100)
        labels = maths.kmeans_labels(X, k, random_state=42)
        n_zero = int((np.diff(X.indptr) == 0).sum())
        singletons = int((np.bincount(labels) == 1).sum())
        convention = maths.sklearn_zero_row_self_distance(n)
        ref, t_sk = _timed(silhouette_samples, X, labels, metric="cosine")
        ours, t_ex = _timed(maths.silhouette_samples_cosine, X, labels, zero_row_self_distance=convention)
        diff = float(np.abs(ours - ref).max())
        authors = maths.silhouette_samples_cosine(X, labels, zero_row_self_distance=1.0)  # reference fidelity
        diff_authors = float(np.abs(authors - ref).max())
        print(f"silhouette n={n}: sklearn {t_sk:.2f} s, exact {t_ex:.3f} s, speedup {t_sk / t_ex:.0f}x, "
              f"max|diff| {diff:.1e}  [k={k}, zero TF-IDF rows {n_zero}, singleton clusters {singletons}, "
              f"sklearn zero-row self distance {convention:g}; the authors' (reference) self distance 1: "
              f"max|diff| {diff_authors:.1e}]")


_COMMON = (
    "the a an of to and in for on with by from as at is are be this that it its your their can "
    "how what why which who when where does do should would could will most more best between about"
).split()
_TOPIC = (
    "data model system network energy climate economy market health disease cell protein gene "
    "water ocean river mountain forest animal plant species history war empire revolution culture "
    "music art painting novel poem story character language grammar sentence word paragraph essay "
    "computer program algorithm function variable code database software hardware internet website "
    "customer product company business strategy marketing sales price cost budget finance tax law "
    "court policy government election vote citizen education school student teacher university "
    "research experiment theory hypothesis evidence result analysis method process design problem "
    "solution equation number triangle circle area volume speed force gravity light sound planet "
    "star galaxy space rocket travel city country food recipe diet exercise sleep memory emotion "
    "friend family child team game sport player movie film camera photo color shape time money"
).split()
_TASK = (
    "explain describe write create generate list identify classify summarize compare contrast "
    "analyze evaluate design suggest rewrite translate calculate find determine predict outline "
    "propose construct edit convert name give provide develop explore discuss justify"
).split()
_ADJ = (
    "main important different simple complex new old good bad effective efficient creative short "
    "long detailed clear possible common key major social natural global local digital modern"
).split()


def synthetic_queries(n: int, seed: int = 0, vocab_tail: int = 20000) -> list[str]:
    """``n`` English-like instructions from a seeded RNG: a task verb, Zipf-distributed words from
    common/topic/adjective lists plus a long tail of pseudo-words, punctuation, digits and capitals;
    ~60% end with ``"\\nnan"`` (Alpaca's empty input in reference fidelity), the rest with an input."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lens = rng.integers(4, 10, size=vocab_tail)
    codes = rng.integers(0, 26, size=(vocab_tail, 10))
    tail = ["".join(letters[c[:m]]) for c, m in zip(codes, lens, strict=True)]
    vocab = np.array(_COMMON + _TOPIC + _ADJ + tail, dtype=object)
    p = 1.0 / np.arange(1, vocab.size + 1) ** 1.07
    p /= p.sum()
    n_words = rng.integers(4, 28, size=n)
    words = vocab[rng.choice(vocab.size, size=int(n_words.sum()), p=p)]
    bounds = np.concatenate([[0], np.cumsum(n_words)])
    tasks = np.array([t.capitalize() for t in _TASK], dtype=object)[rng.integers(0, len(_TASK), size=n)]
    ends = np.array([".", "?", "!", ":", "."], dtype=object)[rng.integers(0, 5, size=n)]
    has_input = rng.random(n) < 0.4
    nums = rng.integers(0, 2000, size=n)
    return [f"{task} {' '.join(words[b:e])}{end}"
            + (f"\nInput: {words[b]}, {num} and ({words[e - 1]})." if has else "\nnan")
            for task, b, e, end, has, num in zip(tasks, bounds[:-1], bounds[1:], ends, has_input, nums, strict=True)]


def bench_stage3_1m(n: int = 1_000_000, k: int = 161, seed: int = 0, *, max_iter: int = 300,
                    algorithm: str = "lloyd", fidelity: str = "reference") -> None:
    """Stage-3 maths on ``n`` synthetic rows, step by step, with total time and peak RSS."""
    queries, t_gen = _timed(synthetic_queries, n, seed=seed)
    response_len = np.round(np.random.default_rng(seed + 1).lognormal(mean=5.5, sigma=1.0, size=n)).astype(np.int64)
    print(f"stage3 n={n:,}: generated synthetic queries in {t_gen:.1f} s (not counted), "
          f"RSS {psutil.Process().memory_info().rss / 2**20:.0f} MiB")

    times = {}
    docs, times["preprocess"] = _timed(maths.preprocess_queries, queries)
    X, times["tfidf"] = _timed(maths.tfidf_matrix, docs, 100, preprocess=False)
    labels, times["kmeans"] = _timed(maths.kmeans_labels, X, k, 42, max_iter=max_iter, algorithm=algorithm)
    zero_self = 1.0 if fidelity == "reference" else 0.0  # the authors' batched distances vs d(x, x) = 0
    s, times["silhouette"] = _timed(maths.silhouette_samples_cosine, X, labels, zero_row_self_distance=zero_self)

    def _ehs():
        qlen = np.fromiter((len(q) for q in queries), dtype=np.int64, count=n)
        r = maths.irei(qlen, response_len, fidelity=fidelity)
        return maths.ehs(r, maths.silhouette_component(s, fidelity))

    e, times["irei+ehs"] = _timed(_ehs)
    sizes = np.bincount(labels, minlength=k)
    for name, sec in times.items():
        print(f"stage3 n={n:,}: {name} {sec:.2f} s")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux ru_maxrss is in KiB
    print(f"stage3 n={n:,}: total {sum(times.values()):.1f} s (limit 120 s), peak RSS {peak_mib:.0f} MiB  "
          f"[KMeans k={k} max_iter={max_iter} algorithm={algorithm}; TF-IDF {X.shape[1]} terms, nnz/row "
          f"{X.nnz / n:.1f}, zero rows {int((np.diff(X.indptr) == 0).sum())}; "
          f"cluster sizes {sizes.min()}..{sizes.max()}; "
          f"mean s {s.mean():.3f}, mean EHS {e.mean():.3f}]")


def check_stage3_silhouette(scores: Path, k: int) -> None:
    """The score card's stage-3 silhouettes against sklearn on the authors' preprocessing (their regex, written
    out here): ``silhouette_samples(TfidfVectorizer(max_features=100) of the preprocessed queries, KMeans labels,
    metric="cosine")``, ours taken before the singleton policy (with a singleton cluster the authors' rule, the
    reference default, sets every silhouette of the card to 0; the line says so). Rows whose TF-IDF is all zero
    are listed apart: reference fidelity gives them the authors' ``-1/|C|`` where sklearn (one block,
    n < 11,586) gives 0."""
    import pandas as pd
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import silhouette_samples

    def authors(text: str) -> str:
        if text and sum(ord(c) < 128 for c in text) > len(text) * 0.8:
            return re.sub(r"\s+", " ", re.sub(r"[^\w\s]|[\d]", " ", text.lower())).strip()
        import jieba

        return " ".join(jieba.cut(text))

    card = pd.read_parquet(scores)
    # the stage-3 input in the cascade's order: the previous stage's survivors, best first (as the authors'
    # sorted file); K-Means initialisation depends on the row order
    previous = [c for c in ("intrinsic_rank", "quality_rank") if c in card]
    stage3 = card[card["silhouette"].notna()].sort_values(previous[0] if previous else "row")
    X = TfidfVectorizer(max_features=100).fit_transform([authors(q) for q in stage3["query"]])
    labels = KMeans(n_clusters=k, random_state=42, n_init="auto").fit_predict(X)
    same_labels = bool((labels == stage3["cluster"].to_numpy()).all())
    ref = silhouette_samples(X, labels, metric="cosine")
    raw = maths.silhouette_scores(stage3["query"].tolist(), k, singleton_policy="sklearn")  # before the policy
    zero = np.asarray(X.sum(axis=1)).ravel() == 0
    diff = np.abs(raw.s - ref)
    card_s = stage3["silhouette"].to_numpy()
    singletons = int((np.bincount(labels, minlength=k) == 1).sum())
    print(f"stage-3 silhouette vs sklearn on the authors' preprocessing: n={len(stage3):,}, k={k}, labels identical "
          f"{same_labels and bool((raw.labels == labels).all())}, max |diff| {diff[~zero].max():.2e} on "
          f"{int((~zero).sum()):,} rows; {int(zero.sum())} all-zero row(s) (reference: -1/|C|, sklearn: 0); "
          f"{singletons} singleton cluster(s): the score card's silhouettes are "
          f"{'all 0 (the authors rule, singleton_policy=zero_all)' if singletons and not card_s.any() else 'as above'}")


def bench_data(data_path: Path = ALPACA) -> None:
    """The Alpaca facts the README quotes, computed from the file by the project's own loader: the rows with an
    empty ``input``, whose reference-fidelity query is the authors' ``instruction + "\\nnan"``."""
    from thtb.data import load_records

    if not data_path.exists():
        print(f"data: skipped ({data_path} not found)")
        return
    records, _ = load_records(data_path, fidelity="reference")
    empty, rows = int(records["query"].str.endswith("\nnan").sum()), len(records)
    print(f"data alpaca: empty input in {empty:,} of {rows:,} rows ({100 * empty / rows:.1f}%): "
          f"under fidelity=reference each of those queries ends in \"\\nnan\"")


def _select(data_path: Path, out: Path, log: Path, *overrides: str) -> tuple[float, float, dict]:
    """One offline alpaca_5pct selection through run.py in a process of its own: (wall s, peak RSS GB, summary).

    The peak is the run.py process's own high-water mark (``VmHWM``, read every 0.2 s until it exits), not
    ``wait4``'s, which also folds in the peaks of the processes it reaped (a local Ray's workers)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    with open(log, "w") as logfile:
        proc = subprocess.Popen(
            [sys.executable, "run.py", "+experiment=alpaca_5pct", "stages=[select]", "scoring=offline",
             f"data.path={data_path}", f"hydra.run.dir={out}", *overrides],
            cwd=REPO, env=env, stdout=logfile, stderr=subprocess.STDOUT,
        )
        peak_kb = 0
        while proc.poll() is None:
            peak_kb = max(peak_kb, _hwm_kb(proc.pid))
            time.sleep(0.2)
    if proc.returncode:
        raise SystemExit(f"cascade run failed ({proc.returncode}); log: {log.read_text()[-2000:]}")
    wall = time.perf_counter() - start
    return wall, peak_kb / 1024**2, json.loads((out / "selection" / "summary.json").read_text())


def _hwm_kb(pid: int) -> int:
    """A live process's own peak resident set (``VmHWM`` in /proc/<pid>/status), kB; 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmHWM:\s+(\d+)", status, re.M)
    return int(match.group(1)) if match else 0


PREVIOUS_DEFAULT = ("reward=proxy",)
"""What the offline cascade's default was before stage 1 went back to the hand-built rules (issue 25): the cascade
bench runs it once more (no cache) for the ratio."""


def bench_cascade(data_path: Path = ALPACA, runs: int = 1) -> None:
    """The full offline cascade on Alpaca 52k through run.py: wall seconds (model load included) and
    peak RSS of each run, whether the runs give a byte-identical subset, then a 2% re-cut.

    The first run scores into a fresh score cache (``paths.cache_dir`` in a temporary folder), later runs with
    ``reuse=false`` (no cache: every scorer runs again); the re-cut (``selection.budget=0.02``) reads the first
    run's cache, so it times what a researcher's second budget costs after a finished 5% run. Last, the previous
    default (:data:`PREVIOUS_DEFAULT`) with no cache: today's first run over its wall time."""
    if not data_path.exists():
        print(f"cascade: skipped ({data_path} not found)")
        return
    subsets, peaks, walls = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        cache = f"paths.cache_dir={Path(tmp) / 'cache'}"
        for i in range(runs):
            out = Path(tmp) / f"run{i}"
            wall, peak, summary = _select(data_path, out, Path(tmp) / f"run{i}.log",
                                          *([cache] if i == 0 else ["reuse=false"]))
            peaks.append(peak)
            walls.append(wall)
            counts = " → ".join(f"{v:,}" for v in summary["counts"].values())
            timings = ", ".join(f"{k} {v:.1f}s" for k, v in summary["timings_s"].items())
            print(f"cascade alpaca run {i + 1}: {counts} in {wall:.1f} s wall ({timings})")
            subsets.append((out / "selection" / "subset.jsonl").read_bytes())
            if i == 0:
                check_stage3_silhouette(out / "selection" / "scores.parquet", k=161)
        print(f"cascade alpaca: peak RSS {max(peaks):.2f} GB (largest run; each run's own VmHWM)")
        if runs > 1:
            print(f"cascade alpaca: subsets byte-identical across runs: {len(set(subsets)) == 1}")
        wall, peak, summary = _select(data_path, Path(tmp) / "recut", Path(tmp) / "recut.log", cache,
                                      "selection.budget=0.02")
        hits = summary["scorers"].get("score_cache", {})
        print(f"cascade alpaca re-cut: 2% after the 5% run (same score cache) in {wall:.1f} s wall, peak RSS "
              f"{peak:.2f} GB, {summary['n_selected']:,} selected; score cache hits {hits.get('hits')}, "
              f"misses {hits.get('misses')}")
        previous, peak, summary = _select(data_path, Path(tmp) / "previous", Path(tmp) / "previous.log",
                                          "reuse=false", *PREVIOUS_DEFAULT)
        print(f"cascade alpaca previous default ({' '.join(PREVIOUS_DEFAULT)}): {previous:.1f} s wall, peak RSS "
              f"{peak:.2f} GB; today's default / previous: {walls[0] / previous:.2f}× the wall time")


def make_pool(data_path: Path, rows: int, out: Path) -> int:
    """``rows`` rows of Alpaca, repeated: copy 0 as it is, copy ``j`` with its output's words shuffled (seeded by
    ``j`` and the row) and ``(variant j)`` after its instruction — so no two rows share a text (the score and judge
    caches, and the authors' de-duplication, see every one) while lengths and vocabulary stay Alpaca's."""
    base = json.loads(data_path.read_text(encoding="utf-8"))
    written = 0
    with open(out, "w", encoding="utf-8") as fh:
        for j in range(-(-rows // len(base))):
            rng = np.random.default_rng(j)
            for row in base:
                if written >= rows:
                    break
                if j:
                    words = row["output"].split()
                    rng.shuffle(words)
                    row = {**row, "instruction": f"{row['instruction']} (variant {j})", "output": " ".join(words)}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                written += 1
    return written


def bench_scale(data_path: Path = ALPACA, rows: int = 1_000_000) -> None:
    """One offline selection of ``rows`` rows, ``executor=local`` then ``executor=ray`` (fresh score caches): wall,
    ratio, driver peak RSS, identical subsets, per-scorer throughput."""
    if not data_path.exists():
        print(f"scale: skipped ({data_path} not found)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        pool = Path(tmp) / "pool.jsonl"
        t0 = time.perf_counter()
        n = make_pool(data_path, rows, pool)
        print(f"scale: pool of {n:,} rows ({pool.stat().st_size / 1e9:.2f} GB JSONL) written in "
              f"{time.perf_counter() - t0:.1f} s")
        results = {}
        for executor in ("local", "ray"):
            out = Path(tmp) / executor
            extra = [f"executor.scorers.{role}.num_cpus={os.cpu_count()}" for role in ("quality", "bloom",
                                                                                       "disciplines")]
            wall, peak, summary = _select(pool, out, Path(tmp) / f"{executor}.log", f"executor={executor}",
                                          f"paths.cache_dir={Path(tmp) / ('cache-' + executor)}",
                                          *(extra if executor == "ray" else []))  # each role's actor: every CPU
            results[executor] = (wall, peak, (out / "selection" / "subset.jsonl").read_bytes())
            counts = summary["counts"]
            stage_rows = {"quality": counts.get("input"), "bloom": counts.get("quality"),
                          "disciplines": counts.get("quality")}
            speeds = []
            for name, seconds in summary["timings_s"].items():
                role = name.split(":", 1)[0]
                if role in stage_rows and stage_rows[role] and seconds:
                    speeds.append(f"{name} {stage_rows[role] / seconds:,.0f} rows/s ({stage_rows[role]:,} in "
                                  f"{seconds:.1f} s)")
            steps = ", ".join(f"{k} {v:.1f}s" for k, v in summary["timings_s"].items())
            print(f"scale executor={executor}: {' → '.join(f'{v:,}' for v in counts.values())} in {wall:.1f} s wall, "
                  f"driver peak RSS {peak:.2f} GB; {'; '.join(speeds)}")
            print(f"scale executor={executor} steps: {steps}")
        (lw, _, lsub), (rw, _, rsub) = results["local"], results["ray"]
        print(f"scale: ray / local wall {rw / lw:.2f} (one run each, this machine); subsets byte-identical: "
              f"{lsub == rsub}")


def bench_calibration(data_path: Path = ALPACA) -> None:
    """Held-out agreement of the fitted proxies and the hand-built offline scorers with the calibration labels."""
    from thtb import calibration

    if not data_path.exists():
        print(f"calibration: skipped ({data_path} not found); recorded figures:")
        print(calibration.held_out_table().to_string(index=False))
        return
    start = time.perf_counter()
    test = calibration.load_calibration("test", alpaca=data_path)
    embedder = calibration._embedder()
    proxy = calibration.score_split(test, proxies=True, embedder=embedder).as_dict()
    hand = calibration.score_split(test, proxies=False, embedder=embedder).as_dict()
    recorded = calibration.held_out_table()
    print(f"calibration: held-out split, {proxy['n']} Alpaca pairs labelled by AI assistants under the guideline "
          f"({time.perf_counter() - start:.1f} s; `python -m thtb.calibration evaluate` prints the same)")
    print(f"  {'figure':28s} {'proxy':>7s} {'hand-built':>10s} {'recorded proxy':>15s} {'record current':>14s}")
    for _, row in recorded.iterrows():
        figure = row["figure"]
        print(f"  {figure:28s} {proxy[figure]:7.3f} {hand[figure]:10.3f} {row['proxy_value']:15.3f} "
              f"{str(bool(row['current'])):>14s}")


def static_embedder(folder: Path):
    """The offline embedder with MiniLM swapped for a static model (model2vec's, a mean of per-token vectors): the
    same memo, plain batches (a static model's row does not depend on its batch)."""
    from thtb.scorers.embedder import SentenceTransformerEmbedder

    class StaticEmbedder(SentenceTransformerEmbedder):
        def _load(self):
            from sentence_transformers import SentenceTransformer
            from sentence_transformers.sentence_transformer.modules import StaticEmbedding

            return SentenceTransformer(modules=[StaticEmbedding.from_model2vec(str(folder))], device="cpu")

        def _encode_canonically(self, unseen: list[str]) -> np.ndarray:
            return np.asarray(self.model.encode(unseen, batch_size=1024, convert_to_numpy=True,
                                                normalize_embeddings=False), dtype=np.float32)

    return StaticEmbedder(model=f"static:{folder.name}", show_progress=False)


def bench_static(data_path: Path = ALPACA, n: int = 10_400) -> None:
    """Why the offline cascade keeps MiniLM (issue 25's ≤ 20 s): a static embedder distilled from it (model2vec
    0.7, PCA to 256 dims; optimum's ONNX/OpenVINO backends cannot be installed beside transformers 5.19) embeds
    stage 2's share of Alpaca (``n`` queries, cleaned as the proxies clean them) in a fraction of MiniLM's time,
    but the Bloom and discipline proxies refitted on it (train split, the same cross-validation) agree less with
    the labels on the held-out split. One run: both timings in this process."""
    from model2vec.distill import distill

    from thtb import calibration
    from thtb.scorers.embedder import MINILM_OFFLINE, resolve_model_path
    from thtb.scorers.proxy import split_query

    queries = alpaca_queries(data_path, n)
    if queries is None:
        print(f"static: skipped ({data_path} not found)")
        return
    texts = [split_query(q)[0] for q in queries]
    minilm = calibration._embedder()
    minilm.show_progress = False
    minilm.encode(texts[:8])  # load the model before the clock starts
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        distill(model_name=resolve_model_path(MINILM_OFFLINE), pca_dims=256,
                device="cpu").save_pretrained(str(Path(tmp) / "minilm-static"))
        print(f"static: distilled all-MiniLM-L6-v2 into a static model in {time.perf_counter() - start:.0f} s")
        static = static_embedder(Path(tmp) / "minilm-static")
        static.encode(texts[:8])
        times = {}
        for name, embedder in (("MiniLM", minilm), ("static", static)):
            embedder.clear_cache()
            times[name] = _timed(embedder.encode, texts)[1]
        print(f"static: {n:,} Alpaca queries embedded in {times['MiniLM']:.1f} s (MiniLM) vs {times['static']:.2f} s "
              f"(static), {times['MiniLM'] / times['static']:.0f}× faster")
        params = Path(tmp) / "proxies"
        calibration.fit_proxies(alpaca=data_path, out_dir=params, embedder=static)
        refit = calibration.evaluate_proxies(alpaca=data_path, params_dir=params, embedder=static)["proxies"]
    shipped = json.loads((REPO / "thtb" / "resources" / "proxies" / "held_out.json").read_text())["proxies"]
    print("static: held-out agreement with the labels, proxies fitted on each embedder (MiniLM: the shipped record)")
    print(f"  {'figure':28s} {'MiniLM':>7s} {'static':>7s}")
    for kind in ("bloom", "disciplines"):
        for figure, value in shipped[kind]["proxy"].items():
            print(f"  {figure:28s} {value:7.3f} {refit[kind]['proxy'][figure]:7.3f}")


BENCHES = ("data", "calibration", "silhouette", "stage3", "cascade")  # "all"; scale (an hour at 1M rows) on its own


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=[*BENCHES, "scale", "static", "all"], default="all")
    parser.add_argument("--sizes", default="5200,20000", help="silhouette: comma-separated n values")
    parser.add_argument("--k", type=int, default=161, help="K-Means clusters")
    parser.add_argument("--n-stage3", type=int, default=1_000_000, help="stage3: synthetic rows")
    parser.add_argument("--max-iter", type=int, default=300, help="stage3: KMeans max_iter (sklearn default 300)")
    parser.add_argument("--algorithm", default="lloyd", choices=["lloyd", "elkan"], help="stage3: KMeans algorithm")
    parser.add_argument("--data", type=Path, default=ALPACA, help="Alpaca json (silhouette section)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="scale: rows of the pool")
    parser.add_argument("--runs", type=int, default=2, help="cascade: runs (checks byte-identical subsets)")
    args = parser.parse_args(argv)
    if args.only == "all":  # each section in a fresh process: one section's memory never inflates another's figures
        argv = list(sys.argv[1:] if argv is None else argv)
        for section in BENCHES:
            subprocess.run([sys.executable, __file__, *argv, "--only", section], check=True)
        return 0
    sections = {
        "data": lambda: bench_data(args.data),
        "calibration": lambda: bench_calibration(args.data),
        "silhouette": lambda: bench_silhouette([int(x) for x in args.sizes.split(",") if x.strip()], k=args.k,
                                               data=args.data),
        "stage3": lambda: bench_stage3_1m(args.n_stage3, k=args.k, max_iter=args.max_iter, algorithm=args.algorithm),
        "cascade": lambda: bench_cascade(args.data, runs=args.runs),
        "scale": lambda: bench_scale(args.data, rows=args.rows),
        "static": lambda: bench_static(args.data),
    }
    sections[args.only]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
