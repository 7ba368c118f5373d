"""PNG charts of the checkpoint review: time in hold, release latency, outcomes per week.

Rules:
* matplotlib is imported here only, and only when charts are written, so every other command
  starts without it. The Agg backend renders to files with no display; figures are built as
  ``Figure`` objects (not through pyplot's global state), so two reports never share a figure.
* Each chart is drawn from the review's figures alone (``execution.review``); an empty series
  still gives a chart that says "no data", so a report never links a missing image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from templates import format_duration

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CHARTS = {
    "holds": "time-in-hold.png",
    "releases": "release-latency.png",
    "outcomes": "outcomes-per-week.png",
}
OUTCOME_COLOURS = {
    "completed": "#2e7d32",
    "held": "#f9a825",
    "narrowed": "#ef6c00",
    "rolled_back": "#1565c0",
    "needs_human": "#c62828",
    "running": "#9e9e9e",
}
FAST_COLOUR = "#c62828"
SLOW_COLOUR = "#1565c0"


def write_charts(review: Mapping[str, Any], directory: Path) -> dict[str, Path]:
    """Write the three charts into ``directory``; returns chart name -> file written."""
    import matplotlib

    matplotlib.use("Agg")
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, draw in (("holds", _time_in_hold), ("releases", _release_latency), ("outcomes", _outcomes_per_week)):
        path = directory / CHARTS[name]
        fig = _figure()
        draw(fig.add_subplot(), review)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        written[name] = path
    return written


def _figure() -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(8, 4.2))


def _no_data(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in this review", ha="center", va="center", transform=ax.transAxes, color="#616161")
    ax.set_xticks([])
    ax.set_yticks([])


def _log_bins(values: Sequence[float]) -> list[float]:
    """Logarithmic bins from 0.01 s up past the largest value (durations span seconds to days)."""
    top = max(max(values), 1.0)
    edges = [0.01]
    while edges[-1] < top:
        edges.append(edges[-1] * 2)
    return edges


def _time_in_hold(ax: Axes, review: Mapping[str, Any]) -> None:
    items = [h for h in review["holds"]["items"] if h["end"] != "open"]
    ax.set_title("Time in hold (ended holds), by kind")
    if not items:
        _no_data(ax, "ended holds")
        return
    kinds = sorted({h["kind"] for h in items})
    series = [[max(h["duration_s"], 0.01) for h in items if h["kind"] == k] for k in kinds]
    ax.boxplot(series, orientation="horizontal", tick_labels=kinds, showfliers=False)
    for row, values in enumerate(series, start=1):
        ax.scatter(values, [row] * len(values), s=14, alpha=0.6, color=SLOW_COLOUR, zorder=3)
    _duration_axis(ax)
    ax.set_xlabel("from opening to release, supersession or close (log scale)")
    ax.grid(axis="x", alpha=0.3)


def _release_latency(ax: Axes, review: Mapping[str, Any]) -> None:
    rel = review["releases"]
    threshold = float(rel["fast_release_s"])
    ax.set_title(f"Release latency: card shown → release (threshold {threshold:g} s)")
    values = [max(r["latency_s"], 0.01) for r in rel["items"]]
    if not values:
        _no_data(ax, "releases")
        return
    bins = _log_bins(values)
    fast = [v for v in values if v < threshold]
    slow = [v for v in values if v >= threshold]
    ax.hist(
        [fast, slow],
        bins=bins,
        stacked=True,
        color=[FAST_COLOUR, SLOW_COLOUR],
        label=[f"within {format_duration(threshold)}: possibly unreviewed", "slower"],
    )
    if threshold > 0:
        ax.axvline(threshold, color="#212121", linestyle="--", linewidth=1)
    _duration_axis(ax)
    ax.set_xlabel("from the hold card being shown to the release (log scale)")
    ax.set_ylabel("releases")
    ax.legend(loc="upper right")


def _outcomes_per_week(ax: Axes, review: Mapping[str, Any]) -> None:
    from matplotlib.ticker import MaxNLocator

    weeks = review["outcomes"]["by_week"]
    ax.set_title("Outcomes per week (by week of start)")
    if not weeks:
        _no_data(ax, "executions")
        return
    labels = [w["week"] for w in weeks]
    positions = list(range(len(labels)))
    bottom = [0] * len(labels)
    for status, colour in OUTCOME_COLOURS.items():
        heights = [w[status] for w in weeks]
        if not any(heights):
            continue
        ax.bar(positions, heights, bottom=bottom, width=0.6, color=colour, label=status.replace("_", " "))
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_xticks(positions, labels, rotation=30 if len(labels) > 6 else 0)
    ax.set_xlim(-0.8, len(labels) - 0.2)
    ax.set_ylabel("executions")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")


def _duration_axis(ax: Axes) -> None:
    """A log-scaled time axis labelled as people read durations (12 s, 4 min, 2 h)."""
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: format_duration(x)))
