"""The accuracy report's cross-check on the other backends."""

import math

import numpy as np
import timing
from accuracy_harness import record_key
from accuracy_settings import BACKENDS
from accuracy_settings import CROSS
from accuracy_settings import METHODS

from accuracy_report.summary import mean_std
from accuracy_report.summary import pct
from accuracy_report.summary import summarize


def cross_check_section(records, meta):
    backends = [
        b for b in BACKENDS if record_key("cross", b, "meta") in records
    ]
    if not backends:
        return []
    profile = CROSS
    summaries = {b: summarize(records, "cross", b, profile) for b in backends}
    reference = "jax" if "jax" in backends else backends[0]
    lines = [
        "### Cross-check on the other backends",
        "",
        "Same settings, fixed hyper-parameters (KD T = 4; DKD α = 1, β = 4, "
        "T = 4; PTLoss M = 5 shared at T = 4, coefficients selected on each "
        "backend's own teacher), "
        f"{profile['seeds']} seeds, the full run's epochs and sizes. "
        "Each backend trains its own teacher. A cell agrees when the "
        f"difference from {reference} is within 2 standard errors "
        "(sqrt(s1²/n1 + s2²/n2)).",
        "",
    ]
    legacy = sorted(
        b
        for b in backends
        for entry in summaries[b].values()
        for row in entry["rows"].values()
        if row["legacy"]
    )
    if legacy:
        lines += [
            "**Note:** the numbers of "
            + ", ".join(f"`{b}`" for b in dict.fromkeys(legacy))
            + " below come from the earlier harness (its own training "
            "loop with the same losses, before every method trained "
            "through `keras_ptloss.Distiller`); this cross-check was not "
            "rerun with the Distiller path.",
            "",
        ]
    for b in backends:
        key = record_key("cross", b, "meta")
        entry = records[key].get(f"cross|{b}", {})
        lines.append(
            f"- `{b}`: `{entry.get('command', '?')}` ({entry.get('date', '?')})"
        )
    lines.append("")
    headers = ["setting", "method"] + [f"{b} test acc (%)" for b in backends]
    headers += [
        f"{b} − {reference} (agree?)" for b in backends if b != reference
    ]
    rows, agree_all = [], True
    for name in profile["settings"]:
        for method in profile["methods"]:
            row, agree = _method_row(summaries, reference, name, method)
            rows.append(row)
            agree_all &= agree
        rows.append(_teacher_row(summaries, reference, name))
    lines.append(
        timing.markdown_table(headers, rows, "ll" + "r" * (len(headers) - 2))
    )
    lines.append("")
    lines.append(
        "All cells agree within seed noise."
        if agree_all
        else "Some cells differ by more than 2 standard errors (marked NO)."
    )
    return lines


def _method_row(summaries, reference, name, method):
    """Test accuracies of `method` on every backend and the differences
    from `reference`: `(row, every difference within 2 SE)`."""
    backends = list(summaries)
    cells, stats = [], {}
    for b in backends:
        entry = summaries[b].get(name)
        row = entry["rows"].get(method) if entry else None
        if row is None or not row["runs"]:
            cells.append("-")
            continue
        accs = [r["test_accuracy"] for r in row["runs"]]
        stats[b] = accs
        cells.append(pct(mean_std(accs)))
    diffs, agree_all = [], True
    for b in backends:
        if b == reference:
            continue
        if b not in stats or reference not in stats:
            diffs.append("-")
            continue
        a, r = np.asarray(stats[b]), np.asarray(stats[reference])
        diff = a.mean() - r.mean()
        se = math.sqrt(a.var(ddof=1) / a.size + r.var(ddof=1) / r.size)
        ok = abs(diff) <= 2 * se + 1e-12
        agree_all &= ok
        diffs.append(f"{100 * diff:+.1f} ({'yes' if ok else 'NO'})")
    return [name, METHODS[method][0]] + cells + diffs, agree_all


def _teacher_row(summaries, reference, name):
    return (
        [name, "teacher"]
        + [
            f"{100 * summaries[b][name]['teacher']['test_accuracy']:.1f}"
            if name in summaries[b]
            else "-"
            for b in summaries
        ]
        + ["" for b in summaries if b != reference]
    )
