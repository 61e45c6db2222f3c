"""Independent drawing families: the same record drawn by code that does not share our renderer's habits.

A model trained on one renderer can learn its line widths, fonts and spacing instead of the heart.
Stage 1 mixes families, and a family left out of training is the honest test of transfer.

  ours     `ingest.render` through `model_training.synth.paper` (the renderer intake also uses)
  ecgplot  the `ecg_plot` package from the package index (SVG-first charts in millimetres), drawn
           through its Matplotlib adapter: separate panels with gaps, amplitude-sized rows, a
           calibration pulse per row, time axes, its own fonts and grid palette
  dicomplot  the `dicom-ecg-plot` package (a hospital's DICOM waveform printer): the record is written
           as a 12-lead DICOM waveform object and read back by that package, which low-pass filters
           it at 40 Hz and prints it on its own A4/letter sheet (250 x 170 mm chart, red grid, lead
           separators, patient and acquisition text above and below)
  wfdbplot the `wfdb` package's own plotter (`wfdb.plot.plot_items` with its ECG grids): twelve stacked
           panels with axes, tick labels and unit labels, each set to 25 mm/s and 10 mm/mV. No preset
           trains on it; it is the family the shipped model's tests and model card hold out

Both get the same scan and photo artifacts afterwards (`paper.apply_artifacts`), so a family differs
only in how the chart is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ingest.render import render_paper, trace_mask
from model_training.synth.paper import PAGE_STREAM, PageStyle, apply_artifacts, random_style
from model_training.synth.signals import Record

FAMILIES = ("ours", "ecgplot", "dicomplot", "wfdbplot")

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


@dataclass(frozen=True)
class Drawing:
    """A family's page before any artifact, with the pen's 0-255 trace coverage when asked for, and the page's
    random stream where the artifacts continue it (so a page is the same whether its mask was drawn or not)."""

    image: np.ndarray
    mask: np.ndarray | None
    style: PageStyle
    rng: np.random.Generator


def _damaged(drawing: Drawing, artifacts: str) -> tuple[np.ndarray, PageStyle]:
    image, applied = apply_artifacts(drawing.image, artifacts, drawing.rng)
    return image, replace(drawing.style, artifacts=applied)


def _ours_drawing(record: Record, page_seed: int, dpi: int | None, with_mask: bool) -> Drawing:
    rng = np.random.default_rng([page_seed, PAGE_STREAM])
    style, page = random_style(rng, dpi)
    image = render_paper(record.signals, record.fs, record.leads, style)
    mask = trace_mask(record.signals, record.fs, record.leads, style) if with_mask else None
    return Drawing(image, mask, page, rng)


def _figure_bgr(figure, dpi: int) -> np.ndarray:
    """A Matplotlib figure rasterised at `dpi` as a BGR page, whichever package built it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure.set_dpi(dpi)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[:, :, 2::-1])  # RGBA -> BGR


def _is_trace(line) -> bool:
    """A pen trace or calibration pulse: a polyline of several points moving both ways. Grid lines, ticks, lead
    separators and frames are straight lines of two points (or not lines at all)."""
    x = np.asarray(line.get_xdata(), dtype=float)
    y = np.asarray(line.get_ydata(), dtype=float)
    return x.size >= 4 and np.nanmax(x) > np.nanmin(x) and np.nanmax(y) > np.nanmin(y)


def _figure_trace_mask(figure, dpi: int) -> np.ndarray:
    """The figure's trace lines alone, rasterised as `_figure_bgr` drew them: their 0-255 coverage. Everything
    else is hidden, so the figure is spent afterwards."""
    from matplotlib.axes import Axes
    from matplotlib.lines import Line2D

    traces = {id(line) for line in figure.findobj(Line2D) if _is_trace(line)}
    for artist in figure.findobj():
        if id(artist) in traces:
            artist.set_color("black")
        elif artist is not figure and not isinstance(artist, Axes):
            artist.set_visible(False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure.set_dpi(dpi)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[:, :, 3])


def _figure_page(figure, dpi: int, with_mask: bool) -> tuple[np.ndarray, np.ndarray | None]:
    image = _figure_bgr(figure, dpi)
    return image, _figure_trace_mask(figure, dpi) if with_mask else None


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

    drawing = _ecgplot_drawing(record, page_seed, dpi, with_mask=False)
    return _damaged(drawing, artifacts)


def _ecgplot_drawing(record: Record, page_seed: int, dpi: int | None, with_mask: bool) -> Drawing:
    from matplotlib import pyplot

    rng = np.random.default_rng([page_seed, 0xEC6])
    chart, layout, grid = _ecgplot_chart(record, rng)
    dpi = dpi or int(rng.choice([100, 150, 200, 250, 300], p=[0.15, 0.2, 0.35, 0.15, 0.15]))
    figure, _ = chart.to_matplotlib()
    try:
        image, mask = _figure_page(figure, dpi, with_mask)
    finally:
        pyplot.close(figure)
    return Drawing(image, mask, PageStyle(f"ecgplot-{layout}", grid, "chart", dpi, ()), rng)


