"""PNG figures for alerts: the all-sky map and probability bar charts.

Figures are built on private `matplotlib.figure.Figure` objects rendered by
the Agg canvas, never through pyplot, so concurrent workers share no global
figure state and nothing needs a display.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import warnings

from astropy.utils.exceptions import AstropyDeprecationWarning

# ligo.skymap 2.5.4 imports a module that reproject has made private; the
# warning says nothing a user can act on, and it would otherwise be printed
# by every management command.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=AstropyDeprecationWarning)
    import ligo.skymap.plot  # noqa: F401  (registers the 'astro ...' projections)
from ligo.skymap import moc
from ligo.skymap.io import fits as skymap_fits
from ligo.skymap.postprocess import find_greedy_credible_levels

__all__ = ("allsky_figure", "plot_allsky", "plot_bars")

ALLSKY_PROJECTION = "astro hours mollweide"
"""Right ascension in hours, the layout of LVK public sky-map plots."""

ALLSKY_FIGSIZE_IN = (8.0, 5.0)
BARS_FIGSIZE_IN = (5.0, 3.0)
DPI = 100

CONTOUR_PERCENT = 90
"""Credible level drawn on the sky map, percent."""

SQUARE_DEGREES_PER_STERADIAN = (180 / np.pi) ** 2

SKYMAP_COLORMAP = "cylon"
"""ligo.skymap's perceptual colour map for sky maps."""

BAR_COLOR = "#1f77b4"


def _png_bytes(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def plot_allsky(multiorder_fits: bytes, contour_percent: float | None = CONTOUR_PERCENT) -> bytes:
    """Mollweide PNG of a sky map with its 90% credible contour."""
    return _png_bytes(allsky_figure(multiorder_fits, contour_percent))


def allsky_figure(multiorder_fits: bytes, contour_percent: float | None = CONTOUR_PERCENT) -> Figure:
    """The figure of :func:`plot_allsky`: probability per deg² in a Mollweide
    projection with the ``contour_percent`` credible contour (None: none).
    Its axes map (RA, Dec) in degrees to pixels with
    ``get_transform("world")``."""
    sky_map = skymap_fits.read_sky_map(io.BytesIO(multiorder_fits), moc=True)
    pixel_area = moc.uniq2pixarea(sky_map["UNIQ"])
    density = np.asarray(sky_map["PROBDENSITY"])

    figure = Figure(figsize=ALLSKY_FIGSIZE_IN, dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(projection=ALLSKY_PROJECTION)
    axes.grid()
    density_table = sky_map[["UNIQ"]].copy()
    density_table["PROBDENSITY"] = density / SQUARE_DEGREES_PER_STERADIAN
    image = axes.imshow_hpx(
        (density_table, "ICRS"),
        vmin=0,
        order="nearest-neighbor",
        cmap=SKYMAP_COLORMAP,
    )
    if contour_percent is not None:
        levels_table = sky_map[["UNIQ"]].copy()
        levels_table["CLS"] = 100 * find_greedy_credible_levels(density * pixel_area, density)
        axes.contour_hpx(
            (levels_table, "ICRS"),
            levels=[contour_percent],
            colors="k",
            linewidths=0.5,
            order="nearest-neighbor",
        )
    colorbar = figure.colorbar(
        image, ax=axes, orientation="horizontal", shrink=0.4, fraction=0.05, pad=0.08
    )
    colorbar.set_label("probability per deg²")
    return figure


def plot_bars(probabilities: dict, title: str) -> bytes:
    """Horizontal bar chart of named probabilities (p_astro, em_bright)."""
    names = list(probabilities)
    values = [float(probabilities[name]) for name in names]
    figure = Figure(figsize=BARS_FIGSIZE_IN)
    axes = figure.add_subplot()
    positions = np.arange(len(names))
    bars = axes.barh(positions, values, color=BAR_COLOR)
    axes.bar_label(bars, labels=[f"{value:.3g}" for value in values], padding=2)
    axes.set_yticks(positions, labels=names)
    axes.invert_yaxis()
    axes.set_xlim(0, 1.15)
    axes.set_xlabel("probability")
    axes.set_title(title)
    figure.tight_layout()
    return _png_bytes(figure)
