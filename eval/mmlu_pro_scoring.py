"""MMLU-Pro answer extraction and scoring schemes, computed from the stored responses alone.

Three schemes, reported side by side (``mmlu_pro.json``'s ``schemes``):

``strict``
    lm-eval's ``mmlu_pro`` filter: the first match of ``answer is \\(?([A-J])\\)?`` in the raw response; no
    match = wrong (a parse failure).
``official``
    TIGER-AI-Lab's chain (``evaluate_from_api.py``; the MMLU-Pro authors' own script): ``**`` is removed from
    the response (their ``response.replace('**', '')``), then ``extract_answer`` → ``extract_again`` →
    ``extract_final``: the first ``answer is \\(?([A-J])\\)?``, else ``.*[aA]nswer:\\s*([A-J])`` (no DOTALL),
    else the last standalone letter ``\\b[A-J]\\b(?!.*\\b[A-J]\\b)`` (DOTALL). No letter = wrong.
``official_guess``
    ``official`` plus TIGER's guess for outputs without a letter (their ``update_result``/``save_res``): a
    uniformly random option index ``random.randint(0, n_options - 1)`` compared with ``answer_index``, from one
    ``random.Random(12345)`` stream over the guessed questions in file order (TIGER seeds the global
    ``random`` with 12345 at import; their exact draws also depend on how often their loop re-scores, so
    guesses are reproducible here, not draw-for-draw theirs). ``n_options`` counts the options other than
    ``"N/A"`` (TIGER's ``preprocess`` drops them). Its **expected** value, each guess counted ``1/n_options``,
    is reported next to the drawn one (``expected_accuracy``).

TIGER's last two regexes are quadratic in the response length (an 8B model's 12,032 outputs take ~6 minutes
through them; a degenerate, repetitive output alone can take minutes); :func:`extract_official` computes the same
letters in linear time (:func:`extract_again`, :func:`extract_final` say why they are the same).
``tests/test_mmlu_pro_tiger.py`` checks both against TIGER's own functions and their released ``pred`` s.

Every count is reported overall (question-weighted) and per category, with the parse-failure rate (no letter)
and the truncation rate (responses that used up the generation budget: ``n_response_tokens >= max_gen_toks -
slack``, the response re-tokenised with the model's tokenizer; unknown when no token counts are stored), and a
95 % Wilson score interval (:func:`thtb.eval.stats.wilson_interval`).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from thtb.eval import stats
from thtb.eval.mmlu_pro_prompts import drop_na
from thtb.io import atomic_write_text, read_jsonl

SCHEMES = ("strict", "official", "official_guess")
GUESS_SEED = 12345
LETTERS = "ABCDEFGHIJ"
CONFIDENCE = 0.95
CI_METHOD = "Wilson score interval (95%, no continuity correction)"

STRICT_PATTERN = r"answer is \(?([A-J])\)?"
AGAIN_PATTERN = r".*[aA]nswer:\s*([A-J])"
FINAL_PATTERN = r"\b[A-J]\b(?!.*\b[A-J]\b)"

_STRICT = re.compile(STRICT_PATTERN)
_AGAIN_AT = re.compile(r"(?=[aA]nswer:\s*([A-J]))")  # every start position of the second step's tail
_STANDALONE = re.compile(r"\b[A-J]\b")

DESCRIPTIONS = {
    "strict": "lm-eval: first 'answer is \\(?([A-J])\\)?' in the raw response; no letter = wrong",
    "official": "TIGER evaluate_from_api.py: '**' removed, then 'answer is \\(?([A-J])\\)?' -> "
                "'.*[aA]nswer:\\s*([A-J])' -> last standalone letter '\\b[A-J]\\b' (DOTALL); no letter = wrong",
    "official_guess": "TIGER chain as in official, plus TIGER's seeded random guess (random.Random(12345), "
                      "randint over the non-'N/A' options, in file order) where no letter is found; "
                      "expected_accuracy counts each guess 1/n_options",
}


# ------------------------------------------------------------------------------------------- extraction
def extract_strict(text: str | None) -> str | None:
    """lm-eval's filter (and TIGER's first step): the letter of the first ``answer is (X)``, or None."""
    m = _STRICT.search(text or "")
    return m.group(1) if m else None


def extract_again(text: str) -> str | None:
    """TIGER's ``extract_again`` (``re.search(r'.*[aA]nswer:\\s*([A-J])', text)``) in linear time.

    Without DOTALL the leading ``.*`` cannot cross ``\\n``: the search succeeds first at the start of the first
    line that holds an occurrence of ``[aA]nswer:\\s*[A-J]`` (starting on that line), and greedy backtracking
    then picks the last occurrence starting on that line (whose ``\\s*`` may still run past the line)."""
    first = _AGAIN_AT.search(text)
    if first is None:
        return None
    newline = text.find("\n", first.start())
    line_end = len(text) if newline < 0 else newline
    letter = first.group(1)
    for m in _AGAIN_AT.finditer(text, first.start() + 1):
        if m.start() >= line_end:
            break
        letter = m.group(1)
    return letter


def extract_final(text: str) -> str | None:
    """TIGER's ``extract_final`` (``\\b[A-J]\\b(?!.*\\b[A-J]\\b)``, DOTALL) in linear time: the last standalone
    letter A–J (a standalone letter right after another is impossible, so "no later standalone letter" is
    "the last one")."""
    last = None
    for last in _STANDALONE.finditer(text):
        pass
    return last.group(0) if last else None


def extract_official(text: str | None) -> tuple[str | None, str | None]:
    """TIGER's chain on a response: ``(letter, step)`` with step ``answer_is`` / ``answer_colon`` /
    ``last_letter``, or ``(None, None)``. ``**`` is removed first, as their API script does."""
    text = (text or "").replace("**", "")
    if m := _STRICT.search(text):
        return m.group(1), "answer_is"
    if (letter := extract_again(text)) is not None:
        return letter, "answer_colon"
    letter = extract_final(text)
    return (letter, "last_letter") if letter is not None else (None, None)


def tiger_reference_chain(text: str) -> str | None:
    """TIGER's three functions verbatim (quadratic; for tests on short texts): ``extract_answer`` →
    ``extract_again`` → ``extract_final`` on ``text`` (``**`` not removed)."""
    m = re.search(STRICT_PATTERN, text)
    if m:
        return m.group(1)
    m = re.search(AGAIN_PATTERN, text)
    if m:
        return m.group(1)
    m = re.search(FINAL_PATTERN, text, re.DOTALL)
    return m.group(0) if m else None


# --------------------------------------------------------------------------------------------- rows
def n_real_options(options: Iterable[str] | None) -> int | None:
    """Options other than ``"N/A"`` (TIGER's ``preprocess``), the choices a guess is drawn from."""
    return None if options is None else len(drop_na(options))


def check_schemes(schemes: Sequence[str], primary: str | None) -> None:
    """A ValueError unless ``schemes`` is a non-empty subset of :data:`SCHEMES` holding ``primary``."""
    if not schemes or any(s not in SCHEMES for s in schemes):
        raise ValueError(f"scoring schemes must be a non-empty subset of {SCHEMES}, got {list(schemes)}")
    if primary not in schemes:
        raise ValueError(f"primary scheme {primary!r} is not among the scored schemes {list(schemes)}")


def truncation_slack(max_gen_toks: int) -> int:
    """Tokens below ``max_gen_toks`` still counted as "hit the limit": re-tokenising decoded text can merge a
    few generated tokens, so an exact count is not guaranteed (1 % of the budget, at least 1)."""
    return max(1, int(max_gen_toks) // 100)


def is_truncated(n_tokens: int | None, max_gen_toks: int | None) -> bool | None:
    if n_tokens is not None and max_gen_toks:
        return int(n_tokens) >= int(max_gen_toks) - truncation_slack(max_gen_toks)
    return None


def _answer_index(row: Mapping[str, Any]) -> int | None:
    idx = row.get("answer_index")
    if idx is not None:
        return int(idx)
    target = row.get("target")
    return LETTERS.index(target) if isinstance(target, str) and len(target) == 1 and target in LETTERS else None


def score_rows(rows: Iterable[Mapping[str, Any]], *, schemes: Sequence[str] = SCHEMES, primary: str | None = None,
               max_gen_toks: int | None = None, seed: int = GUESS_SEED,
               categories: Sequence[str] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score stored responses under each scheme.

    ``rows``: dicts with ``category``, ``target`` (answer letter), ``response`` (the full text), and for the
    guess ``n_options`` (non-"N/A" options) and ``answer_index`` (derived from ``target`` when absent);
    optional ``n_response_tokens`` (for truncation). Returns ``(summary, rows)``: the summary has ``schemes``
    (per scheme: ``overall`` and ``per_category``), and, mirroring the ``primary`` scheme (default: the
    first), ``overall`` / ``per_category`` with ``accuracy``, ``n``, ``correct``, ``parse_failures``; each row
    gains ``pred_<scheme>``, ``correct_<scheme>``, ``official_step``, ``guess`` (official_guess: the drawn
    letter where no letter was found), ``truncated``, and ``extracted`` / ``correct`` of the primary scheme
    (``extracted``: the letter found in the response, None when none was found, whatever the guess)."""
    schemes = tuple(schemes)
    primary = primary or next(iter(schemes), None)
    check_schemes(schemes, primary)
    rng = random.Random(seed)
    out_rows: list[dict[str, Any]] = []
    for row in rows:
        r = dict(row)
        response, target, letter = r.get("response") or "", r.get("target"), None
        if "strict" in schemes:
            r["pred_strict"] = extract_strict(response)
            r["correct_strict"] = r["pred_strict"] is not None and r["pred_strict"] == target
        if "official" in schemes or "official_guess" in schemes:
            letter, r["official_step"] = extract_official(response)
            if "official" in schemes:
                r["pred_official"] = letter
                r["correct_official"] = letter is not None and letter == target
        if "official_guess" in schemes:  # the guess is drawn here, in file order
            r["guess"] = None
            if letter is None:
                n_opt = r.get("n_options")
                idx = _answer_index(r)
                if not n_opt or idx is None:
                    raise ValueError(f"question {r.get('question_id')}: official_guess needs n_options and the "
                                     "answer index (or letter)")
                x = rng.randint(0, int(n_opt) - 1)
                r["guess"] = LETTERS[x]
                r["pred_official_guess"] = LETTERS[x]
                r["correct_official_guess"] = x == idx
                r["expected_official_guess"] = 1.0 / int(n_opt)
            else:
                r["pred_official_guess"] = letter
                r["correct_official_guess"] = letter == target
                r["expected_official_guess"] = float(r["correct_official_guess"])
        r["truncated"] = is_truncated(r.get("n_response_tokens"), max_gen_toks)
        r["extracted"] = r["pred_strict"] if primary == "strict" else letter  # a guess is no extracted letter
        r["correct"] = bool(r[f"correct_{primary}"])
        out_rows.append(r)

    order = list(dict.fromkeys([*(categories or ()), *(r.get("category") for r in out_rows)]))
    by_category = {cat: [r for r in out_rows if r.get("category") == cat] for cat in order}
    summary_schemes = {scheme: {"description": DESCRIPTIONS[scheme], "overall": _block(out_rows, scheme),
                                "per_category": {c: _block(rs, scheme) for c, rs in by_category.items() if rs}}
                       for scheme in schemes}
    summary: dict[str, Any] = {
        "primary_scheme": primary,
        "overall": {**summary_schemes[primary]["overall"], "scheme": primary,
                    "weighting": "question-weighted mean over categories (total correct / total questions)"},
        "per_category": {c: dict(v) for c, v in summary_schemes[primary]["per_category"].items()},
        "schemes": summary_schemes,
        "ci_method": CI_METHOD,
        "guess_seed": seed if "official_guess" in schemes else None,
        "truncation": {
            "max_gen_toks": max_gen_toks,
            "rule": (f"n_response_tokens >= max_gen_toks - {truncation_slack(max_gen_toks)} (the response "
                     "re-tokenised with the model's tokenizer)") if max_gen_toks else None,
            "known": sum(r["truncated"] is not None for r in out_rows),
        },
    }
    return summary, out_rows


def _rate(k: int | None, n: int) -> float | None:
    return None if k is None or not n else k / n


def _block(rows: Sequence[Mapping[str, Any]], scheme: str) -> dict[str, Any]:
    """Accuracy, Wilson CI, parse failures and truncation of ``rows`` under ``scheme``."""
    n = len(rows)
    correct = sum(bool(r[f"correct_{scheme}"]) for r in rows)
    failures = sum(r["pred_strict" if scheme == "strict" else "official_step"] is None for r in rows)
    known = [r["truncated"] for r in rows if r.get("truncated") is not None]
    truncated = sum(known) if known and len(known) == n else None
    block: dict[str, Any] = {
        "accuracy": correct / n if n else None,
        "ci95": list(stats.wilson_interval(correct, n, CONFIDENCE)) if n else None, "n": n, "correct": correct,
        "parse_failures": failures, "parse_failure_rate": _rate(failures, n), "truncated": truncated,
        "truncation_rate": _rate(truncated, n)}
    if scheme == "official_guess":
        expected = sum(float(r["expected_official_guess"]) for r in rows)
        guessed = [r for r in rows if r.get("guess") is not None]
        block.update(guessed=len(guessed), guessed_correct=sum(bool(r["correct_official_guess"]) for r in guessed),
                     expected_correct=expected, expected_accuracy=expected / n if n else None,
                     expected_ci95=list(stats.wilson_interval(expected, n, CONFIDENCE)) if n else None)
    if scheme != "strict":
        block["official_steps"] = dict(Counter(str(r["official_step"]) for r in rows))
    return block


# ---------------------------------------------------------------------------------------- files
def _tiger_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A row of TIGER's result files (``evaluate_from_*.py`` / their released ``eval_results``)."""
    response = rec.get("model_outputs", rec.get("generated_text"))
    return {"category": rec.get("category"), "question_id": rec.get("question_id"), "target": rec.get("answer"),
            "answer_index": rec.get("answer_index"), "n_options": n_real_options(rec.get("options")),
            "response": response if isinstance(response, str) else "", "tiger_pred": rec.get("pred")}


def load_samples(path: str | Path) -> list[dict[str, Any]]:
    """Rows to score: our ``mmlu_pro_samples.jsonl``, or TIGER's result format (a JSON list of questions with
    ``model_outputs``/``generated_text``; a ``.json`` file or a ``.zip`` of them, read in place)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        rows = read_jsonl(path)
        missing = [k for k in ("category", "question_id", "target", "response") if rows and k not in rows[0]]
        if missing:
            raise ValueError(f"{path}: rows lack {missing} (an mmlu_pro_samples.jsonl row has category, "
                             "question_id, target, response)")
        return rows
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            return [_tiger_row(r) for name in sorted(zf.namelist()) if name.endswith(".json")
                    for r in json.loads(zf.read(name))]
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of TIGER result rows")
    return [_tiger_row(r) for r in data]


_CUT = re.compile(r" …\[\d+ chars cut\]… ")  # harness.truncate_middle's marker (samples of older runs)


def fill_options(rows: list[dict[str, Any]], data_dir: str | Path | None) -> int:
    """Add ``n_options`` / ``answer_index`` from ``<data_dir>/test.parquet`` (by ``question_id``) to rows that
    lack them (samples files written before they were stored); returns how many rows were filled (0, reading
    nothing, without a ``data_dir`` or a row to fill)."""
    import pandas as pd

    if not data_dir or all(r.get("n_options") is not None for r in rows):
        return 0
    test = pd.read_parquet(Path(data_dir) / "test.parquet", columns=["question_id", "options", "answer_index"])
    known = {int(q): (n_real_options(o), int(i)) for q, o, i in zip(test.question_id, test.options, test.answer_index)}
    filled = 0
    for r in rows:
        if r.get("n_options") is None and r.get("question_id") is not None and int(r["question_id"]) in known:
            r["n_options"], r["answer_index"] = known[int(r["question_id"])]
            filled += 1
    return filled


def rescore(path: str | Path, *, schemes: Sequence[str] = SCHEMES, primary: str | None = None,
            max_gen_toks: int | None = None, seed: int = GUESS_SEED,
            data_dir: str | Path | None = None) -> dict[str, Any]:
    """Score a finished run's samples file (or TIGER's outputs) under ``schemes``; no generation. The token
    budget defaults to the one a run recorded in its ``mmlu_pro.json`` beside the samples (``settings``);
    ``data_dir`` (the MMLU-Pro parquet folder) supplies the option counts the guess needs to samples files that
    lack them. ``responses_cut`` counts responses stored cut in the middle (older runs kept 4,000 characters):
    their scores may differ from what the whole response would give."""
    path = Path(path)
    if max_gen_toks is None:
        beside = path.parent / "mmlu_pro.json"
        if path.suffix == ".jsonl" and beside.is_file():
            settings = json.loads(beside.read_text(encoding="utf-8")).get("settings") or {}
            max_gen_toks = settings.get("max_gen_toks_effective")
    rows = load_samples(path)
    filled = fill_options(rows, data_dir)
    summary, _ = score_rows(rows, schemes=schemes, primary=primary, max_gen_toks=max_gen_toks, seed=seed)
    return {**summary, "source": str(path),
            "responses_cut": sum(bool(_CUT.search(r.get("response") or "")) for r in rows),
            "options_filled_from_data": filled}


def _matched(path_a: str | Path, path_b: str | Path, scheme: str, data_dir: str | Path | None = None
             ) -> tuple[dict, dict, list, list, list]:
    """Both files re-scored under ``scheme`` and matched by ``question_id``: ``(a, b, matched, mismatched, common)``
    (``common``: matched questions with the same answer key in both files)."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    scored = []
    for path in (path_a, path_b):
        loaded = load_samples(path)
        fill_options(loaded, data_dir)
        _, rows = score_rows(loaded, schemes=(scheme,))
        by_id: dict[Any, dict[str, Any]] = {}
        for r in rows:
            if r.get("question_id") in by_id:
                raise ValueError(f"{path}: question_id {r.get('question_id')} appears twice")
            by_id[r.get("question_id")] = r
        scored.append(by_id)
    a, b = scored
    matched = [q for q in a if q in b]
    # the same question_id with another answer key: a different dataset revision (TIGER's two releases differ
    # on 3 questions); such questions are left out and listed
    mismatched = [q for q in matched if a[q].get("target") != b[q].get("target")]
    common = [q for q in matched if q not in set(mismatched)]
    return a, b, matched, mismatched, common


def compare_pooled(pairs: Sequence[tuple[str | Path, str | Path]], *, scheme: str = "official", n_boot: int = 10_000,
                   seed: int = 0, confidence: float = 0.95) -> dict[str, Any] | None:
    """Several paired runs of two systems (e.g. one pair per seed) pooled into one paired test: each pair's common
    questions (as :func:`compare` matches them) counted once per pair, ``diff = acc_a − acc_b`` over all of them,
    its paired-bootstrap CI and the exact McNemar p-value (:func:`thtb.eval.stats.paired_comparison`). None when
    no pair has a common question."""
    key = f"correct_{scheme}"
    xs: list[float] = []
    ys: list[float] = []
    for path_a, path_b in pairs:
        a, b, _, _, common = _matched(path_a, path_b, scheme)
        xs += [float(a[q][key]) for q in common]
        ys += [float(b[q][key]) for q in common]
    if not xs:
        return None
    return stats.paired_comparison(xs, ys, n_boot=n_boot, seed=seed, confidence=confidence)


def compare(path_a: str | Path, path_b: str | Path, *, scheme: str = "official", n_boot: int = 10_000,
            seed: int = 0, confidence: float = 0.95, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Two runs on the same questions, question by question (matched by ``question_id``), under one scheme:
    overall and per category, ``diff = acc_a − acc_b``, its paired-bootstrap CI, the exact McNemar p-value
    and the discordant counts (:func:`thtb.eval.stats.paired_comparison`). Both files are re-scored
    from their responses; questions present in only one file, or whose answer key differs between the files (a
    different dataset revision), are counted and left out. ``data_dir``: as in
    :func:`rescore` (option counts for ``official_guess`` on older samples files)."""
    a, b, matched, mismatched, common = _matched(path_a, path_b, scheme, data_dir)
    key = f"correct_{scheme}"

    def pair(ids):
        return stats.paired_comparison([float(a[q][key]) for q in ids], [float(b[q][key]) for q in ids],
                                       n_boot=n_boot, seed=seed, confidence=confidence)

    categories: dict[str, list] = {}
    for q in common:
        categories.setdefault(a[q].get("category"), []).append(q)
    return {"a": str(path_a), "b": str(path_b), "scheme": scheme, "matched": len(common),
            "only_in_a": len(a) - len(matched), "only_in_b": len(b) - len(matched),
            "answer_mismatch": len(mismatched), "answer_mismatch_ids": mismatched[:50],
            "overall": pair(common) if common else None,
            "per_category": {c: pair(ids) for c, ids in categories.items()}}


# ------------------------------------------------------------------------------------------ command line
def main(argv: Sequence[str] | None = None) -> int:
    """``rescore SAMPLES [--schemes …] [--primary …] [--max-gen-toks N] [--out FILE]`` and
    ``compare A B [--scheme official] [--n-boot N] [--seed S] [--out FILE]``: JSON to ``--out`` or stdout."""
    parser = argparse.ArgumentParser(prog="python -m thtb.eval.mmlu_pro",
                                     description="Re-score finished MMLU-Pro runs offline (no generation).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("rescore", help="score a samples file under each scheme")
    p.add_argument("samples", help="mmlu_pro_samples.jsonl, or TIGER's result .json / .zip")
    p.add_argument("--schemes", default=",".join(SCHEMES), help=f"comma-separated subset of {','.join(SCHEMES)}")
    p.add_argument("--primary", default=None, help="the scheme behind 'overall' (default: the first)")
    p.add_argument("--max-gen-toks", type=int, default=None, help="generation budget (truncation rate)")
    p.add_argument("--seed", type=int, default=GUESS_SEED, help="official_guess seed (TIGER: 12345)")
    p.add_argument("--data-dir", default=None,
                   help="MMLU-Pro parquet folder: option counts for samples files that lack them (older runs)")
    p.add_argument("--out", default=None, help="write the JSON here (default: stdout)")
    c = sub.add_parser("compare", help="paired comparison of two runs on the same questions")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--scheme", default="official", choices=SCHEMES)
    c.add_argument("--n-boot", type=int, default=10_000)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--data-dir", default=None, help="as for rescore")
    c.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.command == "rescore":
        result = rescore(args.samples, schemes=[s.strip() for s in args.schemes.split(",") if s.strip()],
                         primary=args.primary, max_gen_toks=args.max_gen_toks, seed=args.seed, data_dir=args.data_dir)
    else:
        result = compare(args.a, args.b, scheme=args.scheme, n_boot=args.n_boot, seed=args.seed,
                         data_dir=args.data_dir)
    text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    if args.out:
        atomic_write_text(Path(args.out), text)
        print(_headline(result))
    else:
        print(text, end="")
    return 0


def _headline(result: Mapping[str, Any]) -> str:
    if "schemes" in result:
        return "; ".join(f"{s} {100 * b['overall']['accuracy']:.2f}%" for s, b in result["schemes"].items())
    o = result.get("overall") or {}
    return (f"{result['scheme']}: diff {100 * (o.get('diff') or 0):+.2f} pp, p={o.get('p_value')}, "
            f"n={o.get('n')}") if o else "no matched questions"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
