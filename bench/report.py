"""Reporting for bench/run.py: the tables (terminal, Markdown), the matplotlib plot and the result files.

Everything here works from a results document (the JSON run.py writes), so `run.py --report FILE`
re-renders a saved run without starting a broker.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scenarios import SCENARIOS, SHORT_LABELS, STORAGE_METRICS  # noqa: E402


# ------------------------------------------------------------------------------------------ formatting
def fmt(v: Any, spec: str = ",.0f", dash: str = "-") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return dash
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or a < 0 or b < 0:
        return None
    return a / b


# ------------------------------------------------------------------------------------------ report
def table_rows(results: dict[str, Any], brokers: list[str]) -> tuple[list[str], list[list[str]]]:
    """One row per (scenario, broker); the ratio and target sit on the Leveret row."""
    both = "leveret" in brokers and "rabbitmq" in brokers
    head = ["scenario", "broker", "msg/s", "L/R", "target", "p50 ms", "p99 ms", "CPU s/100k", "RSS MB", "other"]
    rows = []
    for name, per in results.items():
        for i, b in enumerate(brokers):
            r = per.get(b) or {}
            x = per.get("ratio") if (both and b == "leveret") else None
            tgt = SCENARIOS[name].target
            rows.append([
                name if i == 0 else "", b,
                fmt(r.get("consume_rate")) + ("" if r.get("ok") else " !"),
                (fmt(x, ".2f") + ("" if x is None else (" ok" if x >= tgt else " <"))) if both and b == "leveret" else "",
                f">= {tgt:g}x" if both and b == "leveret" else "",
                fmt(r.get("p50_ms"), ".1f"), fmt(r.get("p99_ms"), ".1f"),
                fmt(r.get("cpu_s_per_100k"), ".2f"), fmt(r.get("rss_mb"), ".0f"), _other(r),
            ])
    return head, rows


def _other(r: dict[str, Any]) -> str:
    """The figure a scenario adds: MB/s and peak RSS for large bodies, RSS per idle connection."""
    if r.get("rss_per_conn_kb") is not None:
        return f"{r['rss_per_conn_kb']:.1f} KB/conn, {fmt(r.get('open_s'), '.2f')} s to open {fmt(r.get('connections'))}"
    if r.get("mb_s") is not None:
        return f"{r['mb_s']:.0f} MB/s, peak RSS {fmt(r.get('rss_hwm_mb'), '.0f')} MB"
    return ""


def storage_rows(storage: dict[str, Any], brokers: list[str]) -> tuple[list[str], list[list[str]]]:
    both = "leveret" in brokers and "rabbitmq" in brokers
    first: dict[str, Any] = next(iter(storage.values()), {})
    head = ["backlog (" + fmt(first.get("count")) + " x 64 B persistent)", *brokers]
    if both:
        head += ["L/R", "target"]
    rows = []
    for label, key, unit, target, higher in STORAGE_METRICS:
        row = [f"{label} ({unit})"]
        vals = []
        for b in brokers:
            v = (storage.get(b) or {}).get(key)
            vals.append(v)
            row.append(fmt(v, ".2f" if unit == "s" else ",.0f"))
        if both:
            x = ratio(vals[brokers.index("leveret")], vals[brokers.index("rabbitmq")])
            ok = "" if (x is None or target is None) else (" ok" if (x >= target if higher else x <= target) else " <")
            row += [fmt(x, ".2f") + ok, "-" if target is None else (">= " if higher else "<= ") + f"{target:g}x"]
        rows.append(row)
    return head, rows


def print_table(title: str, head: list[str], rows: list[list[str]], plain: bool, left: int = 2) -> None:
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if not plain:
        t = Table(title=title)
        for i, h in enumerate(head):
            t.add_column(h, justify="left" if i < left else "right")
        for r in rows:
            t.add_row(*r)
        Console(width=max(110, shutil.get_terminal_size((110, 24)).columns)).print(t)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) if i < left else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths, strict=True))))
    for r in rows:
        print("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [f"Run {doc['timestamp']} on {m['cpu']}, {m['cores']} cores, {m['mem_gb']} GB RAM; "
             f"Python {m['python']}, RabbitMQ {m['rabbitmq'] or '-'} (Erlang/OTP {m['erlang_otp'] or '-'}), "
             f"Leveret {m['leveret_rev'] or '-'}; count scale {doc['args']['count_scale']}, "
             f"{doc['args']['repeat']} run(s) per scenario (median).", ""]
    disk = [d.get("mb_s") for d in doc.get("disk") or [] if d.get("mb_s")]
    if disk:
        lines += ["Disk's own limit (dd bs=1M count=1024 conv=fdatasync in the data dirs' file system, before and "
                  "after the interleaved scenarios): " + ", ".join(f"{x:.0f} MB/s" for x in disk) + ".", ""]
    for head, rows in ([table_rows(doc["results"], doc["brokers"])] if doc["results"] else []) + (
            [storage_rows(doc["storage"], doc["brokers"])] if doc.get("storage") else []):
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---" for _ in head) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no PNG", file=sys.stderr)
        return False
    results, storage, brokers = doc["results"], doc.get("storage") or {}, doc["brokers"]
    both = "leveret" in brokers and "rabbitmq" in brokers
    panels = (1 if results else 0) + (1 if results and both else 0) + (1 if storage and both else 0)
    if panels == 0:
        return False
    fig, grid = plt.subplots(1, panels, figsize=(5.5 * panels, 4.6), squeeze=False)
    axes = list(grid[0])
    colors = {"leveret": "#4c72b0", "rabbitmq": "#dd8452"}
    names = list(results)
    if results:
        ax = axes.pop(0)
        width = 0.8 / max(1, len(brokers))
        for i, b in enumerate(brokers):
            vals = [(results[n].get(b) or {}).get("consume_rate") or 0 for n in names]
            xs = [j + (i - (len(brokers) - 1) / 2) * width for j in range(len(names))]
            bars = ax.bar(xs, vals, width, label=b, color=colors.get(b))
            ax.bar_label(bars, labels=[f"{v / 1000:.1f}k" if v else "" for v in vals], fontsize=7)
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel("consumed msg/s (log)")
        ax.set_title("Throughput")
        ax.legend()

    def ratio_panel(ax: Any, labels: list[str], vals: list[float | None], targets: list[float | None],
                    higher: list[bool], title: str) -> None:
        ys = [v or 0 for v in vals]
        cols = []
        for v, t, h in zip(vals, targets, higher, strict=True):
            met = v is not None and t is not None and (v >= t if h else v <= t)
            cols.append("#55a868" if met else ("#c44e52" if (v is not None and t is not None) else "#8c8c8c"))
        bars = ax.bar(range(len(labels)), ys, 0.6, color=cols)
        ax.bar_label(bars, labels=[f"{v:.2f}" if v is not None else "n/a" for v in vals], fontsize=8)
        for j, t in enumerate(targets):
            if t is not None:
                ax.hlines(t, j - 0.4, j + 0.4, colors="black", linestyles="dashed", linewidth=1)
        ax.axhline(1.0, color="grey", linewidth=0.6)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylabel("Leveret / RabbitMQ")
        ax.set_title(title)

    if results and both:
        ratio_panel(axes.pop(0), names, [results[n].get("ratio") for n in names],
                    [SCENARIOS[n].target for n in names], [True] * len(names),
                    "Throughput ratio (dashed: target, higher is better)")
    if storage and both:
        labels, vals, targets, higher = [], [], [], []
        for _label, key, _unit, target, hi in STORAGE_METRICS:
            labels.append(SHORT_LABELS.get(key, key))
            vals.append(ratio((storage.get("leveret") or {}).get(key), (storage.get("rabbitmq") or {}).get(key)))
            targets.append(target)
            higher.append(hi)
        ratio_panel(axes.pop(0), labels, vals, targets, higher,
                    f"Backlog of {fmt((storage.get('rabbitmq') or {}).get('count'))}: ratio (dashed: target)")
    m = doc["machine"]
    fig.suptitle(f"Leveret vs RabbitMQ {m['rabbitmq'] or ''} - {doc['timestamp']} - {m['cores']} cores, "
                 f"{m['cpu'][:40]}", fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".png.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)
    return True


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def report(doc: dict[str, Any], args: argparse.Namespace, write_json: bool) -> None:
    """Print the tables of a results document and write it out (JSON, Markdown, PNG)."""
    if doc["results"]:
        head, rows = table_rows(doc["results"], doc["brokers"])
        print_table("consumed msg/s, latency, broker CPU and RSS  (! = run not OK)", head, rows, args.plain)
    if doc.get("storage"):
        head, rows = storage_rows(doc["storage"], doc["brokers"])
        print_table("storage: backlog and kill -9 recovery", head, rows, args.plain, left=1)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    wrote = []
    if write_json:
        text = json.dumps(doc, indent=1, default=str) + "\n"
        write_atomic(out / f"{doc['timestamp']}.json", text)
        write_atomic(out / "latest.json", text)
        wrote += [f"{doc['timestamp']}.json", "latest.json"]
    write_atomic(out / "latest.md", markdown(doc))
    wrote.append("latest.md")
    if not args.no_plot and plot(doc, out / "latest.png"):
        wrote.append("latest.png")
    print(f"\nwrote {', '.join(str(out / w) for w in wrote)}  ({doc['duration_s']:.0f} s run)")
