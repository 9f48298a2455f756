"""Events that arrive already annotated, and state-vector frames, for the
orchestrator tests (no BAYESTAR run: a small sky map is made here)."""
import functools
import io
import json

import astropy_healpix as ah
import numpy as np
from astropy.table import Table
from django.db import transaction
from igwn_ligolw import lsctables
from igwn_ligolw import utils as ligolw_utils
from igwn_ligolw.utils import load_fileobj
from ligo.skymap import moc
from ligo.skymap.distance import moments_to_parameters
from ligo.skymap.io import fits as skymap_fits
from ligo.skymap.io.events.ligolw import ContentHandler as SkymapContentHandler

from alerts.models import Event
from alerts.science.detchar import DETECTOR_CHANNELS, good_state_value
from alerts.science.frames import state_vector_samples, write_state_vector_frame
from alerts.store import add_file, add_label
from tests.factories import T0, make_event

SKYMAP_ORDER = 4  # nside 16: 3072 pixels, enough for a blob of ~10 deg
SKYMAP_CENTER_DEG = (120.0, -30.0)
SKYMAP_WIDTH_DEG = 8.0
DISTANCE_MPC = (150.0, 40.0)

EM_BRIGHT = {"HasNS": 1.0, "HasRemnant": 0.874, "HasMassGap": 0.002}
P_ASTRO = {"BNS": 0.952, "NSBH": 0.004, "BBH": 0.0, "Terrestrial": 0.044}
CBC_READY = ("SKYMAP_READY", "EMBRIGHT_READY", "PASTRO_READY")
# The smallest PNG there is (1x1 pixel), as the event's own plot.
F_LOW_OPTION = "--f-low"  # how bayestar-realize-coincs records its cutoff
TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")


def coinc_with_psds(coinc_xml, psd_xml_gz, f_low=None):
    """``coinc_xml`` with the spectra of ``psd_xml_gz`` embedded, as some
    pipelines upload it (no separate psd.xml.gz needed); with ``f_low``, its
    process params' ``--f-low`` (the pipeline's low-frequency cutoff) set to
    that value."""
    xmldoc = load_fileobj(io.BytesIO(coinc_xml), contenthandler=SkymapContentHandler)
    psd_doc = load_fileobj(io.BytesIO(psd_xml_gz), contenthandler=SkymapContentHandler)
    root = xmldoc.childNodes[0]
    for element in list(psd_doc.childNodes[0].childNodes):
        root.appendChild(psd_doc.childNodes[0].removeChild(element))
    if f_low is not None:
        params = [row for row in lsctables.ProcessParamsTable.get_table(xmldoc) if row.param == F_LOW_OPTION]
        assert params, "the coinc has no --f-low to change"
        for row in params:
            row.pyvalue = float(f_low)
    buffer = io.BytesIO()
    ligolw_utils.write_fileobj(xmldoc, buffer)
    return buffer.getvalue()


@functools.cache
def tiny_skymap():
    """Multi-order FITS bytes: a Gaussian blob with distance layers."""
    nside = ah.level_to_nside(SKYMAP_ORDER)
    ipix = np.arange(ah.nside_to_npix(nside))
    lon, lat = ah.healpix_to_lonlat(ipix, nside, order="nested")
    ra0, dec0 = np.deg2rad(SKYMAP_CENTER_DEG)
    cos_sep = np.sin(lat.rad) * np.sin(dec0) + np.cos(lat.rad) * np.cos(dec0) * np.cos(lon.rad - ra0)
    sep = np.arccos(np.clip(cos_sep, -1, 1))
    prob = np.exp(-0.5 * (sep / np.deg2rad(SKYMAP_WIDTH_DEG)) ** 2)
    prob /= prob.sum()
    pixel_area = ah.nside_to_pixel_area(nside).to_value("sr")
    mu, sigma, norm = moments_to_parameters(*DISTANCE_MPC)
    table = Table({
        "UNIQ": moc.nest2uniq(np.int8(SKYMAP_ORDER), ipix),
        "PROBDENSITY": prob / pixel_area,
        "DISTMU": np.full(ipix.size, mu),
        "DISTSIGMA": np.full(ipix.size, sigma),
        "DISTNORM": np.full(ipix.size, norm),
    })
    table.meta["objid"] = "tiny"
    buffer = io.BytesIO()
    skymap_fits.write_sky_map(buffer, table, moc=True)
    return buffer.getvalue()


def annotated_event(labels=CBC_READY, products=("skymap", "em_bright", "p_astro"), **event_kwargs):
    """A CBC event whose annotations are already there when its superevent
    is vetted: everything is written in one transaction, so the inline flow
    (run after commit) sees the event complete."""
    # No template masses: the annotation steps cannot compute products of
    # their own over the ones given here.
    event_kwargs.setdefault("extra_attributes", {})
    with transaction.atomic():
        event = make_event(**event_kwargs)
        pipeline = event.pipeline
        if "skymap" in products:
            add_file(event, "bayestar.multiorder.fits", tiny_skymap(), tags=["sky_loc", "public"], announce=False)
            add_file(event, "bayestar.png", TINY_PNG, tags=["sky_loc"], announce=False)
        if "em_bright" in products:
            add_file(event, "em_bright.json", json.dumps(EM_BRIGHT).encode(), tags=["em_bright", "public"],
                     announce=False)
        if "p_astro" in products:
            add_file(event, f"{pipeline}.p_astro.json", json.dumps(P_ASTRO).encode(), tags=["p_astro", "public"],
                     announce=False)
        for label in labels:
            add_label(event, label)
    return Event.objects.get(pk=event.pk)


FRAME_START = int(T0) - 8
FRAME_DURATION = 16


def write_frames(directory, detectors=("H1", "L1"), cleared=()):
    """One GWF file per detector with every state-vector bit good, except
    ``cleared``: (detector, channel suffix, bit, start, end) tuples."""
    for detector in detectors:
        channels = {}
        for channel, bits in DETECTOR_CHANNELS[detector].items():
            clear = [(bit, start, end) for ifo, suffix, bit, start, end in cleared
                     if ifo == detector and channel.endswith(suffix)]
            channels[channel] = state_vector_samples(good_state_value(bits), FRAME_START, FRAME_DURATION,
                                                     cleared_bits=clear)
        (directory / detector).mkdir(parents=True, exist_ok=True)
        write_state_vector_frame(directory / detector, detector, channels, FRAME_START, FRAME_DURATION)
    return str(directory / "{detector}" / "*.gwf")
