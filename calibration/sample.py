"""Draw, list and check the calibration sample: Alpaca pairs that AI assistant sessions label by reading.

    python calibration/sample.py draw  [--alpaca PATH]          # writes calibration/sample.jsonl (seeded, deterministic)
    python calibration/sample.py show  --batch N [--start K --count M]  # prints batch N's pairs to read
    python calibration/sample.py check [--alpaca PATH]          # schema of calibration/labels/*.jsonl vs the sample

**The draw.** Alpaca 52k (``../shared/data/alpaca/alpaca_data.json``) is split into 8 strata — with/without an
``input`` × the four quartiles of the output's length in characters — and 1,540 rows are drawn without replacement
by proportional allocation (largest remainders) with ``numpy.random.default_rng(SEED)``. Within each stratum a
fixed 35% (rounded) of the drawn rows form the held-out **test** split (≥ 500 rows), the rest **train**; the rows
are then shuffled into 7 annotation batches of 220, so that each batch mixes strata and splits. The sample file
holds ids, row numbers and a digest of each pair's text (Alpaca itself is not copied into the repository); the
digest lets every later reader check that the pair it scores is the pair that was read.

This script draws and displays; it never writes, suggests or pre-fills a label (``calibration/README.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from thtb.calibration import pair_digest  # noqa: E402 - the checkout's thtb, whether installed or not
from thtb.scorers.base import BLOOM_BANDS  # noqa: E402

DEFAULT_ALPACA = ROOT.parent / "shared" / "data" / "alpaca" / "alpaca_data.json"
SAMPLE = HERE / "sample.jsonl"
LABELS = HERE / "labels"
SEED = 20261130
N_SAMPLE = 1540
TEST_FRACTION = 0.35
N_BATCHES = 7


def load_alpaca(path: Path) -> list[dict]:
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(rows, list):
        raise SystemExit(f"{path}: expected a JSON list of Alpaca rows")
    return rows


def _digest(row: dict) -> str:
    """The pair's digest (:func:`thtb.calibration.pair_digest`), which the sample file holds."""
    return pair_digest(row.get("instruction", ""), row.get("input", ""), row.get("output", ""))


def project_ids(path: Path) -> list[str]:
    """The ids ``thtb.data.load_records`` gives the rows (what selections and scores are keyed by)."""
    from thtb.data import load_records

    frame, _ = load_records(str(path))
    return frame["id"].tolist()


def strata(rows: list[dict]) -> np.ndarray:
    """Stratum 0–7 of each row: 4 × has_input + output-length quartile (quartile edges over all rows)."""
    lengths = np.array([len(r.get("output") or "") for r in rows])
    edges = np.quantile(lengths, [0.25, 0.5, 0.75])
    quartile = np.searchsorted(edges, lengths, side="right")
    has_input = np.array([bool((r.get("input") or "").strip()) for r in rows], dtype=int)
    return has_input * 4 + quartile


def allocate(sizes: np.ndarray, n: int) -> np.ndarray:
    """Proportional allocation of ``n`` over strata of ``sizes`` by largest remainders (ties: lower stratum)."""
    exact = sizes / sizes.sum() * n
    base = np.floor(exact).astype(int)
    base[np.argsort(-(exact - base), kind="stable")[: n - base.sum()]] += 1  # stable: ties go to the lower stratum
    return base


def draw(alpaca: Path) -> list[dict]:
    rows = load_alpaca(alpaca)
    ids = project_ids(alpaca)
    stratum = strata(rows)
    rng = np.random.default_rng(SEED)
    take = allocate(np.bincount(stratum, minlength=8), N_SAMPLE)
    picked = []
    for s in range(8):
        chosen = rng.choice(np.flatnonzero(stratum == s), size=take[s], replace=False)
        n_test = int(round(TEST_FRACTION * take[s]))
        picked += [{"row": int(chosen[j]), "stratum": int(s), "split": "test" if rank < n_test else "train"}
                   for rank, j in enumerate(rng.permutation(len(chosen)))]
    out = [{**picked[j], "id": ids[picked[j]["row"]], "batch": position // (N_SAMPLE // N_BATCHES) + 1,
            "digest": _digest(rows[picked[j]["row"]])} for position, j in enumerate(rng.permutation(len(picked)))]
    out.sort(key=lambda d: (d["batch"], d["row"]))
    return out


