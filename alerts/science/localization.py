"""Sky localization of compact-binary candidates with BAYESTAR.

BAYESTAR (Singer & Price 2016, PRD 93, 024013) turns the matched-filter
triggers of a ``coinc.xml`` (per-detector SNR, time and phase) plus the noise
spectra of ``psd.xml.gz`` into a three-dimensional sky map within seconds.
This module runs it in-process through ``ligo.skymap`` and returns the files
the alert flow stores, with summary numbers for notices and circulars.

Everything here is pure: bytes and numbers in, bytes and dataclasses out.

Errors: a :class:`LocalizationError` means the inputs can never be localized
(bad PSD, incomplete coinc, impossible detector selection) and retrying is
pointless. Transient problems (``OSError``, ``MemoryError``) are deliberately
left unwrapped so that the caller can retry exactly those.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import time
import xml.sax
import zlib
from dataclasses import asdict, dataclass

import astropy_healpix as ah
import lal.series
import numpy as np
from igwn_ligolw.utils import load_fileobj
from ligo.skymap import moc
from ligo.skymap.bayestar import localize as bayestar_localize
from ligo.skymap.bayestar import rasterize
from ligo.skymap.distance import parameters_to_marginal_moments
from ligo.skymap.io import events
from ligo.skymap.io import fits as skymap_fits
from ligo.skymap.io.events.detector_disabled import DetectorDisabledError
from ligo.skymap.io.events.ligolw import ContentHandler
from ligo.skymap.postprocess.crossmatch import crossmatch

from alerts import vocabulary as v

__all__ = (
    "FLAT_FILENAME",
    "MULTIORDER_FILENAME",
    "LocalizationError",
    "SkymapProducts",
    "SkymapSummary",
    "input_fingerprint",
    "localize",
    "summarize_skymap",
)

MULTIORDER_FILENAME = v.BAYESTAR_MULTIORDER
"""Name under which the multi-order (NUNIQ) sky map is stored."""

FLAT_FILENAME = v.BAYESTAR_FLAT
"""Name under which the flattened sky map is stored for older consumers."""

DEFAULT_WAVEFORM = "IMRPhenomD"
"""Approximant for BAYESTAR's signal model. ligo.skymap's own default,
"o2-uberbank", switches to SEOBNRv4_ROM above 4 Msun total mass, whose data
file lalsimulation does not ship here; IMRPhenomD is closed-form, covers BNS
to BBH with aligned spins, and is what the mock events are injected with."""

FLAT_MAX_NSIDE = 512
"""Resolution cap of the flattened map. One pixel is about 0.013 deg², far
finer than any current 90% region, while keeping the file a few MB instead
of the ~1 GB an nside-2048 rasterization with distance layers would take."""

CREDIBLE_LEVELS = (0.5, 0.9)
"""Credible levels whose areas are reported (50% and 90%)."""

GZIP_MAGIC = b"\x1f\x8b"
"""First bytes of every gzip stream (RFC 1952)."""

_FLAT_GZIP_LEVEL = 6
"""zlib's own default trade-off between size and speed."""

_UNPARSABLE_XML = (
    xml.sax.SAXException,
    gzip.BadGzipFile,
    zlib.error,
    EOFError,
    UnicodeDecodeError,
    ValueError,
    KeyError,
    TypeError,
)
"""What parsing garbage bytes as (gzipped) LIGO-LW XML raises. BadGzipFile is
an OSError subclass, so it is listed to avoid passing as 'transient'."""


class LocalizationError(ValueError):
    """The inputs cannot be localized; retrying would give the same result."""


@dataclass(frozen=True)
class SkymapSummary:
    """Numbers quoted in notices and circulars for one sky map."""

    area_50_deg2: float
    area_90_deg2: float
    distance_mean_mpc: float | None
    distance_std_mpc: float | None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SkymapProducts:
    """Files and facts produced by one BAYESTAR run."""

    multiorder_fits: bytes
    summary: SkymapSummary
    bayestar_seconds: float
    instruments: tuple[str, ...]
    f_low: float


