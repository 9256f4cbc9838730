"""The job's PNG: latency percentiles and error rate over time, one line per model."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import pandas as pd

# Matplotlib draws dates in years 1 to 9999 only, margins and ticks included, and its
# axes overflow on spans near the double range: values are kept inside both.
_FIRST_TIME = pd.Timestamp("0001-01-03", tz="UTC").as_unit("us")
_LAST_TIME = pd.Timestamp("9999-12-29", tz="UTC").as_unit("us")
_MAX_VALUE = 1e300


def percentile_name(p: float) -> str:
    return f"p{p:g}"


def render(frame: pd.DataFrame, percentiles: Sequence[float], column: str, title: str) -> bytes:
    """`frame` has model, bucket, one column per percentile (named p50, ...) and error_rate.
    Any timestamp and finite value is drawn, values past +-1e300 at that bound; rows without
    a time (logged without ts) have no place on the time axis."""
    import matplotlib

    matplotlib.use("Agg")  # no display; safe inside Ray workers and CI
    import matplotlib.pyplot as plt

    frame = frame[frame["bucket"].notna()]
    panels = [percentile_name(p) for p in percentiles] + ["error_rate"]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.4 * len(panels)), sharex=True)
    for ax, panel in zip(axes, panels, strict=True):
        for model, rows in frame.groupby("model", sort=True, dropna=False):
            values = np.clip(rows[panel].to_numpy(np.float64), -_MAX_VALUE, _MAX_VALUE)
            ax.plot(rows["bucket"], values, marker=".", linewidth=1, label=str(model))
        ax.set_ylabel("error rate" if panel == "error_rate" else f"{panel} {column}")
        ax.grid(alpha=0.3)
    if len(frame):
        axes[0].set_xlim(*_time_limits(frame["bucket"]))
    axes[0].set_title(title)
    if len(frame):
        axes[0].legend(fontsize=7, ncol=3, loc="upper left")
    axes[-1].set_xlabel("time (UTC)")
    fig.autofmt_xdate()
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out.getvalue()


def _time_limits(buckets: pd.Series) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The buckets' span with a margin (an hour for a single one), inside what Matplotlib
    draws: its own margin would leave the years 1 to 9999 for buckets at their edges."""
    first, last = buckets.min(), buckets.max()
    pad = max((last - first) / 40, timedelta(hours=1))
    low = first - pad if first - _FIRST_TIME > pad else _FIRST_TIME
    high = last + pad if _LAST_TIME - last > pad else _LAST_TIME
    return min(low, first), max(high, last)
