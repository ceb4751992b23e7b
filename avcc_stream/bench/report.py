"""What every benchmark mode hands back: tables, a summary, notes, and where it ran.

A `BenchReport` is plain data. `print_report` shows it on the terminal as aligned text
tables; `write_report` saves it as `<mode>.json` (everything, machine-readable, for
comparisons across runs) and `<mode>.md` (the same tables for docs/performance.md) in the
results folder. Missing values are `None` in JSON and "-" in the tables, never 0.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

Formatter = str | Callable[[Any], str]


@dataclass(frozen=True)
class Column:
    """One table column: the row key it shows, its header, and how a value is printed."""

    key: str
    header: str
    fmt: Formatter = "{}"

    @property
    def numeric(self) -> bool:
        return self.fmt != "{}"

    def render(self, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if callable(self.fmt):
            return self.fmt(value)
        return self.fmt.format(value)


@dataclass
class Table:
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def text_lines(self) -> list[str]:
        cells = [[c.header for c in self.columns]] + [[c.render(row.get(c.key)) for c in self.columns] for row in self.rows]
        widths = [max(len(line[i]) for line in cells) for i in range(len(self.columns))]
        out = [self.title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths)), "  ".join("-" * w for w in widths)]
        out += [
            "  ".join(v.rjust(w) if c.numeric else v.ljust(w) for c, v, w in zip(self.columns, line, widths))
            for line in cells[1:]
        ]
        return out

    def markdown_lines(self) -> list[str]:
        out = [f"### {self.title}", "", "| " + " | ".join(c.header for c in self.columns) + " |"]
        out.append("|" + "|".join("---:" if c.numeric else "---" for c in self.columns) + "|")
        for row in self.rows:
            out.append("| " + " | ".join(c.render(row.get(c.key)).replace("|", "\\|") for c in self.columns) + " |")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": [{"key": c.key, "header": c.header} for c in self.columns],
            "rows": [_json_safe(row) for row in self.rows],
        }


@dataclass
class BenchReport:
    """One mode's results. `summary` holds verdicts (targets met or missed), `notes` caveats."""

    mode: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    tables: list[Table] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # extra machine-readable results
    started: str = field(default_factory=lambda: utc_now())
    finished: str | None = None

    def finish(self) -> BenchReport:
        self.finished = utc_now()
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "started": self.started,
            "finished": self.finished,
            "machine": _json_safe(self.machine),
            "settings": _json_safe(self.settings),
            "tables": [t.to_json() for t in self.tables],
            "summary": list(self.summary),
            "notes": list(self.notes),
            "data": _json_safe(self.data),
        }

    def markdown(self) -> str:
        m = self.machine
        lines = [
            f"## avcc-stream bench {self.mode}",
            "",
            f"- date: {self.started} (finished {self.finished or '-'})",
            f"- machine: {describe_machine(m)}",
            f"- software: {describe_software(m)}",
            f"- commit: {m.get('commit') or '-'}{' (working tree has uncommitted changes)' if m.get('dirty') else ''}",
            f"- load average (1 min) at start / end: {_load(m.get('load_start'))} / {_load(m.get('load_end'))}",
            f"- settings: `{json.dumps(_json_safe(self.settings), sort_keys=True)}`",
            "",
        ]
        for table in self.tables:
            lines += table.markdown_lines() + [""]
        if self.summary:
            lines += ["### Summary", ""] + [f"- {s}" for s in self.summary] + [""]
        if self.notes:
            lines += ["### Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(lines)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_machine(m: dict[str, Any]) -> str:
    cpu = f"{m.get('cpu_model', '?')}, {m.get('cpu_cores', '?')} cores"
    mem = f", {m['memory_gib']:.0f} GiB" if m.get("memory_gib") else ""
    gpus = m.get("gpus") or []
    gpu = ", GPU: " + "; ".join(gpus) if gpus else ", no GPU"
    return f"{cpu}{mem}{gpu}"


def describe_software(m: dict[str, Any]) -> str:
    return (
        f"Python {m.get('python')}, torch {m.get('torch')} (CUDA {m.get('torch_cuda') or 'none'}), "
        f"torchaudio {m.get('torchaudio')}, PyAV {m.get('pyav')} (FFmpeg libavcodec {m.get('libavcodec')}), "
        f"torch threads {m.get('torch_threads')}"
    )


def _load(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_report(report: BenchReport, stream: TextIO | None = None) -> None:
    import sys

    out = stream or sys.stdout
    print(f"avcc-stream bench {report.mode} on {describe_machine(report.machine)}", file=out)
    for table in report.tables:
        print("", file=out)
        for line in table.text_lines():
            print(line, file=out)
    for heading, items in (("summary", report.summary), ("notes", report.notes)):
        if items:
            print(f"\n{heading}:", file=out)
            for item in items:
                print(f"  - {item}", file=out)
    out.flush()


def default_results_dir(root: Path | str = "results/bench") -> Path:
    """`results/bench/<UTC timestamp>/`, one folder per invocation."""
    return Path(root) / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def write_report(report: BenchReport, folder: Path | str) -> tuple[Path, Path]:
    """Write `<mode>.json` and `<mode>.md` into `folder` (created); returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"{report.mode}.json"
    md_path = folder / f"{report.mode}.md"
    json_path.write_text(json.dumps(report.to_json(), indent=2, sort_keys=False) + "\n")
    md_path.write_text(report.markdown() + "\n")
    return json_path, md_path


def _json_safe(value: Any) -> Any:
    """Tuples -> lists, NaN/inf -> None, dataclasses -> dicts, numpy scalars -> Python numbers."""
    if hasattr(value, "__dataclass_fields__"):
        value = asdict(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _json_safe(value.item())
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), None for no values."""
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None
