"""Length-controlled win rate (AlpacaEval 2.0's GLM) and the paired comparison of two pairwise runs.

Length-controlled (LC) win rate — :func:`fit_length_glm`, :func:`length_controlled`
    AlpacaEval 2.0's ``length_controlled_minimal`` GLM (Dubois et al. 2024, "Length-Controlled AlpacaEval";
    ``alpaca_eval.metrics.glm_winrate``, formula ``np.tanh(std_delta_len) + not_gamed_baseline.astype(float)
    - 1``), refitted here with scikit-learn on the per-prompt annotations of one run
    (``pairwise_samples.jsonl``):

    * the judge's preference for the model, ``p`` in [0, 1] per prompt — 1 win, ½ tie (and the mean of the two
      verdicts in both-orders mode), 0 loss, exactly AlpacaEval's ``preference − 1``;
    * ``Δ = len(baseline output) − len(model output)`` in characters (AlpacaEval's ``len_1 − len_2``: output_1
      is the baseline's), divided by its standard deviation over the prompts (pandas' ``std``, ddof 1);
    * ``logit P(model preferred) = θ + φ·tanh(Δ / sd(Δ))`` — ``θ`` is the model-vs-baseline term (AlpacaEval's
      ``not_gamed_baseline`` column, a column of ones; no separate intercept);
    * fitted as AlpacaEval fits it: logistic regression on soft labels (each prompt twice, label 1 weighted
      ``p`` and label 0 weighted ``1 − p``), L1 penalty on both coefficients, liblinear, no intercept, ``C``
      chosen among ``logspace(−4, 4, 10)`` by 5-fold cross-validation grouped by prompt on the soft-label log
      loss (``LogisticRegressionCV``'s defaults with ``GroupKFold(5)``, ``random_state=123``), then refitted on
      all prompts with that ``C``;
    * the LC win rate is the prediction at zero length difference, ``100·σ(θ)`` — "what would the preference
      be if both outputs had the same length?".

    Intervals: percentile bootstrap over prompts (seeded); each replicate recomputes ``sd(Δ)`` and refits the
    GLM with the ``C`` chosen on all prompts (the cross-validated choice is not repeated per replicate).
    :func:`length_controlled` reports the LC rate next to the raw rates (ties 0 and ½) on the same prompts,
    the mean lengths, their ratio and the per-side truncation rates. The LC rate is on the tie-½ scale (ties
    count ½ in the fit): compare it with ``win_rate_tie_half`` — with the forced-choice judge and one order the
    two raw rates differ only by the identical-output ties.

    Where the GLM says little: on a small or noisy run the cross-validation may pick the strongest penalty,
    which zeroes both coefficients — the LC rate is then exactly 50 whatever the raw rate; and a judge whose every
    verdict follows the length difference makes the data separable — the length coefficient runs to its bound and
    the model term is ill-determined, so the LC rate need not be near 50. AlpacaEval's own code does the same in
    both cases (``tests/test_length_control.py``).

    Command line: ``python -m thtb.eval.length_control RUN/pairwise_samples.jsonl [OTHER/pairwise_samples.jsonl]``
    prints the LC summary of one run, or the paired differences (every metric) of two.

Paired comparison — :func:`paired_difference`: two methods judged against the same baseline on the same prompts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from thtb.io import read_jsonl

GLM_NAME = "length_controlled_minimal"
"""The AlpacaEval GLM reproduced here (``alpaca_eval.metrics.glm_winrate.GLM_INFO``)."""
GLM_FORMULA = "np.tanh(std_delta_len) + not_gamed_baseline.astype(float) - 1"
"""Its patsy formula in AlpacaEval (columns: the tanh length term, then the model-vs-baseline term)."""
CS = tuple(float(c) for c in np.logspace(-4, 4, 10))
"""The grid of inverse regularisation strengths (``LogisticRegressionCV(Cs=10)``)."""
N_SPLITS = 5
RANDOM_STATE = 123
METRICS = ("win_rate", "win_rate_tie_half", "lc_win_rate")
_EPS = 1e-15  # AlpacaEval's clip in its log loss


# ------------------------------------------------------------------------------------------ the GLM
def design(model_len: Sequence[float], baseline_len: Sequence[float]) -> tuple[np.ndarray, float]:
    """The design matrix ``[tanh(Δ / sd(Δ)), 1]`` (AlpacaEval's column order) with ``Δ = baseline − model``
    (characters), and ``sd(Δ)`` (0 when undefined: the length term is then 0 for every prompt and the GLM is the
    model term alone)."""
    delta = np.asarray(baseline_len, np.float64) - np.asarray(model_len, np.float64)
    sd = float(np.std(delta, ddof=1)) if len(delta) > 1 else 0.0
    sd = sd if np.isfinite(sd) and sd > 0 else 0.0
    term = np.tanh(delta / sd) if sd else np.zeros_like(delta)
    return np.column_stack([term, np.ones_like(term)]), sd


def _soft(X: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each prompt twice — label 1 weighted ``p``, label 0 weighted ``1 − p`` — and the prompt of each row."""
    n = len(p)
    return (np.concatenate([X, X]), np.concatenate([np.ones(n), np.zeros(n)]), np.concatenate([p, 1.0 - p]),
            np.concatenate([np.arange(n), np.arange(n)]))


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (liblinear writes its warnings there from C)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _l1_fit(C: float, X: np.ndarray, y: np.ndarray, w: np.ndarray):
    """An L1-penalised logistic regression without intercept (liblinear), as AlpacaEval configures it, fitted
    with sample weights. Where one label's rows all weigh 0 (every preference 1 — a model that won every prompt
    of a fold or replicate — or every 0), liblinear drops them and fits the other label alone, as it does in
    AlpacaEval; its C-level warning about the missing label is silenced."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    one_label = any(not w[y == label].sum() > 0 for label in (0.0, 1.0))
    # scikit-learn >= 1.8 (pinned 1.9) spells the L1 penalty l1_ratio=1 (penalty="l1" is deprecated)
    model = LogisticRegression(C=C, solver="liblinear", fit_intercept=False, dual=False, random_state=RANDOM_STATE,
                               l1_ratio=1.0)
    quiet = _quiet_stderr() if one_label else contextlib.nullcontext()
    with warnings.catch_warnings(record=True) as caught, quiet:  # counted, not printed
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(X, y, sample_weight=w)
    model.converged_ = not any(issubclass(c.category, ConvergenceWarning) for c in caught)
    for c in caught:
        if not issubclass(c.category, ConvergenceWarning):
            warnings.warn_explicit(c.message, c.category, c.filename, c.lineno)
    return model


def _soft_log_loss(model, X: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(model.predict_proba(X)[:, list(model.classes_).index(1.0)], _EPS, 1 - _EPS)
    return float(-np.mean(p * np.log(q) + (1 - p) * np.log(1 - q)))


def choose_C(X: np.ndarray, p: np.ndarray, *, n_splits: int = N_SPLITS) -> float:
    """The ``C`` of :data:`CS` with the lowest soft-label log loss summed over ``GroupKFold(n_splits)`` folds of
    the duplicated prompts (first of equals), as ``LogisticRegressionCV`` chooses it."""
    from sklearn.model_selection import GroupKFold

    Xd, yd, wd, groups = _soft(X, p)
    pd_ = np.concatenate([p, p])  # the soft label each duplicated row stands for
    losses = np.zeros(len(CS))
    for train, test in GroupKFold(n_splits=n_splits).split(Xd, yd, groups):
        for j, C in enumerate(CS):
            model = _l1_fit(C, Xd[train], yd[train], wd[train])
            losses[j] += _soft_log_loss(model, Xd[test], pd_[test])
    return CS[int(np.argmin(losses))]


@dataclass(frozen=True)
class LengthGLM:
    """A fitted length GLM: ``logit P = model_coef + length_coef · tanh(Δ / length_sd)``."""

    n: int
    model_coef: float
    length_coef: float
    C: float
    length_sd: float
    converged: bool = True

    @property
    def lc_win_rate(self) -> float:
        """The predicted preference at Δ = 0, in percent."""
        return float(100.0 / (1.0 + np.exp(-self.model_coef)))


def fit_length_glm(preference: Sequence[float], model_len: Sequence[float], baseline_len: Sequence[float], *,
                   C: float | None = None, n_splits: int = N_SPLITS) -> LengthGLM:
    """Fit the GLM (see module doc) on one run's prompts; ``C`` given: no cross-validation (bootstrap
    replicates). Fewer prompts than folds: as many folds as prompts; fewer than 2 prompts: a ``ValueError``."""
    p = np.asarray(preference, np.float64)
    if len(p) < 2:
        raise ValueError(f"the length GLM needs at least 2 judged prompts, got {len(p)}")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("preferences must lie in [0, 1] (1 = the model's output preferred)")
    X, sd = design(model_len, baseline_len)
    if C is None:
        C = choose_C(X, p, n_splits=min(n_splits, len(p)))
    Xd, yd, wd, _ = _soft(X, p)
    model = _l1_fit(C, Xd, yd, wd)
    coef = model.coef_[0] if model.classes_[1] == 1.0 else -model.coef_[0]
    return LengthGLM(n=len(p), model_coef=float(coef[1]), length_coef=float(coef[0]), C=float(C), length_sd=sd,
                     converged=bool(model.converged_))


# ---------------------------------------------------------------------------------- annotations
def read_samples(source: str | os.PathLike[str] | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The per-prompt records of a run: a ``pairwise_samples.jsonl`` path, or the records themselves."""
    return read_jsonl(source) if isinstance(source, str | os.PathLike) else [dict(r) for r in source]


