"""The soak's chart for the docs, as plain SVG (no plotting library): RSS over time of the guardian
processes and of the stack's services, and emit -> Redis p99 per window against its bar."""

from __future__ import annotations

from html import escape
from pathlib import Path

WIDTH, PANEL_H, TOP, LEFT, RIGHT, BOTTOM = 760, 200, 34, 64, 150, 34
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _nice_max(value: float) -> float:
    for scale in (1, 10, 100, 1000, 10000, 100000):
        for step in (1, 2, 2.5, 5):
            if step * scale >= value:
                return step * scale
    return value


def _frame(out: list[str], y0: float, title: str, unit: str, x_max: float, y_max: float, x_label: str) -> None:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, PANEL_H - TOP - BOTTOM
    out.append(f'<text x="{LEFT}" y="{y0 + 20}" font-weight="bold">{escape(title)}</text>')
    for k in range(5):
        y = y0 + TOP + plot_h - plot_h * k / 4
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{y_max * k / 4:g}</text>')
    out.append(f'<text x="14" y="{y0 + TOP + plot_h / 2:.1f}" transform="rotate(-90 14 {y0 + TOP + plot_h / 2:.1f})"'
               f' text-anchor="middle">{escape(unit)}</text>')  # fmt: skip
    for k in range(6):
        x = LEFT + plot_w * k / 5
        out.append(f'<text x="{x:.1f}" y="{y0 + TOP + plot_h + 16}" text-anchor="middle">{x_max * k / 5 / 60:g}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{y0 + PANEL_H - 2}" text-anchor="middle">{escape(x_label)}</text>')


def _lines(out: list[str], y0: float, title: str, series: dict[str, list[tuple[float, float]]], x_max: float,
           marker_s: float | None = None) -> None:  # fmt: skip
    plot_w, plot_h = WIDTH - LEFT - RIGHT, PANEL_H - TOP - BOTTOM
    y_max = _nice_max(max((v for points in series.values() for _, v in points), default=1) * 1.1)
    _frame(out, y0, title, "MiB", x_max, y_max, "minutes")
    if marker_s is not None:
        x = LEFT + plot_w * marker_s / x_max
        out.append(f'<line x1="{x:.1f}" y1="{y0 + TOP}" x2="{x:.1f}" y2="{y0 + TOP + plot_h}" stroke="#888"'
                   ' stroke-dasharray="4 3"/>')  # fmt: skip
    for i, (name, points) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{LEFT + plot_w * t / x_max:.1f},{y0 + TOP + plot_h * (1 - v / y_max):.1f}" for t, v in points)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{path}"/>')
        ly = y0 + TOP + 12 + 16 * i
        out.append(f'<line x1="{WIDTH - RIGHT + 12}" y1="{ly - 4}" x2="{WIDTH - RIGHT + 30}" y2="{ly - 4}"'
                   f' stroke="{colour}" stroke-width="3"/>')  # fmt: skip
        last = points[-1][1] if points else 0
        out.append(f'<text x="{WIDTH - RIGHT + 36}" y="{ly}">{escape(name)} {last:.0f}</text>')


def _bars(out: list[str], y0: float, result: dict) -> None:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, PANEL_H - TOP - BOTTOM
    windows = result["emit_to_redis_windows"]
    first = windows[0]["p99_ms"]
    bar = first * result["bars"]["p99_last_over_first_at_most"]
    y_max = _nice_max(max([w["p99_ms"] for w in windows] + [bar]) * 1.1)
    window_s = result["window_s"]
    x_max = window_s * len(windows)
    _frame(out, y0, f"emit -> Redis p99 per {window_s / 60:g}-minute window", "ms", x_max, y_max, "minutes")
    slot = plot_w / len(windows)
    for i, w in enumerate(windows):
        h = plot_h * w["p99_ms"] / y_max
        x = LEFT + slot * i + slot * 0.15
        out.append(f'<rect x="{x:.1f}" y="{y0 + TOP + plot_h - h:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}"'
                   f' fill="{COLOURS[0]}"/>')  # fmt: skip
        out.append(f'<text x="{x + slot * 0.35:.1f}" y="{y0 + TOP + plot_h - h - 4:.1f}" text-anchor="middle">'
                   f"{w['p99_ms']:g}</text>")  # fmt: skip
    y = y0 + TOP + plot_h - plot_h * bar / y_max
    out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#d62728"'
               ' stroke-dasharray="6 3"/>')  # fmt: skip
    out.append(f'<text x="{WIDTH - RIGHT + 12}" y="{y + 4:.1f}" fill="#d62728">bar: 1.5x first</text>')


def write_chart(result: dict, path: Path) -> None:
    samples = result["samples"]
    x_max = result["window_s"] * len(result["emit_to_redis_windows"])

    def series(names: list[str], key: str = "rss_mib") -> dict[str, list[tuple[float, float]]]:
        return {n: [(s["t_s"], s["processes"][n][key]) for s in samples if s["processes"].get(n)] for n in names}

    ours = [n for n in samples[0]["processes"] if n == "producer" or n.startswith("worker")]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{PANEL_H * 3 + 30}"'
           f' font-family="sans-serif" font-size="12">', '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{LEFT}" y="16" font-size="14" font-weight="bold">soak: {result["minutes"]:g} min at'
           f' {result["rate_events_per_s"]} events/s, {result["workers"]} workers,'
           f' {result["machine"]["measured_at"][:10]}</text>']  # fmt: skip
    _lines(out, 20, "RSS of the guardian processes (dashed: the bar's baseline)", series(ours), x_max,
           result["bars"]["rss_baseline_at_s"])  # fmt: skip
    stack = series(["kafka", "redis"]) | {
        "postgres (PSS, all)": [(s["t_s"], s["processes"]["postgres"]["tree_pss_mib"]) for s in samples
                           if s["processes"].get("postgres")]}  # fmt: skip
    _lines(out, 20 + PANEL_H, "RSS of the stack's services (PostgreSQL: PSS of the postmaster and its backends)",
           {k: v for k, v in stack.items() if v}, x_max)  # fmt: skip
    _bars(out, 20 + PANEL_H * 2, result)
    out.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")
