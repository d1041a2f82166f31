"""The accuracy report's summaries of the JSON store and the formatting its
sections share.
"""

import math
from pathlib import Path

import numpy as np
from accuracy_harness import record_key
from accuracy_settings import FAMILY_DATA
from accuracy_settings import GRIDS
from accuracy_settings import METHODS
from accuracy_settings import PIPELINE
from accuracy_settings import ROOT
from accuracy_settings import SEARCH_STANDARDIZE
from accuracy_settings import TUNE_SEED
from accuracy_settings import family_hyperparameters
from accuracy_settings import hp_key

# The hyper-parameters' symbols in the tables.
HP_NAMES = {
    "temperature": "T",
    "label_weight": "w",
    "alpha": "α",
    "beta": "β",
    "epsilon": "ε",
}


def mean_std(values):
    values = np.asarray(values, dtype="float64")
    if values.size == 0:
        return float("nan"), float("nan")
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), std


def run_parts(method, hp):
    """The record-key parts of a method's runs: family, data, hp key."""
    family = METHODS[method][1]
    harness_hp = family_hyperparameters(method, hp)
    return family, FAMILY_DATA[family], hp_key(harness_hp)


def legacy_run_parts(method, hp):
    """Key parts of the earlier harness (CODE_VERSION 1, its own training
    loop): still read for the cross-check records it wrote."""
    family = {"ce": "poly", "lskd": "lskd"}.get(method, METHODS[method][1])
    data = "alone" if method == "ce" else "transfer"
    harness_hp = {"epsilon": 0.0} if method == "ce" else None
    if harness_hp is None:
        harness_hp = family_hyperparameters(method, hp)
    return family, data, hp_key(harness_hp)


def summarize(records, profile_name, backend, profile):
    """Per setting: teacher, chosen hyper-parameters, seeds' metrics."""
    reader = _Records(records, profile_name, backend)
    out = {}
    for name in profile["settings"]:
        entry = reader.setting(name, list(range(profile["seeds"])))
        if entry is not None:
            out[name] = entry
    return out


class _Records:
    """The stored records of one profile and backend, read by setting."""

    def __init__(self, records, profile_name, backend):
        self.records = records
        self.profile_name, self.backend = profile_name, backend

    def get(self, *parts):
        key = record_key(self.profile_name, self.backend, *parts)
        return self.records.get(key)

    def runs_of(self, name, method, hp, seeds):
        """`({seed: record}, legacy)` of the seeds that ran."""
        if method == PIPELINE:
            parts = [("pipeline", PIPELINE)]
        else:
            parts = [("run", *run_parts(method, hp))]
            parts.append(("run", *legacy_run_parts(method, hp)))
        for legacy, key in enumerate(parts):
            runs = {s: self.get(name, *key, f"seed={s}") for s in seeds}
            runs = {s: r for s, r in runs.items() if r is not None}
            if runs:
                return runs, bool(legacy)
        return {}, False

    def setting(self, name, seeds):
        """The summary of setting `name` (None before it has finished)."""
        get = self.get
        teacher = get(name, "teacher")
        chosen = get(name, "chosen")
        if teacher is None or chosen is None:
            return None
        rows = {
            method: self.row(name, method, chosen, seeds)
            for method in sorted(chosen, key=list(METHODS).index)
        }
        tuning = {
            m: get(name, "tuning", m) for m in GRIDS if get(name, "tuning", m)
        }
        return {
            "setting": get(name, "setting"),
            "teacher": teacher,
            "rows": rows,
            "not_applicable": {
                m: record["reason"]
                for m in METHODS
                if (record := get(name, "not_applicable", m))
            },
            "grid": get(name, "grid"),
            "tuning": tuning,
            "tuning_seconds": self.tuning_seconds(name, tuning),
            "study": {
                m: get(name, "study", m)
                for m in SEARCH_STANDARDIZE
                if get(name, "study", m)
            },
        }

    def row(self, name, method, chosen, seeds):
        """One method's runs over the seeds and their metrics."""
        hp = chosen[method]
        by_seed, legacy = self.runs_of(name, method, hp, seeds)
        runs = list(by_seed.values())
        kd_temperature = chosen.get("kd", {}).get("temperature", 1.0)
        selected = method.startswith("pt_") and method not in SEARCH_STANDARDIZE
        return {
            "hp": hp,
            "runs": runs,
            "by_seed": by_seed,
            "legacy": legacy,
            "test": mean_std([r["test_accuracy"] for r in runs]),
            "nll": mean_std([r["test_nll"] for r in runs if "test_nll" in r]),
            "ece": mean_std([r["test_ece"] for r in runs if "test_ece" in r]),
            # After temperature scaling on the validation split (only
            # when every run recorded it).
            "nll_calibrated": _all_or_nothing(runs, "test_nll_calibrated"),
            "ece_calibrated": _all_or_nothing(runs, "test_ece_calibrated"),
            "pipeline": [r["search"] for r in runs]
            if method == PIPELINE
            else None,
            "selection": self.get(
                name, "selection", method, f"T={kd_temperature}"
            )
            if selected
            else None,
            "search": self.get(name, "search", method)
            if method in SEARCH_STANDARDIZE
            else None,
        }

    def tuning_seconds(self, name, tuning):
        """Seconds of each baseline's tuning (when every run is stored)."""
        out = {}
        for method, entry in tuning.items():
            seconds = []
            for hp in entry["grid"]:
                runs, _ = self.runs_of(name, method, hp, [TUNE_SEED])
                seconds += [r["seconds"] for r in runs.values()]
            if len(seconds) == len(entry["grid"]):
                out[method] = float(np.sum(seconds))
        return out


