"""Draws a Grafana dashboard's panels with matplotlib from Prometheus query
results, each where the dashboard's 24-column grid puts it: time series
(lines, or stacked areas when the panel stacks), bar gauges, row titles.
Colours and dashes follow the panels' `byRegexp` overrides; legends follow
their `legendFormat`."""

import re
from datetime import datetime

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
NAMED = {"red": "#f2495c", "yellow": "#fade2a", "green": "#73bf69", "blue": "#5794f2"}
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9",
           "#705da0", "#37872d", "#fade2a", "#447ebc", "#c15c17", "#890f02", "#0a437c"]
# Inches per grid column and per grid row unit.
COLUMN, ROW = 0.8, 0.42


def all_panels(dashboard):
    """Every panel, rows' nested panels included, rows themselves too."""
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def legend(fmt, labels):
    """A series' name: the legendFormat with {{label}} filled in."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def unit_formatter(unit):
    def seconds(v, _):
        if v == 0:
            return "0"
        return f"{v * 1000:.0f} ms" if abs(v) < 1 else f"{v:.3g} s"

    def rate(v, _):
        return f"{v:.3g}/s"

    return FuncFormatter({"s": seconds, "reqps": rate, "ops": rate}.get(unit, lambda v, _: f"{v:.3g}"))


def overrides(panel, name):
    """Colour and line style the panel's overrides give a series."""
    color, dashes = None, None
    for o in panel["fieldConfig"].get("overrides", []):
        if o["matcher"]["id"] != "byRegexp" or not re.fullmatch(o["matcher"]["options"], name):
            continue
        for prop in o["properties"]:
            if prop["id"] == "color":
                color = NAMED.get(prop["value"]["fixedColor"], prop["value"]["fixedColor"])
            elif prop["id"] == "custom.lineStyle":
                dashes = prop["value"].get("dash")
    return color, dashes


def series(results, fmt):
    """(name, [(time, value)...]) of each result of a range query."""
    out = []
    for r in results:
        points = [(datetime.fromtimestamp(t), float(v)) for t, v in r["values"]]
        points = [(t, v) for t, v in points if v == v]  # NaN: histogram_quantile of nothing
        if points:
            out.append((legend(fmt, r["metric"]), points))
    return out


def frame(fig, panel, inches):
    """The panel's background and title; returns its rectangle in figure fractions."""
    g = panel["gridPos"]
    width, height = inches
    x, w = g["x"] * COLUMN / width, g["w"] * COLUMN / width
    h = g["h"] * ROW / height
    y = 1 - (g["y"] * ROW + 0.6) / height - h
    pad = 0.004
    fig.patches.append(Rectangle((x + pad, y + pad), w - 2 * pad, h - 2 * pad,
                                 transform=fig.transFigure, color=PANEL, zorder=-1))
    fig.text(x + 0.012, y + h - 0.012, panel["title"], color=TEXT, fontsize=10,
             fontweight="bold", va="top")
    return x, y, w, h


def inset(fig, rect, left, right, top, bottom):
    """The part of a panel's rectangle left after margins given in inches."""
    width, height = fig.get_size_inches()
    x, y, w, h = rect
    return (x + left / width, y + bottom / height,
            w - (left + right) / width, h - (top + bottom) / height)


def no_data(fig, rect):
    x, y, w, h = rect
    fig.text(x + w / 2, y + h / 2, "No data", color="#8e8e8e", fontsize=11, ha="center")


def style(ax, unit):
    ax.set_facecolor(PANEL)
    ax.tick_params(colors=TEXT, labelsize=7)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.grid(color=GRID, linewidth=0.6)
    ax.yaxis.set_major_formatter(unit_formatter(unit))
    locator = mdates.AutoDateLocator(minticks=4, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, show_offset=False))


