"""BAYESTAR localization and sky-map summaries.

BAYESTAR takes several seconds per run on a small machine, so the module
runs it exactly twice (all detectors, then one detector disabled) and shares
the products between tests.
"""

import gzip
import io

import astropy_healpix as ah
import lal.series
import numpy as np
import pytest
from igwn_ligolw import utils as ligolw_utils
from ligo.skymap import moc
from ligo.skymap.io.fits import read_sky_map, write_sky_map

from alerts.science import localization
from alerts.science.localization import (
    FLAT_MAX_NSIDE,
    LocalizationError,
    localize,
    summarize_skymap,
)
from alerts.mockdata.simulation import F_LOW_HZ

OBJID = "G123456"
URL = "https://gracedb.example/events/G123456"
PROBABILITY_TOLERANCE = 1e-6
FULL_SKY_DEG2 = 4 * 180**2 / np.pi


@pytest.fixture(scope="module")
def event(mock_events):
    """The mock event with fewest detectors: the cheapest to localize."""
    return min(mock_events, key=lambda mock: len(mock.instruments))


@pytest.fixture(scope="module")
def products(event):
    return localize(
        event.coinc_xml, event.psd_xml_gz, None, F_LOW_HZ, objid=OBJID, url=URL
    )


@pytest.fixture(scope="module")
def weakest_detector(event):
    return min(event.instruments, key=event.detector_snrs.get)


@pytest.fixture(scope="module")
def reduced_products(event, weakest_detector):
    return localize(
        event.coinc_xml,
        event.psd_xml_gz,
        None,
        F_LOW_HZ,
        disabled_detectors=[weakest_detector],
    )


def _total_probability(sky_map):
    return float(np.sum(sky_map["PROBDENSITY"] * moc.uniq2pixarea(sky_map["UNIQ"])))


def test_multiorder_map_is_normalized_and_labelled(products, event):
    sky_map = read_sky_map(io.BytesIO(products.multiorder_fits), moc=True)
    assert _total_probability(sky_map) == pytest.approx(1, abs=PROBABILITY_TOLERANCE)
    assert {"DISTMU", "DISTSIGMA", "DISTNORM"} <= set(sky_map.colnames)
    assert sky_map.meta["objid"] == OBJID
    assert sky_map.meta["url"] == URL
    assert sky_map.meta["creator"] == "BAYESTAR"
    assert sorted(sky_map.meta["instruments"]) == sorted(event.instruments)
    assert products.instruments == tuple(sorted(event.instruments))
    assert products.f_low == F_LOW_HZ
    assert products.bayestar_seconds > 0


def test_flattened_map_is_gzipped_nested_healpix(products, tmp_path):
    flat_fits_gz = localization.flatten(products.multiorder_fits)
    assert flat_fits_gz[:2] == b"\x1f\x8b"
    path = tmp_path / localization.FLAT_FILENAME
    path.write_bytes(flat_fits_gz)
    (prob, distmu, _, _), meta = read_sky_map(str(path), nest=True, distances=True)

    sky_map = read_sky_map(io.BytesIO(products.multiorder_fits), moc=True)
    own_nside = ah.level_to_nside(moc.uniq2order(sky_map["UNIQ"].max()))
    assert ah.npix_to_nside(len(prob)) == min(own_nside, FLAT_MAX_NSIDE)
    assert prob.sum() == pytest.approx(1, abs=PROBABILITY_TOLERANCE)
    assert np.isfinite(distmu[prob > 0]).any()
    assert meta["objid"] == OBJID


def test_summary_areas_and_distance(products):
    summary = products.summary
    assert 0 < summary.area_50_deg2 < summary.area_90_deg2 < FULL_SKY_DEG2
    assert summary.distance_mean_mpc > 0
    assert summary.distance_std_mpc > 0
    # BAYESTAR writes its own marginal distance moments into the header;
    # the summary must agree with them.
    sky_map = read_sky_map(io.BytesIO(products.multiorder_fits), moc=True)
    assert summary.distance_mean_mpc == pytest.approx(sky_map.meta["distmean"], 1e-6)
    assert summary.distance_std_mpc == pytest.approx(sky_map.meta["diststd"], 1e-6)
    assert summarize_skymap(products.multiorder_fits) == summary
    assert set(summary.as_dict()) == {
        "area_50_deg2",
        "area_90_deg2",
        "distance_mean_mpc",
        "distance_std_mpc",
    }


