"""PNG figures: all-sky map and probability bars."""

import io

import astropy_healpix as ah
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from ligo.skymap import moc
from ligo.skymap.io.fits import write_sky_map

from alerts.science import plots
from alerts.science.plots import plot_allsky, plot_bars

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPOT_ORDER = 6
SPOT_RA_DEG, SPOT_DEC_DEG, SPOT_RADIUS_DEG = 120.0, 30.0, 5.0


def _read_png(data: bytes) -> np.ndarray:
    assert data[: len(PNG_MAGIC)] == PNG_MAGIC
    return matplotlib.image.imread(io.BytesIO(data), format="png")


def _skymap_around(ra_deg, dec_deg, profile) -> bytes:
    """A multi-order map whose density is ``profile(separation in degrees)``
    from a point, normalised to one."""
    nside = ah.level_to_nside(SPOT_ORDER)
    ipix = np.arange(ah.nside_to_npix(nside))
    ra, dec = ah.healpix_to_lonlat(ipix, nside, order="nested")
    center = SkyCoord(ra_deg * u.deg, dec_deg * u.deg)
    density = profile(SkyCoord(ra, dec).separation(center).to_value(u.deg))
    density /= np.sum(density * ah.nside_to_pixel_area(nside).to_value(u.sr))
    uniq = moc.nest2uniq(np.int8(SPOT_ORDER), ipix)
    buffer = io.BytesIO()
    write_sky_map(buffer, np.rec.fromarrays([uniq, density], names=["UNIQ", "PROBDENSITY"]))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def spot_skymap() -> bytes:
    """A multi-order map uniform inside a 5-degree disc, zero elsewhere."""
    return _skymap_around(SPOT_RA_DEG, SPOT_DEC_DEG,
                          lambda separation: np.where(separation < SPOT_RADIUS_DEG, 1.0, 0.0))


def test_allsky_is_a_png_of_the_configured_size(spot_skymap):
    image = _read_png(plot_allsky(spot_skymap))
    width, height = (
        round(inches * plots.DPI) for inches in plots.ALLSKY_FIGSIZE_IN
    )
    assert image.shape[:2] == (height, width)


def test_allsky_shows_the_probability(spot_skymap):
    """The map with a bright spot differs from an empty-looking one."""
    with_spot = _read_png(plot_allsky(spot_skymap))
    nside = ah.level_to_nside(SPOT_ORDER)
    npix = ah.nside_to_npix(nside)
    buffer = io.BytesIO()
    write_sky_map(
        buffer,
        np.rec.fromarrays(
            [moc.nest2uniq(np.int8(SPOT_ORDER), np.arange(npix)),
             np.full(npix, 1 / (4 * np.pi))],
            names=["UNIQ", "PROBDENSITY"],
        ),
    )
    uniform = _read_png(plot_allsky(buffer.getvalue()))
    assert with_spot.shape == uniform.shape
    assert np.abs(with_spot - uniform).max() > 0.5


BLOB_RA_DEG, BLOB_DEC_DEG, BLOB_SIGMA_DEG = 120.0, 30.0, 5.0
# A 2-D Gaussian holds a fraction 1 - exp(-r^2 / 2 sigma^2) within r.
BLOB_RADIUS_90_DEG = BLOB_SIGMA_DEG * np.sqrt(-2 * np.log(1 - 0.9))
# Contour drawn on an image resampled from ~1 deg HEALPix pixels.
CONTOUR_TOLERANCE_DEG = 1.5


@pytest.fixture(scope="module")
def blob_skymap() -> bytes:
    """A multi-order map of a Gaussian blob: its 90% region is a disc."""
    return _skymap_around(BLOB_RA_DEG, BLOB_DEC_DEG,
                          lambda separation: np.exp(-0.5 * (separation / BLOB_SIGMA_DEG) ** 2))


def _rendered(figure):
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba()).copy()


def test_allsky_draws_the_90_percent_contour_where_it_belongs(blob_skymap):
    """Rendered with and without the contour, the images differ exactly
    along the blob's 90% credible circle, all the way round."""
    with_contour = plots.allsky_figure(blob_skymap)
    without = plots.allsky_figure(blob_skymap, contour_percent=None)
    changed = np.any(_rendered(with_contour) != _rendered(without), axis=-1)
    rows, columns = np.nonzero(changed)
    assert rows.size > 50

    # Changed pixels back to the sky, through the axes' own projection.
    height = changed.shape[0]
    axes = with_contour.axes[0]
    display = np.column_stack([columns + 0.5, height - rows - 0.5])
    ra, dec = axes.get_transform("world").inverted().transform(display).T
    points = SkyCoord(ra * u.deg, dec * u.deg)
    center = SkyCoord(BLOB_RA_DEG * u.deg, BLOB_DEC_DEG * u.deg)
    distance = points.separation(center).to_value(u.deg)
    assert np.all(np.abs(distance - BLOB_RADIUS_90_DEG) < CONTOUR_TOLERANCE_DEG)
    # The line goes all the way round: every 45-degree sector has some.
    angle = center.position_angle(points).to_value(u.deg)
    assert set(np.floor(angle / 45).astype(int) % 8) == set(range(8))


def test_allsky_png_carries_the_contour(blob_skymap):
    assert plot_allsky(blob_skymap) != plot_allsky(blob_skymap, contour_percent=None)


def test_plotting_leaves_no_pyplot_figures(spot_skymap):
    before = plt.get_fignums()
    plot_allsky(spot_skymap)
    plot_bars({"BNS": 1.0}, "p_astro")
    assert plt.get_fignums() == before


def test_bars_png():
    probabilities = {"BNS": 0.7, "NSBH": 0.1, "BBH": 0.05, "Terrestrial": 0.15}
    image = _read_png(plot_bars(probabilities, "p_astro"))
    width, height = (round(inches * plots.DPI) for inches in plots.BARS_FIGSIZE_IN)
    assert image.shape[:2] == (height, width)


def test_bars_depend_on_values():
    low = _read_png(plot_bars({"HasNS": 0.1, "HasRemnant": 0.0}, "em_bright"))
    high = _read_png(plot_bars({"HasNS": 0.9, "HasRemnant": 0.0}, "em_bright"))
    assert low.shape == high.shape
    assert not np.array_equal(low, high)