def timeseries(fig, panel, data, rect):
    lines = [s for target, results in data for s in series(results, target.get("legendFormat", ""))]
    if not lines:
        return no_data(fig, rect)
    rows = (len(lines) + 3) // 4
    ax = fig.add_axes(inset(fig, rect, left=0.7, right=0.2, top=0.4, bottom=0.3 + 0.17 * rows))
    defaults = panel["fieldConfig"]["defaults"]
    style(ax, defaults.get("unit", "short"))
    stacked = defaults.get("custom", {}).get("stacking", {}).get("mode") == "normal"
    colors = []
    for i, (name, _) in enumerate(lines):
        colors.append(overrides(panel, name)[0] or PALETTE[i % len(PALETTE)])
    if stacked:
        times = sorted({t for _, points in lines for t, _ in points})
        values = [[dict(points).get(t, 0.0) for t in times] for _, points in lines]
        ax.stackplot(times, values, colors=colors, alpha=0.55, labels=[n for n, _ in lines],
                     linewidth=0.8, edgecolor=colors)
    else:
        for (name, points), color in zip(lines, colors):
            dashes = overrides(panel, name)[1]
            line, = ax.plot([t for t, _ in points], [v for _, v in points], color=color,
                            linewidth=1.3, label=name)
            if dashes:
                line.set_dashes(dashes[:2])
    ax.set_ylim(bottom=0)
    box = ax.get_position()
    below = (box.x0, box.y0 - 0.24 / fig.get_size_inches()[1])
    ax.legend(loc="upper left", bbox_to_anchor=below, bbox_transform=fig.transFigure, ncol=4, fontsize=7, frameon=False,
              labelcolor=TEXT, handlelength=1.2, columnspacing=1.2)


def bargauge(fig, panel, data, rect):
    bars = []
    for target, results in data:
        for r in results:
            bars.append((legend(target.get("legendFormat", ""), r["metric"]), float(r["value"][1])))
    if not bars:
        return no_data(fig, rect)
    bars.sort()
    ax = fig.add_axes(inset(fig, rect, left=2.3, right=0.5, top=0.45, bottom=0.15))
    ax.set_facecolor(PANEL)
    top = max(v for _, v in bars) or 1
    default = NAMED.get(panel["fieldConfig"]["defaults"].get("color", {}).get("fixedColor"), PALETTE[0])
    for i, (name, value) in enumerate(bars):
        color = overrides(panel, name)[0] or default
        ax.barh(i, top, color=GRID, height=0.6)
        ax.barh(i, value, color=color, height=0.6)
        ax.text(top * 1.01, i, f"{value:g}", color=color, va="center", fontsize=10, fontweight="bold")
    ax.set_yticks(range(len(bars)), [n for n, _ in bars], color=TEXT, fontsize=8)
    ax.set_xlim(0, top * 1.08)
    ax.invert_yaxis()
    ax.set_xticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    ax.tick_params(length=0)


def draw(dashboard, data, out, note):
    """Draws every panel of `dashboard` from `data` ({panel id: [(target,
    results)]}) into the PNG `out`, with `note` under the title."""
    every = all_panels(dashboard)
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in every)
    inches = (24 * COLUMN, bottom * ROW + 0.6)
    fig = plt.figure(figsize=inches, dpi=110, facecolor=BACKGROUND)
    fig.text(0.008, 1 - 0.2 / inches[1], dashboard["title"], color=TEXT, fontsize=14,
             fontweight="bold", va="top")
    fig.text(0.09, 1 - 0.24 / inches[1], note, color="#8e8e8e", fontsize=8, va="top")
    for panel in every:
        if panel["type"] == "row":
            g = panel["gridPos"]
            fig.text(0.008, 1 - (g["y"] * ROW + 0.6 + 0.22) / inches[1], panel["title"],
                     color=TEXT, fontsize=11, fontweight="bold")
            continue
        rect = frame(fig, panel, inches)
        if panel["type"] == "bargauge":
            bargauge(fig, panel, data[panel["id"]], rect)
        else:
            timeseries(fig, panel, data[panel["id"]], rect)
    fig.savefig(out, facecolor=BACKGROUND)
    plt.close(fig)