def _all_or_nothing(runs, field):
    """Mean and std of `field` over `runs`; NaNs unless every run has it."""
    if not runs or any(field not in r for r in runs):
        return float("nan"), float("nan")
    return mean_std([r[field] for r in runs])


def pct(mean_std, digits=1):
    mean, std = mean_std
    if not math.isfinite(mean):
        return "-"
    return f"{100 * mean:.{digits}f} ± {100 * std:.{digits}f}"


def pipeline_winners(row):
    """The pipeline's winners, one per seed (`"KD T=4 (seeds 0, 2); ..."`)."""
    winners = {}
    for seed, run in row["by_seed"].items():
        search = run["search"]
        label = search["candidates"][search["winner"]]["label"]
        winners.setdefault(label, []).append(str(seed))
    return "; ".join(
        f"{label} (seed{'s' if len(s) > 1 else ''} {', '.join(s)})"
        for label, s in winners.items()
    )


def hp_text(method, hp):
    if method == "ce":
        return "-"
    if "coefficients" in hp:
        eps = np.asarray(hp["coefficients"], dtype="float64")
        if eps.ndim == 2:
            text = "class-wise, mean " + ", ".join(
                f"{v:.2g}" for v in eps.mean(0)
            )
        else:
            text = "ε = " + ", ".join(f"{v:.2g}" for v in eps)
        return f"{text}; T = {hp['temperature']:.3g}"
    return ", ".join(f"{HP_NAMES.get(k, k)} = {v:g}" for k, v in hp.items())


def best_index(cells_means):
    """Index of the largest finite mean (None if none)."""
    finite = [(m, i) for i, m in enumerate(cells_means) if math.isfinite(m)]
    return max(finite)[1] if finite else None


def compute_text(records, profile_name, backend):
    """Summed stored training times: robust to resumed or split runs."""
    prefix = record_key(profile_name, backend, "")
    students, teachers, searches, count = 0.0, 0.0, 0.0, 0
    pipelines, calls = 0.0, 0
    for key, record in records.items():
        if not key.startswith(prefix):
            continue
        if "|run|" in key:
            students += record["seconds"]
            count += 1
        elif key.endswith("|teacher"):
            teachers += record["seconds"]
        elif "|search|" in key:
            searches += record["seconds"]
        elif "|pipeline|" in key:
            pipelines += record["seconds"]
            calls += 1
    pipeline_text = (
        f"{calls} pipeline calls ({pipelines / 60:.1f} min), " if calls else ""
    )
    return (
        f"{count} student trainings ({students / 60:.1f} min), teachers "
        f"({teachers / 60:.1f} min), searches ({searches / 60:.1f} min), "
        + pipeline_text
        + "summed over the stored records (the run resumes from the JSON and "
        "may be split over processes with `--settings`; a shared 2-core "
        "machine)."
    )


def relative_path(path):
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def md_link(path):
    try:
        return path.resolve().relative_to(ROOT)
    except ValueError:
        return path


def methods_of(summary):
    """Every method of the settings' rows, in order of first appearance."""
    methods = []
    for entry in summary.values():
        methods += [m for m in entry["rows"] if m not in methods]
    return methods


def kd_differences(summary, method):
    """Where `method` and tuned KD both ran: `(comparisons, diffs, misses)`.

    `comparisons` holds `(name, entry, row, diff)` with `diff` the mean test
    accuracy of `method` minus KD's; `misses` names the settings where it
    is below KD by more than KD's standard deviation.
    """
    comparisons, diffs, misses = [], [], []
    for n, e in summary.items():
        kd, pt = e["rows"].get("kd"), e["rows"].get(method)
        if not kd or not pt or not kd["runs"] or not pt["runs"]:
            continue
        diff = pt["test"][0] - kd["test"][0]
        comparisons.append((n, e, pt, diff))
        diffs.append(diff)
        if diff < -kd["test"][1]:
            misses.append(
                f"`{n}` ({100 * diff:+.1f} vs std {100 * kd['test'][1]:.1f})"
            )
    return comparisons, diffs, misses
