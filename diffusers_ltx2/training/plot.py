"""A loss-curve PNG without matplotlib (not a dependency): a line plot drawn with Pillow from `loss.csv`."""

from __future__ import annotations

import csv
import math
from pathlib import Path

__all__ = ["write_loss_plot"]


def write_loss_plot(csv_path: str | Path, png_path: str | Path, size: tuple[int, int] = (640, 360)) -> Path | None:
    """Plot `loss` against `step` from the trainer's CSV (log-scale y when the range spans > 10x); returns the PNG
    path, or `None` when the CSV has fewer than two rows."""
    from PIL import Image, ImageDraw

    rows = list(csv.DictReader(open(csv_path)))
    if len(rows) < 2:
        return None
    steps = [int(r["step"]) for r in rows]
    losses = [float(r["loss"]) for r in rows]
    log = min(losses) > 0 and max(losses) / min(losses) > 10
    ys = [math.log10(v) for v in losses] if log else losses
    w, h = size
    left, right, top, bottom = 60, 15, 15, 35
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    x0, x1, y0, y1 = min(steps), max(steps), min(ys), max(ys)
    span_x, span_y = max(x1 - x0, 1), max(y1 - y0, 1e-12)

    def pt(s, y):
        return left + (s - x0) / span_x * (w - left - right), top + (y1 - y) / span_y * (h - top - bottom)

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    d.line([pt(s, y) for s, y in zip(steps, ys)], fill=(31, 119, 180), width=2)
    fmt = (lambda v: f"{10 ** v:.3g}") if log else (lambda v: f"{v:.3g}")
    d.text((4, top), fmt(y1), fill="black")
    d.text((4, h - bottom - 10), fmt(y0), fill="black")
    d.text((left, h - bottom + 5), f"step {x0}", fill="black")
    d.text((w - right - 70, h - bottom + 5), f"step {x1}", fill="black")
    d.text((w // 2 - 40, h - 18), "training loss" + (" (log)" if log else ""), fill="black")
    img.save(png_path)
    return Path(png_path)