def annotations(samples: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The judged prompts of a run (``score`` not null) as arrays: ``preference`` (the score), ``win`` (1 for a
    win), ``model_len`` / ``baseline_len`` (characters), ``model_truncated`` / ``baseline_truncated`` (1, 0, or
    NaN when unknown), ``index``, ``instruction``."""
    rows = [s for s in samples if s.get("score") is not None]

    def flag(r: Mapping[str, Any], key: str) -> float:
        v = r.get(key)
        return np.nan if v is None else float(bool(v))

    return {
        "index": np.array([r.get("index", i) for i, r in enumerate(rows)], dtype=np.int64),
        "instruction": np.array([r.get("instruction", "") for r in rows], dtype=object),
        "preference": np.array([float(r["score"]) for r in rows], np.float64),
        "win": np.array([1.0 if r.get("outcome") == "win" else 0.0 for r in rows], np.float64),
        "model_len": np.array([len(r.get("model_output") or "") for r in rows], np.float64),
        "baseline_len": np.array([len(r.get("baseline_output") or "") for r in rows], np.float64),
        "model_truncated": np.array([flag(r, "model_truncated") for r in rows], np.float64),
        "baseline_truncated": np.array([flag(r, "baseline_truncated") for r in rows], np.float64),
    }


def _pct(x: float) -> float:
    return round(100.0 * float(x), 2)


def _ci(values: np.ndarray) -> list[float] | None:
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [round(float(lo), 2), round(float(hi), 2)]


def truncation_rates(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per side: how many outputs hit the ``max_new_tokens`` cap (``<side>_truncated``), of how many known."""
    out: dict[str, Any] = {}
    for side in ("model", "baseline"):
        flags = [s.get(f"{side}_truncated") for s in samples if s.get(f"{side}_output") is not None]
        known = [bool(f) for f in flags if f is not None]
        out[side] = {"n": len(known), "n_truncated": int(sum(known)), "n_unknown": len(flags) - len(known),
                     "rate": round(100.0 * sum(known) / len(known), 2) if known else None}
    return out


def length_controlled(samples: str | os.PathLike[str] | Iterable[Mapping[str, Any]], *, n_boot: int = 2000,
                      seed: int = 42) -> dict[str, Any]:
    """The LC win rate of one run next to its raw rates (ties 0 and ½), on the judged prompts, with percentile
    bootstrap 95% intervals over prompts; mean lengths, their ratio and per-side truncation rates."""
    records = read_samples(samples)
    a = annotations(records)
    n = len(a["preference"])
    out: dict[str, Any] = {
        "method": (f"alpaca_eval {GLM_NAME} GLM ({GLM_FORMULA}): logit P(model preferred) = theta + "
                   "phi*tanh(d/sd(d)), d = len(baseline) - len(model) in characters; LC = 100*sigmoid(theta) "
                   "(d = 0); soft labels (ties 1/2), L1 logistic regression, C by 5-fold grouped CV"),
        "n": n, "lc_win_rate": None, "lc_win_rate_ci95": None, "win_rate": _pct(a["win"].mean()) if n else None,
        "win_rate_tie_half": _pct(a["preference"].mean()) if n else None, "glm": None,
        "mean_length": {"model": round(float(a["model_len"].mean()), 1) if n else None,
                        "baseline": round(float(a["baseline_len"].mean()), 1) if n else None},
        "length_ratio": (round(float(a["model_len"].mean() / a["baseline_len"].mean()), 3)
                         if n and a["baseline_len"].mean() > 0 else None),
        "truncation": truncation_rates(records),
        "bootstrap": {"n_boot": int(n_boot), "seed": int(seed), "resample": "prompts",
                      "refit": "sd(d) recomputed and the GLM refitted per replicate at the C chosen on all prompts"},
    }
    if n < 2:
        return out
    glm = fit_length_glm(a["preference"], a["model_len"], a["baseline_len"])
    out["lc_win_rate"] = round(glm.lc_win_rate, 2)
    out["glm"] = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(glm).items()}
    if n_boot > 0:
        idx = np.random.default_rng(seed).integers(0, n, size=(int(n_boot), n))
        fits = [_fit_at(a, rows, glm.C) for rows in idx]
        out["lc_win_rate_ci95"] = _ci(np.array([f.lc_win_rate for f in fits]))
        out["bootstrap"]["n_not_converged"] = sum(not f.converged for f in fits)
    return out


