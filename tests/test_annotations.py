"""CBC annotations wired to the store (the seed's handle_cbc_event).

Products are read back with ligo.skymap and json, not just looked for.
BAYESTAR is slow on two cores, so it runs for real twice (the upload flow
and a re-localization); other tests reuse one cached localization.
"""
import gzip
import io
import json

import numpy as np
import pytest
from ligo.skymap.io.fits import read_sky_map
from ligo.skymap.moc import uniq2pixarea

from alerts import annotations
from alerts.events import PSD_FILENAME, RANKING_DATA_FILENAME, add_event_file, create_event
from alerts.models import Event, SkymapSummary, StepRun
from alerts.science import localization, pastro
from alerts.science.simulation import psd_xml_gz_for
from alerts.store import latest_file
from tests.factories import make_event

pytestmark = pytest.mark.django_db(transaction=True)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# A two-detector significant BNS from the shared simulation (tests/mock_data.py).
BNS_INDEX = 3
THREE_DETECTOR_INDEX = 1


@pytest.fixture(scope="session")
def cached_localization(mock_events):
    """One real BAYESTAR run, reused where the test is not about BAYESTAR."""
    mock = mock_events[BNS_INDEX]
    return localization.localize(mock.coinc_xml, mock.psd_xml_gz, f_low=None, default_f_low=30.0)


def upload(mock, pipeline="pycbc", files=None):
    return create_event(group="CBC", pipeline=pipeline, search="AllSky", coinc=mock.coinc_xml,
                        files=[(PSD_FILENAME, mock.psd_xml_gz)] if files is None else files)


def read_skymap(stored):
    return read_sky_map(io.BytesIO(stored.read()), moc=True)


def test_uploaded_event_gets_sky_map_classification_and_p_astro(mock_events):
    mock = mock_events[BNS_INDEX]
    event = upload(mock)
    labels = Event.objects.get(pk=event.pk).label_names()
    assert {"SKYMAP_READY", "EMBRIGHT_READY", "PASTRO_READY"} <= labels

    skymap_file = latest_file(event, "bayestar.multiorder.fits")
    assert set(skymap_file.tags) == {"sky_loc", "public"}
    skymap = read_skymap(skymap_file)
    probabilities = skymap["PROBDENSITY"] * uniq2pixarea(skymap["UNIQ"])
    assert np.sum(probabilities) == pytest.approx(1, abs=1e-3)
    assert skymap.meta["objid"] == event.graceid
    flat = latest_file(event, "bayestar.fits.gz")
    assert gzip.decompress(flat.read())[:6] == b"SIMPLE"

    summary = SkymapSummary.objects.get(file=skymap_file)
    assert 0 < summary.area_50_deg2 < summary.area_90_deg2
    assert summary.distance_mean_mpc > 0 and summary.distance_std_mpc > 0
    # The simulated source lies within a few sigma of the distance estimate.
    assert abs(mock.source.distance - summary.distance_mean_mpc) < 4 * summary.distance_std_mpc
    assert latest_file(event, "bayestar.png").read().startswith(PNG_MAGIC)

    properties = json.loads(latest_file(event, "em_bright.json").read())
    assert properties["HasNS"] > 0.9  # a binary neutron star
    assert properties["HasMassGap"] < 0.1
    classification = json.loads(latest_file(event, "pycbc.p_astro.json").read())
    extra = event.extra_attributes
    assert classification == pastro.compute_p_astro(event.far, event.snr, "pycbc", event.instrument_list,
                                                    extra["mass1"], extra["mass2"])
    assert latest_file(event, "pycbc.p_astro.png").read().startswith(PNG_MAGIC)
    assert latest_file(event, "em_bright.png").read().startswith(PNG_MAGIC)

    runs = {run.step: run for run in StepRun.objects.filter(event=event)}
    for step in ("bayestar", "em_bright", "p_astro", "skymap_plot"):
        assert runs[step].status == "succeeded" and runs[step].duration_s >= 0
    assert runs["bayestar"].duration_s > 0


def test_relocalization_without_a_detector_makes_a_new_version(mock_events, cached_localization, monkeypatch):
    mock = mock_events[THREE_DETECTOR_INDEX]
    real_localize = localization.localize
    monkeypatch.setattr(localization, "localize", lambda *a, **k: cached_localization)
    event = upload(mock, pipeline="gstlal", files=[(PSD_FILENAME, mock.psd_xml_gz)])
    monkeypatch.setattr(localization, "localize", real_localize)
    annotations.relocalize(event, ["V1"])
    second = latest_file(event, "bayestar.multiorder.fits")
    assert second.version == 2
    assert "without V1" in second.logs.first().message
    assert SkymapSummary.objects.get(file=second).area_90_deg2 != cached_localization.summary.area_90_deg2
    with pytest.raises(ValueError, match="no K1 trigger"):
        annotations.relocalize(event, ["K1"])


def test_gstlal_p_astro_waits_for_ranking_data(mock_events, cached_localization, monkeypatch):
    monkeypatch.setattr(localization, "localize", lambda *a, **k: cached_localization)
    event = upload(mock_events[BNS_INDEX], pipeline="gstlal")
    assert "PASTRO_READY" not in event.label_names()
    add_event_file(event, RANKING_DATA_FILENAME, gzip.compress(b"<LIGO_LW/>"))
    assert "PASTRO_READY" in event.label_names()
    assert set(json.loads(latest_file(event, "gstlal.p_astro.json").read())) == set(pastro.CATEGORIES)


