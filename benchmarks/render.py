"""Renders the stored records as the markdown tables of BENCHMARKS.md.

BENCHMARKS.md is written by hand except between the markers
`<!-- table NAME -->` and `<!-- end NAME -->`, where `report` puts the
table `NAME` (from the `TABLES` of the case modules) rendered from
`benchmarks/results/<case>.json`, followed by the stamp of each run that
produced it (command, commit, machine, date, load).
"""

import dataclasses
import importlib
import json
import math
import re
import statistics
from pathlib import Path

from benchmarks import harness

DOCUMENT = harness.ROOT / "BENCHMARKS.md"
MARKER = re.compile(
    r"(<!-- table (?P<name>[\w.-]+) -->\n).*?(<!-- end (?P=name) -->)",
    re.DOTALL,
)


@dataclasses.dataclass
class Table:
    """A table of one case's records.

    `columns` are `(header, value, format)`: `value` a record key or a
    function of the row, `format` a format spec ("{:.2f}") or a function
    returning the cell; `rows` turns the records into rows (default: the
    records, backends in `harness.BACKENDS` order); `where` keeps records
    whose fields equal its values.
    """

    case: str
    columns: list
    rows: object = None
    where: dict = None


def tables():
    found = {}
    for module in harness.MODULES:
        found.update(importlib.import_module(f"benchmarks.{module}").TABLES)
    return found


def cell(value, form):
    if value is None:
        return "–"
    if callable(form):
        return form(value)
    return form.format(value)


def mean_std(values, digits=1, scale=1.0):
    """`mean ± std` (sample std over seeds) of `values` times `scale`."""
    values = [v * scale for v in values]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def mean_se(values):
    """`(mean, standard error)` of paired differences: SE = sample std /
    sqrt(n), 0 for one value; `None` for none."""
    if not values:
        return None
    if len(values) == 1:
        return values[0], 0.0
    se = statistics.stdev(values) / math.sqrt(len(values))
    return statistics.mean(values), se


def groups(records, keys):
    """Records grouped by the values of `keys`, in first-seen order."""
    out = {}
    for record in records:
        out.setdefault(tuple(record.get(k) for k in keys), []).append(record)
    return out


def markdown_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join(" --- " for _ in headers) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def stamp_line(run):
    load = run["load"]
    load_text = (
        f"load {load[0][0]:.2f} → {load[1][0]:.2f}"
        if load[0] and load[1]
        else "load unknown"
    )
    return (
        f"`{run['command']}` · commit {run['commit']} · {run['machine']} · "
        f"{run['date'][:16].replace('T', ' ')} UTC · {load_text} · "
        f"{run['seconds']:.0f} s"
    )


def render(table, data, shown=None):
    """`table` rendered from a result file's `data`, then its runs' stamps
    (or "as above" when `shown`, the last stamps printed, are the same)."""
    records = selected(table, data["records"])
    order = {b: i for i, b in enumerate(harness.BACKENDS)}
    records = sorted(records, key=lambda r: order.get(r.get("backend"), -1))
    rows = table.rows(records) if table.rows else records
    body = [
        [
            cell(value(row) if callable(value) else row.get(value), form)
            for _, value, form in table.columns
        ]
        for row in rows
    ]
    lines = [markdown_table([c[0] for c in table.columns], body), ""]
    runs = stamps(table, data)
    if runs == shown:
        lines.append("Measured: as above.")
    elif len(runs) == 1:
        lines.append(f"Measured: {runs[0]}")
    else:
        lines += ["Measured:", ""] + [f"- {s}" for s in runs]
    return "\n".join(lines).rstrip() + "\n"


def selected(table, records):
    """The records `table.where` keeps."""
    where = table.where or {}
    return [r for r in records if all(r.get(k) == v for k, v in where.items())]


def stamps(table, data):
    """The stamp lines of the runs whose records `table` shows."""
    used = {r["run"] for r in selected(table, data["records"])}
    return [stamp_line(run) for run in data["runs"] if run["id"] in used]


def report(text=None, folder=None):
    """BENCHMARKS.md's text with every marked table rendered anew."""
    folder = Path(folder or harness.RESULTS)
    text = DOCUMENT.read_text() if text is None else text
    known, cache, shown = tables(), {}, [None]
    missing = [
        m["name"] for m in MARKER.finditer(text) if m["name"] not in known
    ]
    if missing:
        raise ValueError(f"BENCHMARKS.md names unknown table(s) {missing}")

    def replace(match):
        table = known[match["name"]]
        if table.case not in cache:
            path = folder / f"{table.case}.json"
            cache[table.case] = json.loads(path.read_text())
        data = cache[table.case]
        text = render(table, data, shown[0])
        shown[0] = stamps(table, data)
        return match[1] + text + match[3]

    return MARKER.sub(replace, text)
