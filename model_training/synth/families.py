"""Independent drawing families: the same record drawn by code that does not share our renderer's habits.

A model trained on one renderer can learn its line widths, fonts and spacing instead of the heart.
Stage 1 mixes families, and a family left out of training is the honest test of transfer.

  ours     `ingest.render` through `model_training.synth.paper` (the renderer intake also uses)
  ecgplot  the `ecg_plot` package from the package index (SVG-first charts in millimetres), drawn
           through its Matplotlib adapter: separate panels with gaps, amplitude-sized rows, a
           calibration pulse per row, time axes, its own fonts and grid palette

Both get the same scan and photo artifacts afterwards (`paper.apply_artifacts`), so a family differs
only in how the chart is drawn.
"""

from __future__ import annotations

import numpy as np

from model_training.synth.paper import PageStyle, apply_artifacts, render_page
from model_training.synth.signals import Record

FAMILIES = ("ours", "ecgplot")

# (minor, major) grid colours as ecg_plot takes them; None draws no grid.
_ECGPLOT_GRIDS = {
    "red": ("#f8ebeb", "#e6b8b8"),
    "pink": ("#fde6ee", "#f29fb8"),
    "orange": ("#fdebd6", "#f3b06b"),
    "green": ("#e4f3e4", "#8fcf8f"),
    "blue": ("#e3ecf8", "#8fb0e0"),
    "grey": ("#e8e8e8", "#b0b0b0"),
    "none": None,
}
_ECGPLOT_PENS = ["#172331", "#000000", "#1f3a93", "#3b3b3b", "#5a1010"]
_ECGPLOT_LAYOUTS = ("12lead+rhythm", "12lead", "columns", "limb-chest")


def _ecgplot_chart(record: Record, rng: np.random.Generator):
    import ecg_plot

    grid = str(rng.choice(list(_ECGPLOT_GRIDS), p=[0.3, 0.15, 0.1, 0.1, 0.1, 0.15, 0.1]))
    colours = _ECGPLOT_GRIDS[grid]
    style = ecg_plot.Style(grid=colours is not None, minor_color=colours[0] if colours else "#ffffff",
                           major_color=colours[1] if colours else "#ffffff",
                           line_color=str(rng.choice(_ECGPLOT_PENS)), line_width=float(rng.uniform(0.12, 0.45)),
                           font_size=float(rng.uniform(2.5, 4.0)), axes=bool(rng.random() < 0.6),
                           lead_names=True, calibration=bool(rng.random() < 0.8))
    layout = str(rng.choice(_ECGPLOT_LAYOUTS, p=[0.45, 0.2, 0.2, 0.15]))
    options: dict = {"layout": layout.split("+")[0]}
    if layout.startswith("12lead"):
        options["time_mode"] = "sequential"
        if layout.endswith("rhythm"):
            options["rhythm_lead"] = "II"
    elif layout == "columns":
        options.update(columns=2, time_mode="sequential" if rng.random() < 0.5 else "simultaneous")
    title = f"Patient {rng.integers(10**5, 10**6)}  {rng.integers(18, 95)} y" if rng.random() < 0.7 else None
    chart = ecg_plot.plot(record.signals, sample_rate=record.fs, lead_names=list(record.leads), title=title,
                          style=style, **options)
    return chart, layout, grid


def render_ecgplot(record: Record, page_seed: int, artifacts: str = "heavy", dpi: int | None = None
                   ) -> tuple[np.ndarray, PageStyle]:
    """`record` drawn by the ecg_plot package at `dpi` (random 100-300 if None), then our artifacts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    rng = np.random.default_rng([page_seed, 0xEC6])
    chart, layout, grid = _ecgplot_chart(record, rng)
    dpi = dpi or int(rng.choice([100, 150, 200, 250, 300], p=[0.15, 0.2, 0.35, 0.15, 0.15]))
    figure, _ = chart.to_matplotlib()
    figure.set_dpi(dpi)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    image = np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[:, :, 2::-1])  # RGBA -> BGR
    image, applied = apply_artifacts(image, artifacts, rng)
    return image, PageStyle(f"ecgplot-{layout}", grid, "chart", dpi, applied)


def render_family(record: Record, page_seed: int, family: str = "ours", artifacts: str = "heavy",
                  dpi: int | None = None) -> tuple[np.ndarray, PageStyle]:
    """A page of `record` in drawing family `family`; `page_seed` decides everything visual."""
    if family == "ours":
        return render_page(record, page_seed, artifacts, dpi)
    if family == "ecgplot":
        return render_ecgplot(record, page_seed, artifacts, dpi)
    raise ValueError(f"unknown drawing family {family!r}; available: {', '.join(FAMILIES)}")