def test_disabling_a_detector_relocalizes_without_it(
    products, reduced_products, weakest_detector
):
    assert weakest_detector not in reduced_products.instruments
    assert set(reduced_products.instruments) == set(products.instruments) - {
        weakest_detector
    }
    sky_map = read_sky_map(io.BytesIO(reduced_products.multiorder_fits), moc=True)
    assert weakest_detector not in sky_map.meta["instruments"]
    assert reduced_products.summary.area_90_deg2 > products.summary.area_90_deg2


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_summarize_burst_map_without_distance(compress):
    """A map uniform on the northern hemisphere has known credible areas."""
    order = 4
    nside = ah.level_to_nside(order)
    ipix = np.arange(ah.nside_to_npix(nside))
    uniq = moc.nest2uniq(np.int8(order), ipix)
    _, dec = ah.healpix_to_lonlat(ipix, nside, order="nested")
    density = np.where(dec.value > 0, 1 / (2 * np.pi), 0.0)
    buffer = io.BytesIO()
    write_sky_map(
        buffer,
        np.rec.fromarrays([uniq, density], names=["UNIQ", "PROBDENSITY"]),
        objid="cwb",
    )

    data = buffer.getvalue()
    summary = summarize_skymap(gzip.compress(data) if compress else data)

    hemisphere = FULL_SKY_DEG2 / 2
    assert summary.area_50_deg2 == pytest.approx(0.5 * hemisphere, rel=0.01)
    assert summary.area_90_deg2 == pytest.approx(0.9 * hemisphere, rel=0.01)
    assert summary.distance_mean_mpc is None
    assert summary.distance_std_mpc is None


def test_summarize_rejects_non_fits():
    with pytest.raises(LocalizationError):
        summarize_skymap(b"SIMPLE  = this is not a sky map")


@pytest.mark.parametrize(
    "psd_bytes",
    [b"", b"not xml at all", b"\x1f\x8b\x08\x00garbage", b"<LIGO_LW></LIGO_LW>"],
    ids=["empty", "text", "broken-gzip", "no-spectra"],
)
def test_bad_psd_is_a_localization_error(event, psd_bytes):
    with pytest.raises(LocalizationError, match="PSD"):
        localize(event.coinc_xml, psd_bytes, None, F_LOW_HZ)


def test_psd_missing_a_detector(event, weakest_detector):
    doc = ligolw_utils.load_fileobj(
        io.BytesIO(event.psd_xml_gz), contenthandler=lal.series.PSDContentHandler
    )
    psds = lal.series.read_psd_xmldoc(doc, root_name=None)
    del psds[weakest_detector]
    buffer = io.BytesIO()
    ligolw_utils.write_fileobj(lal.series.make_psd_xmldoc(psds), buffer)
    with pytest.raises(LocalizationError, match=weakest_detector):
        localize(event.coinc_xml, gzip.compress(buffer.getvalue()), None, F_LOW_HZ)


def test_coinc_without_tables(event):
    # A PSD document is valid LIGO-LW but has no coinc tables.
    with pytest.raises(LocalizationError, match="coinc"):
        localize(gzip.decompress(event.psd_xml_gz), event.psd_xml_gz, None, F_LOW_HZ)


def test_coinc_without_embedded_psd(event):
    with pytest.raises(LocalizationError, match="PSD"):
        localize(event.coinc_xml, None, None, F_LOW_HZ)


def test_disabling_every_detector(event):
    with pytest.raises(LocalizationError, match="exclude all"):
        localize(
            event.coinc_xml,
            event.psd_xml_gz,
            None,
            F_LOW_HZ,
            disabled_detectors=event.instruments,
        )