def read_sample() -> list[dict]:
    return [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]


def show(alpaca: Path, batch: int, start: int = 0, count: int | None = None) -> None:
    """Print the pairs of ``batch`` (positions ``start`` … ``start + count - 1`` within it) for reading."""
    rows = load_alpaca(alpaca)
    items = [item for item in read_sample() if item["batch"] == batch]
    for position, item in enumerate(items[start: None if count is None else start + count], start):
        r = rows[item["row"]]
        if _digest(r) != item["digest"]:
            raise SystemExit(f"{alpaca} row {item['row']}: text differs from the digest in {SAMPLE.name}")
        print(f"=== [{position}] row {item['row']}  id {item['id']}")
        print(f"[instruction]\n{r.get('instruction', '')}")
        if (r.get("input") or "").strip():
            print(f"[input]\n{r['input']}")
        print(f"[output]\n{r.get('output', '')}\n")


def check_label(label: dict, where: str) -> list[str]:
    """Problems with one label line (empty: valid)."""
    problems = []
    level, score = label.get("bloom_level"), label.get("bloom_score")
    if level not in BLOOM_BANDS:
        problems.append(f"{where}: bloom_level {level!r} is not one of {list(BLOOM_BANDS)}")
    elif not isinstance(score, int) or not BLOOM_BANDS[level][0] <= score <= BLOOM_BANDS[level][1]:
        problems.append(f"{where}: bloom_score {score!r} is not an integer in {level}'s band {BLOOM_BANDS[level]}")
    if not isinstance(label.get("bloom_reason"), str) or not label["bloom_reason"].strip():
        problems.append(f"{where}: bloom_reason is missing")
    disciplines = label.get("disciplines")
    if not isinstance(disciplines, list) or not disciplines or not all(
            isinstance(d, str) and d and d == d.lower().replace(" ", "_").replace("-", "_") for d in disciplines):
        problems.append(f"{where}: disciplines must be a non-empty list of lower_snake_case names, got {disciplines!r}")
    elif len(set(disciplines)) != len(disciplines):
        problems.append(f"{where}: disciplines has duplicates {disciplines!r}")
    quality = label.get("quality")
    if not isinstance(quality, int) or not 1 <= quality <= 10:
        problems.append(f"{where}: quality {quality!r} is not an integer 1–10")
    return problems


def check(alpaca: Path | None) -> int:
    sample = {d["row"]: d for d in read_sample()}
    seen: dict[int, str] = {}
    problems = []
    for path in sorted(LABELS.glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path.relative_to(ROOT)}:{n}"
            try:
                label = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{where}: not JSON ({exc})")
                continue
            row = label.get("row")
            if row not in sample:
                problems.append(f"{where}: row {row!r} is not in the sample")
                continue
            if label.get("id") != sample[row]["id"]:
                problems.append(f"{where}: id {label.get('id')!r} is not row {row}'s id {sample[row]['id']}")
            if row in seen:
                problems.append(f"{where}: row {row} already labelled in {seen[row]}")
            seen[row] = where
            problems += check_label(label, where)
    for p in problems:
        print(p)
    print(f"{len(seen)} of {len(sample)} sampled rows labelled; {len(problems)} problems")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["draw", "show", "check"])
    parser.add_argument("--alpaca", type=Path, default=DEFAULT_ALPACA)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--start", type=int, default=0, help="show: first position within the batch")
    parser.add_argument("--count", type=int, help="show: how many pairs")
    args = parser.parse_args(argv)
    if args.command == "draw":
        sample = draw(args.alpaca)
        SAMPLE.write_text("".join(json.dumps(d, sort_keys=True) + "\n" for d in sample), encoding="utf-8")
        n_test = sum(d["split"] == "test" for d in sample)
        print(f"{len(sample)} rows ({n_test} test, {len(sample) - n_test} train) in {N_BATCHES} batches → {SAMPLE}")
        return 0
    if args.command == "show":
        if args.batch is None:
            parser.error("show needs --batch N")
        show(args.alpaca, args.batch, args.start, args.count)
        return 0
    return check(args.alpaca)


if __name__ == "__main__":
    raise SystemExit(main())