_DICOMPLOT_LAYOUTS = ("3x4_1", "3x4", "6x2", "12x1")


def render_dicomplot(record: Record, page_seed: int, artifacts: str = "heavy", dpi: int | None = None
                     ) -> tuple[np.ndarray, PageStyle]:
    """`record` as a DICOM waveform, printed by the dicom-ecg-plot package at `dpi`, then our artifacts."""
    return _damaged(_dicomplot_drawing(record, page_seed, dpi, with_mask=False), artifacts)


def _dicomplot_drawing(record: Record, page_seed: int, dpi: int | None, with_mask: bool) -> Drawing:
    import io

    from ecg.ecg import ECG  # dicom-ecg-plot's import name

    from model_training.synth.dicom_out import waveform_dataset

    rng = np.random.default_rng([page_seed, 0xD1C])
    layout = str(rng.choice(_DICOMPLOT_LAYOUTS, p=[0.45, 0.25, 0.15, 0.15]))
    paper = str(rng.choice(["a4", "letter"]))
    dpi = dpi or int(rng.choice([100, 150, 200, 250, 300], p=[0.15, 0.2, 0.35, 0.15, 0.15]))
    buffer = io.BytesIO()
    waveform_dataset(record).save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    chart = ECG(buffer, paper=paper)
    try:
        chart.draw(layout, mm_mv=10.0, minor_axis=bool(rng.random() < 0.7), interpretation=False)
        image, mask = _figure_page(chart._plotter.fig, dpi, with_mask)  # it saves only at 300 DPI; draw at ours
    finally:
        chart.close()
    return Drawing(image, mask, PageStyle(f"dicomplot-{layout}", "red", paper, dpi, ()), rng)


def render_wfdbplot(record: Record, page_seed: int, artifacts: str = "heavy", dpi: int | None = None
                    ) -> tuple[np.ndarray, PageStyle]:
    """`record` drawn by wfdb's plotter, its axes set to paper scale, at `dpi`, then our artifacts."""
    return _damaged(_wfdbplot_drawing(record, page_seed, dpi, with_mask=False), artifacts)


def _wfdbplot_drawing(record: Record, page_seed: int, dpi: int | None, with_mask: bool) -> Drawing:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from wfdb.plot import plot_items

    rng = np.random.default_rng([page_seed, 0x3FDB])
    dpi = dpi or int(rng.choice([100, 150, 200, 250, 300], p=[0.15, 0.2, 0.35, 0.15, 0.15]))
    seconds = record.signals.shape[1] / record.fs
    width_in = (seconds * 25 + float(rng.uniform(40, 70))) / 25.4  # 25 mm/s plus the axes' margins
    height_in = float(rng.uniform(11, 16))
    figure, axes = plot_items(signal=record.signals.T, fs=record.fs, time_units="seconds", sig_name=list(record.leads),
                              sig_units=["mV"] * len(record.leads), ecg_grids="all", figsize=(width_in, height_in),
                              sig_style=["k-"],  # cleaning drops wfdb's default blue pen with the grid colours
                              return_fig_axes=True)
    try:
        for axis, trace in zip(axes, record.signals, strict=True):
            height_mm = axis.get_position().height * height_in * 25.4
            centre = float(np.median(trace))
            axis.set_ylim(centre - height_mm / 20, centre + height_mm / 20)  # 10 mm per mV
        image, mask = _figure_page(figure, dpi, with_mask)
    finally:
        pyplot.close(figure)
    return Drawing(image, mask, PageStyle("wfdbplot-12x1", "red", "chart", dpi, ()), rng)


_DRAWINGS = {"ours": _ours_drawing, "ecgplot": _ecgplot_drawing, "dicomplot": _dicomplot_drawing,
             "wfdbplot": _wfdbplot_drawing}


def drawing_with_mask(record: Record, page_seed: int, family: str, dpi: int | None = None) -> Drawing:
    """The page `render_family` draws for these arguments, before artifacts, with its exact trace mask."""
    if family not in _DRAWINGS:
        raise ValueError(f"unknown drawing family {family!r}; available: {', '.join(FAMILIES)}")
    return _DRAWINGS[family](record, page_seed, dpi, with_mask=True)


def render_family(record: Record, page_seed: int, family: str = "ours", artifacts: str = "heavy",
                  dpi: int | None = None) -> tuple[np.ndarray, PageStyle]:
    """A page of `record` in drawing family `family`; `page_seed` decides everything visual."""
    if family not in _DRAWINGS:
        raise ValueError(f"unknown drawing family {family!r}; available: {', '.join(FAMILIES)}")
    return _damaged(_DRAWINGS[family](record, page_seed, dpi, with_mask=False), artifacts)
