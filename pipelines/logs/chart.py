"""The job's PNG: latency percentiles and error rate over time, one line per model."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pandas as pd


def percentile_name(p: float) -> str:
    return f"p{p:g}"


def render(frame: pd.DataFrame, percentiles: Sequence[float], column: str, title: str) -> bytes:
    """`frame` has model, bucket, one column per percentile (named p50, ...) and error_rate."""
    import matplotlib

    matplotlib.use("Agg")  # no display; safe inside Ray workers and CI
    import matplotlib.pyplot as plt

    panels = [percentile_name(p) for p in percentiles] + ["error_rate"]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.4 * len(panels)), sharex=True)
    for ax, panel in zip(axes, panels, strict=True):
        for model, rows in frame.groupby("model", sort=True, dropna=False):
            ax.plot(rows["bucket"], rows[panel], marker=".", linewidth=1, label=str(model))
        ax.set_ylabel("error rate" if panel == "error_rate" else f"{panel} {column}")
        ax.grid(alpha=0.3)
    axes[0].set_title(title)
    axes[0].legend(fontsize=7, ncol=3, loc="upper left")
    axes[-1].set_xlabel("time (UTC)")
    fig.autofmt_xdate()
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out.getvalue()