def test_disabling_a_detector_not_in_the_event(event):
    absent = next(d for d in ("H1", "L1", "V1", "K1") if d not in event.instruments)
    with pytest.raises(LocalizationError, match="no effect"):
        localize(
            event.coinc_xml,
            event.psd_xml_gz,
            None,
            F_LOW_HZ,
            disabled_detectors=[absent],
        )


def _fake_bayestar(exception):
    def fail(*args, **kwargs):
        raise exception

    return fail


@pytest.mark.parametrize("transient", [OSError("disk full"), MemoryError()])
def test_transient_failures_are_not_wrapped(event, monkeypatch, transient):
    monkeypatch.setattr(localization, "bayestar_localize", _fake_bayestar(transient))
    with pytest.raises(type(transient)) as caught:
        localize(event.coinc_xml, event.psd_xml_gz, None, F_LOW_HZ)
    assert not isinstance(caught.value, LocalizationError)


def test_bayestar_value_error_is_a_localization_error(event, monkeypatch):
    monkeypatch.setattr(
        localization, "bayestar_localize", _fake_bayestar(ValueError("diverged"))
    )
    with pytest.raises(LocalizationError, match="diverged"):
        localize(event.coinc_xml, event.psd_xml_gz, None, F_LOW_HZ)


def test_f_low_from_upload_wins_over_default(event, monkeypatch):
    seen = {}

    def record(event_, waveform, f_low):
        seen["f_low"] = f_low
        raise ValueError("stop after recording")

    monkeypatch.setattr(localization, "bayestar_localize", record)
    with pytest.raises(LocalizationError):
        localize(event.coinc_xml, event.psd_xml_gz, 25.0, F_LOW_HZ)
    assert seen["f_low"] == 25.0
    with pytest.raises(LocalizationError):
        localize(event.coinc_xml, event.psd_xml_gz, None, F_LOW_HZ)
    assert seen["f_low"] == F_LOW_HZ


def _scaled_psd_xml_gz(psd_xml_gz, detector, factor):
    """The same spectra with one detector's scaled by ``factor``."""
    doc = ligolw_utils.load_fileobj(
        io.BytesIO(psd_xml_gz), contenthandler=lal.series.PSDContentHandler
    )
    psds = lal.series.read_psd_xmldoc(doc, root_name=None)
    psds[detector].data.data = psds[detector].data.data * factor
    buffer = io.BytesIO()
    ligolw_utils.write_fileobj(lal.series.make_psd_xmldoc(psds), buffer)
    return gzip.compress(buffer.getvalue())


def test_input_fingerprint_compares_spectra_by_value(event, weakest_detector):
    """The digest that lets the orchestrator run BAYESTAR once per input:
    the same spectra embedded in the coinc.xml or sent as psd.xml.gz (even
    one with other detectors' spectra too) give the same digest; other
    spectra, cutoff or disabled detectors give another."""
    from alerts.mockdata.simulation import psd_xml_gz_for
    from tests.annotated import coinc_with_psds

    embedded = coinc_with_psds(event.coinc_xml, event.psd_xml_gz)
    digest = localization.input_fingerprint(embedded, None, None, F_LOW_HZ)
    assert len(digest) == 64
    assert localization.input_fingerprint(embedded, event.psd_xml_gz, None, F_LOW_HZ) == digest
    every_detector = psd_xml_gz_for(("H1", "L1", "V1"))
    assert localization.input_fingerprint(embedded, every_detector, None, F_LOW_HZ) == digest

    other_spectra = _scaled_psd_xml_gz(event.psd_xml_gz, weakest_detector, 2.0)
    different = {
        localization.input_fingerprint(embedded, other_spectra, None, F_LOW_HZ),
        localization.input_fingerprint(embedded, None, 25.0, F_LOW_HZ),
        localization.input_fingerprint(embedded, None, None, F_LOW_HZ, [weakest_detector]),
        localization.input_fingerprint(event.coinc_xml, event.psd_xml_gz, None, F_LOW_HZ),
    }
    assert digest not in different and len(different) == 4
    with pytest.raises(LocalizationError, match="PSD"):
        localization.input_fingerprint(event.coinc_xml, None, None, F_LOW_HZ)