def test_a_bad_psd_fails_the_sky_map_only(mock_events):
    mock = mock_events[BNS_INDEX]
    event = upload(mock, files=[(PSD_FILENAME, psd_xml_gz_for(("H1",)))])  # no L1 spectrum
    run = StepRun.objects.get(event=event, step="bayestar")
    assert run.status == "failed" and "L1" in run.error
    assert "SKYMAP_READY" not in event.label_names()
    assert {"EMBRIGHT_READY", "PASTRO_READY"} <= event.label_names()
    assert any("bayestar failed" in message for message in event.logs.values_list("message", flat=True))


def test_event_without_coinc_cannot_be_localized(mock_events):
    event = make_event(pipeline="pycbc", extra_attributes={})
    add_event_file(event, PSD_FILENAME, mock_events[BNS_INDEX].psd_xml_gz)
    run = StepRun.objects.get(event=event, step="bayestar")
    assert run.status == "failed" and "no coinc.xml" in run.error
    # No template masses either: classification fails with its reason too.
    assert "lacks template" in StepRun.objects.get(event=event, step="em_bright").error


def test_transient_failures_are_retried(mock_events, cached_localization, monkeypatch):
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) < 3:
            raise OSError("scratch disk full")
        return cached_localization

    monkeypatch.setattr(localization, "localize", flaky)
    event = upload(mock_events[BNS_INDEX])
    runs = list(StepRun.objects.filter(event=event, step="bayestar").order_by("started"))
    assert [(run.status, run.attempt) for run in runs] == [("skipped", 1), ("skipped", 2), ("succeeded", 3)]
    assert "SKYMAP_READY" in event.label_names()


def test_burst_pipeline_sky_map_is_summarised_and_plotted(cached_localization):
    event = make_event(group="Burst", pipeline="cwb", snr=None,
                       extra_attributes={"duration": 0.1, "central_freq": 150.0})
    add_event_file(event, "cwb.multiorder.fits", cached_localization.multiorder_fits, tags=[])
    stored = latest_file(event, "cwb.multiorder.fits")
    assert "SKYMAP_READY" in event.label_names()
    assert "sky_loc" in stored.tags
    summary = SkymapSummary.objects.get(file=stored)
    assert summary.area_90_deg2 == pytest.approx(cached_localization.summary.area_90_deg2)
    assert latest_file(event, "cwb.png").read().startswith(PNG_MAGIC)
    assert not StepRun.objects.filter(event=event, step="bayestar").exists()


def test_pipeline_p_astro_is_validated_and_used_as_is(settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "PIPELINES_WITH_OWN_PASTRO": ["mbta"]}
    event = make_event(pipeline="mbta", extra_attributes={"mass1": 1.4, "mass2": 1.3})
    assert "PASTRO_READY" not in event.label_names()  # mbta brings its own
    own = {"BNS": 0.9, "NSBH": 0.05, "BBH": 0.0, "Terrestrial": 0.05}
    add_event_file(event, "mbta.p_astro.json", json.dumps(own).encode())
    assert "PASTRO_READY" in event.label_names()
    assert json.loads(latest_file(event, "mbta.p_astro.json").read()) == own

    broken = make_event(gpstime=event.gpstime + 100, pipeline="mbta", extra_attributes={"mass1": 1.4, "mass2": 1.3})
    add_event_file(broken, "mbta.p_astro.json", b'{"BNS": 2.0}')
    assert "PASTRO_READY" not in broken.label_names()
    assert StepRun.objects.get(event=broken, step="pipeline_p_astro").status == "failed"


def test_sky_maps_alerts_wait_for_go_first(monkeypatch):
    """On the slow queue an event no alert waits for (not preferred, or no
    superevent) steps back once; preferred and ungrouped events run at once."""
    from tests.factories import T0

    preferred = make_event(snr=12.0)
    other = make_event(gpstime=T0 + 0.1, snr=8.0)
    lone = make_event(gpstime=T0 + 1000, far=1e-3)
    ungrouped = make_event(gpstime=T0 + 2000)
    Event.objects.filter(pk=ungrouped.pk).update(grouping_done=False, superevent=None)
    for event in (preferred, other, lone):
        event.refresh_from_db()
    assert other.superevent == preferred.superevent and lone.superevent is None
    assert preferred.superevent.preferred_event_id == preferred.pk

    queued, ran = [], []
    monkeypatch.setattr(annotations.workers, "enqueue", lambda path, *args, **kw: queued.append((path, args)))
    monkeypatch.setattr(annotations, "localize_event", lambda pk, *args, **kwargs: ran.append(pk))
    for event in (other, lone, preferred, ungrouped):
        annotations.localize_in_turn(event.pk)
    assert ran == [preferred.pk, ungrouped.pk]
    assert queued == [(annotations.LOCALIZE_IN_TURN_TASK, (other.pk, True)),
                      (annotations.LOCALIZE_IN_TURN_TASK, (lone.pk, True))]
    for _, args in queued:
        annotations.localize_in_turn(*args)
    assert ran == [preferred.pk, ungrouped.pk, other.pk, lone.pk]