def localize(
    coinc_xml: bytes,
    psd_xml: bytes | None,
    f_low: float | None,
    default_f_low: float,
    disabled_detectors=(),
    objid=None,
    url=None,
    waveform: str = DEFAULT_WAVEFORM,
) -> SkymapProducts:
    """Run BAYESTAR on one coincidence and return the sky-map products.

    ``psd_xml`` may be gzip-compressed; when it is None the PSDs must be
    embedded in ``coinc_xml``. ``f_low`` (the pipeline's own low-frequency
    cutoff, e.g. from its process params) wins over ``default_f_low``.
    ``disabled_detectors`` drops those detectors' triggers (re-localization
    without a detector, as ``bayestar-localize-coincs --disable-detector``).
    ``objid`` defaults to the coinc_event_id; ``url`` goes to REFERENC.
    ``waveform`` is any lalsimulation approximant name (or "o2-uberbank").
    """
    inputs = _prepare(coinc_xml, psd_xml, f_low, default_f_low, disabled_detectors)
    coinc_event_id, event, instruments, cutoff = (
        inputs.coinc_event_id, inputs.event, inputs.instruments, inputs.f_low
    )

    started = time.perf_counter()
    try:
        sky_map = bayestar_localize(event, waveform, cutoff)
    except (ArithmeticError, ValueError, RuntimeError) as exc:
        # bayestar-localize-coincs treats ArithmeticError and ValueError as
        # "sky map failed"; lalsimulation reports a template it cannot make
        # (unknown approximant, missing data file) as RuntimeError.
        raise LocalizationError(f"BAYESTAR failed: {exc}") from exc
    elapsed = time.perf_counter() - started

    sky_map.meta["objid"] = coinc_event_id if objid is None else objid
    if url is not None:
        sky_map.meta["url"] = url

    return SkymapProducts(
        multiorder_fits=_fits_bytes(sky_map),
        summary=_summarize_table(sky_map),
        bayestar_seconds=elapsed,
        instruments=instruments,
        f_low=cutoff,
    )


def input_fingerprint(
    coinc_xml: bytes,
    psd_xml: bytes | None,
    f_low: float | None,
    default_f_low: float,
    disabled_detectors=(),
    waveform: str = DEFAULT_WAVEFORM,
) -> str:
    """SHA-256 (hex) of everything a :func:`localize` run depends on.

    Two calls give the same digest exactly when BAYESTAR would see the same
    input: the coinc.xml bytes, the power spectra of the detectors that take
    part (compared by their values, so a ``psd.xml.gz`` that repeats the
    spectra embedded in the coinc.xml gives the same digest as the coinc.xml
    alone), the low-frequency cutoff, the disabled detectors and the
    waveform. Spectra of detectors without a trigger do not count. Raises
    :class:`LocalizationError` for inputs :func:`localize` would refuse.
    """
    inputs = _prepare(coinc_xml, psd_xml, f_low, default_f_low, disabled_detectors)
    digest = hashlib.sha256(coinc_xml)
    digest.update(repr((inputs.instruments, inputs.f_low, sorted(set(disabled_detectors)), waveform)).encode())
    for detector in inputs.instruments:
        psd = inputs.psds[detector]
        digest.update(repr((detector, float(psd.f0), float(psd.deltaF))).encode())
        digest.update(np.ascontiguousarray(psd.data.data, dtype=np.float64).tobytes())
    return digest.hexdigest()


def flatten(multiorder_fits: bytes, max_nside: int = FLAT_MAX_NSIDE) -> bytes:
    """The flattened ``bayestar.fits.gz`` of a multi-order map, for older
    consumers: NESTED HEALPix at the map's own resolution, at most
    ``max_nside``, with its distance layers, gzipped.

    Apart from :func:`localize` because ligo.skymap's ``rasterize`` of an
    order-11 map takes several seconds (about a tenth of a BAYESTAR run
    here): the alert path needs only the multi-order map, so this runs
    after it, like the plots."""
    return _flat_fits_gz(_read_multiorder(multiorder_fits), max_nside)


def _read_multiorder(multiorder_fits: bytes):
    """The multi-order table of (possibly gzipped) FITS bytes."""
    if multiorder_fits[: len(GZIP_MAGIC)] == GZIP_MAGIC:
        # astropy detects gzip from file names only, not from in-memory data.
        try:
            multiorder_fits = gzip.decompress(multiorder_fits)
        except (OSError, EOFError, zlib.error) as exc:
            raise LocalizationError(f"sky map is not valid gzip: {exc}") from exc
    try:
        sky_map = skymap_fits.read_sky_map(io.BytesIO(multiorder_fits), moc=True)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        # The bytes are in memory, so astropy's OSError ("No SIMPLE card")
        # is a format error here, never a transient one.
        raise LocalizationError(f"not a readable HEALPix sky map: {exc}") from exc
    if "PROBDENSITY" not in sky_map.colnames:
        raise LocalizationError("sky map has no probability column")
    return sky_map


def summarize_skymap(multiorder_fits: bytes) -> SkymapSummary:
    """Credible areas and distance moments of any LVK-style sky map.

    Works for BAYESTAR maps and for Burst pipelines' own maps (e.g.
    ``cwb.multiorder.fits``); maps without distance layers give None for the
    distance fields. Flat (NESTED/RING) and gzip-compressed maps are
    accepted too.
    """
    return _summarize_table(_read_multiorder(multiorder_fits))