def _fit_at(a: Mapping[str, np.ndarray], rows: np.ndarray, C: float) -> LengthGLM:
    return fit_length_glm(a["preference"][rows], a["model_len"][rows], a["baseline_len"][rows], C=C)


# ------------------------------------------------------------------------------- paired comparison
def _key(record: Mapping[str, Any]) -> tuple[str, str]:
    return (str(record.get("dataset", "")), str(record["instruction"]))


def paired_difference(samples_a: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
                      samples_b: str | os.PathLike[str] | Iterable[Mapping[str, Any]], *, metric: str = "win_rate",
                      n_boot: int = 2000, seed: int = 42) -> dict[str, Any]:
    """``metric(A) − metric(B)`` (percentage points) for two methods judged against one baseline: prompts
    matched by (dataset, instruction), kept where both runs judged them; a percentile-bootstrap 95% interval
    resampling the matched prompts jointly; a two-sided p-value ``(1 + #{|d* − d| ≥ |d|}) / (1 + n_boot)``
    (the bootstrap distribution shifted to the null of no difference).

    ``metric``: ``win_rate`` (ties 0, the paper's), ``win_rate_tie_half`` or ``lc_win_rate`` (each replicate
    refits both GLMs at their full-data ``C``). A matched prompt whose baseline outputs differ between the runs is
    an error (the runs did not judge against the same baseline)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    runs = [read_samples(s) for s in (samples_a, samples_b)]
    by_key = []
    for name, records in zip("AB", runs, strict=True):
        keyed: dict[tuple[str, str], dict[str, Any]] = {}
        for r in records:
            if _key(r) in keyed:
                raise ValueError(f"run {name}: prompt {r['instruction'][:60]!r} appears twice")
            keyed[_key(r)] = r
        by_key.append(keyed)
    common = [k for k in by_key[0] if k in by_key[1]]
    differ = [k for k in common if by_key[0][k].get("baseline_output") != by_key[1][k].get("baseline_output")]
    if differ:
        raise ValueError(f"{len(differ)} of {len(common)} matched prompts have different baseline outputs in the "
                         f"two runs (first: {differ[0][1][:60]!r}): not judged against the same baseline")
    judged = [k for k in common if by_key[0][k].get("score") is not None and by_key[1][k].get("score") is not None]
    out: dict[str, Any] = {
        "metric": metric, "n_a": len(runs[0]), "n_b": len(runs[1]), "n_matched": len(common), "n": len(judged),
        "n_excluded_failed": len(common) - len(judged), "a": None, "b": None, "difference": None,
        "difference_ci95": None, "p_value": None, "n_boot": int(n_boot), "seed": int(seed),
    }
    if len(judged) < 2:
        return out
    a, b = (annotations([by_key[j][k] for k in judged]) for j in (0, 1))
    if metric == "lc_win_rate":
        fits = [fit_length_glm(x["preference"], x["model_len"], x["baseline_len"]) for x in (a, b)]
        point = [f.lc_win_rate for f in fits]

        def stat(rows: np.ndarray) -> float:
            return _fit_at(a, rows, fits[0].C).lc_win_rate - _fit_at(b, rows, fits[1].C).lc_win_rate
    else:
        column = "win" if metric == "win_rate" else "preference"
        point = [100.0 * float(x[column].mean()) for x in (a, b)]

        def stat(rows: np.ndarray) -> float:
            return 100.0 * float(a[column][rows].mean() - b[column][rows].mean())
    d = point[0] - point[1]
    out.update(a=round(point[0], 2), b=round(point[1], 2), difference=round(d, 2))
    if n_boot > 0:
        idx = np.random.default_rng(seed).integers(0, len(judged), size=(int(n_boot), len(judged)))
        boot = np.array([stat(rows) for rows in idx])
        out["difference_ci95"] = _ci(boot)
        out["p_value"] = round(float((1 + np.sum(np.abs(boot - d) >= abs(d) - 1e-12)) / (1 + len(boot))), 4)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thtb.eval.length_control",
                                     description="LC win rate of one pairwise run, or paired differences of two")
    parser.add_argument("samples", nargs="+", help="pairwise_samples.jsonl of one run (or of two runs: A B)")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    if len(args.samples) == 1:
        out: Any = length_controlled(args.samples[0], n_boot=args.bootstrap, seed=args.seed)
    elif len(args.samples) == 2:
        out = {m: paired_difference(*args.samples, metric=m, n_boot=args.bootstrap, seed=args.seed) for m in METRICS}
    else:
        parser.error("one or two samples files")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