def _summarize_table(sky_map) -> SkymapSummary:
    """Summary from a multi-order table (UNIQ, PROBDENSITY[, DISTMU, ...])."""
    # Only the 2-D columns: crossmatch would otherwise also integrate volumes,
    # which costs time and is not quoted anywhere.
    sky_only = sky_map[["UNIQ", "PROBDENSITY"]]
    area_50, area_90 = crossmatch(sky_only, contours=CREDIBLE_LEVELS).contour_areas

    distance_mean = distance_std = None
    if {"DISTMU", "DISTSIGMA"} <= set(sky_map.colnames):
        prob = np.asarray(sky_map["PROBDENSITY"]) * moc.uniq2pixarea(sky_map["UNIQ"])
        mean, std = parameters_to_marginal_moments(
            prob, np.asarray(sky_map["DISTMU"]), np.asarray(sky_map["DISTSIGMA"])
        )
        if np.isfinite(mean) and np.isfinite(std):
            distance_mean, distance_std = float(mean), float(std)
    return SkymapSummary(
        area_50_deg2=float(area_50),
        area_90_deg2=float(area_90),
        distance_mean_mpc=distance_mean,
        distance_std_mpc=distance_std,
    )


@dataclass(frozen=True)
class _Inputs:
    """A coinc and its spectra, parsed and checked, ready for BAYESTAR."""

    coinc_event_id: object
    event: object
    psds: dict
    instruments: tuple[str, ...]
    f_low: float


def _prepare(coinc_xml, psd_xml, f_low, default_f_low, disabled_detectors) -> _Inputs:
    coinc_doc = _parse_ligolw(coinc_xml, "coinc")
    psd_doc = coinc_doc if psd_xml is None else _parse_ligolw(psd_xml, "PSD")
    psds = _read_psds(psd_doc)
    coinc_event_id, event = _single_event(coinc_doc, psd_doc, disabled_detectors)
    instruments = tuple(sorted(single.detector for single in event.singles))
    missing = sorted(set(instruments) - set(psds))
    if missing:
        raise LocalizationError(
            f"PSD file has no spectrum for detector(s) {', '.join(missing)}"
        )
    cutoff = float(f_low) if f_low is not None else float(default_f_low)
    if not np.isfinite(cutoff) or cutoff <= 0:
        raise LocalizationError(f"low-frequency cutoff must be positive, got {cutoff}")
    return _Inputs(coinc_event_id, event, psds, instruments, cutoff)


def _parse_ligolw(data: bytes, what: str):
    """Parse (optionally gzipped) LIGO-LW XML bytes into a document."""
    if not data:
        raise LocalizationError(f"{what} file is empty")
    try:
        return load_fileobj(io.BytesIO(data), contenthandler=ContentHandler)
    except _UNPARSABLE_XML as exc:
        raise LocalizationError(f"{what} file is not LIGO-LW XML: {exc}") from exc


def _read_psds(psd_doc) -> dict:
    """Read all PSDs eagerly so a bad file fails here, not deep in BAYESTAR."""
    try:
        psds = lal.series.read_psd_xmldoc(psd_doc, root_name=None)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LocalizationError(f"PSD file is unreadable: {exc}") from exc
    if not psds:
        raise LocalizationError("PSD file contains no power spectra")
    for detector, psd in psds.items():
        values = np.asarray(psd.data.data)
        if values.size == 0 or not np.any(np.isfinite(values) & (values > 0)):
            raise LocalizationError(f"PSD for {detector} has no usable values")
    return psds


def _single_event(coinc_doc, psd_doc, disabled_detectors):
    """The coinc's one event, with the requested detectors removed."""
    try:
        source = events.ligolw.open(coinc_doc, psd_file=psd_doc)
    except (ValueError, KeyError) as exc:
        raise LocalizationError(f"coinc file lacks what BAYESTAR needs: {exc}") from exc
    if len(source) != 1:
        raise LocalizationError(
            f"coinc file must hold exactly one coincidence, found {len(source)}"
        )
    disabled = set(disabled_detectors)
    if disabled:
        source = events.detector_disabled.open(source, disabled)
    ((coinc_event_id, event),) = source.items()
    try:
        singles = event.singles
    except DetectorDisabledError as exc:
        raise LocalizationError(str(exc)) from exc
    if not singles:
        raise LocalizationError("coinc has no single-detector triggers")
    return coinc_event_id, event


def _fits_bytes(sky_map) -> bytes:
    buffer = io.BytesIO()
    skymap_fits.write_sky_map(buffer, sky_map)
    return buffer.getvalue()


def _flat_fits_gz(sky_map, max_nside: int) -> bytes:
    """Rasterize the multi-order map to one NESTED resolution and gzip it."""
    max_order = int(ah.nside_to_level(max_nside))
    own_order = int(moc.uniq2order(sky_map["UNIQ"].max()))
    # Downsampling divides by PROBDENSITY, which is 0 in some far-off pixels;
    # ligo.skymap then writes NaN distances there, which is the convention.
    with np.errstate(divide="ignore", invalid="ignore"):
        flat = rasterize(sky_map, order=min(own_order, max_order))
    buffer = io.BytesIO()
    skymap_fits.write_sky_map(buffer, flat, nest=True)
    return gzip.compress(buffer.getvalue(), compresslevel=_FLAT_GZIP_LEVEL)
