"""CBC annotations wired to the store (the seed's handle_cbc_event).

Products are read back with ligo.skymap and json, not just looked for.
BAYESTAR is slow on two cores, so it runs for real four times (a cached
localization, the upload flow, a re-localization and a coinc.xml carrying
its PSDs); other tests reuse the cached localization.
"""
import gzip
import io
import json
import os

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.conf import settings
from django.core.management import CommandError, call_command
from ligo.skymap.io.fits import read_sky_map
from ligo.skymap.moc import uniq2pixarea
from rest_framework.test import APIClient

from alerts import annotations, products
from alerts.events import PSD_FILENAME, RANKING_DATA_FILENAME, add_event_file, create_event
from alerts.models import Event, File, SkymapSummary, StepRun
from alerts.science import em_bright, localization, pastro
from alerts.mockdata.simulation import psd_xml_gz_for
from alerts.store import add_file, latest_file
from tests.annotated import coinc_with_psds, tiny_skymap
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


def upload(mock, pipeline="pycbc", files=None, coinc=None):
    return create_event(group="CBC", pipeline=pipeline, search="AllSky", coinc=coinc or mock.coinc_xml,
                        files=[(PSD_FILENAME, mock.psd_xml_gz)] if files is None else files)


def read_skymap(stored):
    return read_sky_map(io.BytesIO(stored.read()), moc=True)


def messages(event):
    return list(event.logs.values_list("message", flat=True))


def step_runs(event, step):
    return [(run.status, run.attempt) for run in StepRun.objects.filter(event=event, step=step).order_by("started")]


def versions(event, name):
    return sorted(File.objects.filter(event=event, name=name).values_list("version", flat=True))


@pytest.fixture
def bayestar_calls(monkeypatch, cached_localization):
    """BAYESTAR replaced by the cached localization; records each call's
    keyword arguments."""
    calls = []

    def cached(*args, **kwargs):
        calls.append(kwargs)
        return cached_localization

    monkeypatch.setattr(localization, "localize", cached)
    return calls


def test_uploaded_event_gets_sky_map_classification_and_p_astro(mock_events, tmp_path):
    mock = mock_events[BNS_INDEX]
    event = upload(mock)
    labels = Event.objects.get(pk=event.pk).label_names()
    assert {"SKYMAP_READY", "EMBRIGHT_READY", "PASTRO_READY"} <= labels

    skymap_file = latest_file(event, "bayestar.multiorder.fits")
    assert set(skymap_file.tags) == {"sky_loc", "public"}
    skymap = read_skymap(skymap_file)
    probabilities = skymap["PROBDENSITY"] * uniq2pixarea(skymap["UNIQ"])
    assert np.sum(probabilities) == pytest.approx(1, abs=1e-3)
    # FITS header: OBJECT is the event, REFERENC its public URL.
    assert skymap.meta["objid"] == event.graceid
    assert skymap.meta["url"] == f"{settings.ORCHESTRATOR['BASE_URL']}/api/events/{event.graceid}/"
    assert sorted(skymap.meta["instruments"]) == event.instrument_list
    # The flattened map, its own step after SKYMAP_READY (it takes seconds
    # the alert path need not wait for), read back with ligo.skymap: the
    # same event, one NESTED resolution, the same probability.
    assert step_runs(event, "skymap_flatten") == [("succeeded", 1)]
    assert annotations.FLATTEN_TASK in settings.ORCHESTRATOR["SLOW_TASKS"]
    flat = latest_file(event, "bayestar.fits.gz")
    assert flat.tags == ["sky_loc"]
    flat_path = tmp_path / "bayestar.fits.gz"  # astropy knows gzip by the name
    flat_path.write_bytes(flat.read())
    (flat_prob, flat_distmu, _, _), flat_meta = read_sky_map(str(flat_path), nest=True, distances=True)
    assert flat_meta["objid"] == event.graceid and flat_meta["url"] == skymap.meta["url"]
    assert flat_prob.sum() == pytest.approx(1, abs=1e-3)
    assert np.isfinite(flat_distmu[flat_prob > 0]).any()

    summary = SkymapSummary.objects.get(file=skymap_file)
    assert 0 < summary.area_50_deg2 < summary.area_90_deg2
    assert summary.distance_mean_mpc > 0 and summary.distance_std_mpc > 0
    # The simulated source lies within a few sigma of the distance estimate.
    assert abs(mock.source.distance - summary.distance_mean_mpc) < 4 * summary.distance_std_mpc
    mollweide = latest_file(event, "bayestar.png")
    assert mollweide.read().startswith(PNG_MAGIC) and "sky_loc" in mollweide.tags

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
    assert step_runs(event, "bayestar") == [("succeeded", 1)]


def test_relocalization_without_a_detector_makes_a_new_version(mock_events, bayestar_calls, monkeypatch):
    mock = mock_events[THREE_DETECTOR_INDEX]
    event = upload(mock, pipeline="gstlal", files=[(PSD_FILENAME, mock.psd_xml_gz)])
    assert "V1" in event.instrument_list and versions(event, "bayestar.multiorder.fits") == [1]
    monkeypatch.undo()  # BAYESTAR for real from here on
    annotations.relocalize(event, ["V1"])
    second = latest_file(event, "bayestar.multiorder.fits")
    assert second.version == 2 and versions(event, "bayestar.fits.gz") == [1, 2]
    meta = read_skymap(second).meta
    assert "V1" not in meta["instruments"]
    assert sorted(meta["instruments"]) == sorted(set(event.instrument_list) - {"V1"})
    assert meta["objid"] == event.graceid
    assert "without V1" in second.logs.first().message
    summary = SkymapSummary.objects.get(file=second)
    assert summary.area_90_deg2 == pytest.approx(localization.summarize_skymap(second.read()).area_90_deg2)
    with pytest.raises(ValueError, match="no K1 trigger"):
        annotations.relocalize(event, ["K1"])


def test_localize_command_disables_a_detector(mock_events, bayestar_calls):
    """``manage.py localize G... --disable-detector V1`` queues a forced
    BAYESTAR run without V1: a new version even though the inputs are
    otherwise those of the first map."""
    mock = mock_events[THREE_DETECTOR_INDEX]
    event = upload(mock, pipeline="gstlal")
    assert [call["disabled_detectors"] for call in bayestar_calls] == [()]
    output = call_command("localize", event.graceid, "--disable-detector", "V1")
    assert "queued" in output
    assert [call["disabled_detectors"] for call in bayestar_calls] == [(), ("V1",)]
    assert versions(event, "bayestar.multiorder.fits") == [1, 2]
    assert "without V1" in latest_file(event, "bayestar.multiorder.fits").logs.first().message
    # Without a detector to disable: still an explicit request, so it runs.
    call_command("localize", event.graceid)
    assert versions(event, "bayestar.multiorder.fits") == [1, 2, 3]
    with pytest.raises(CommandError, match="no K1 trigger"):
        call_command("localize", event.graceid, "--disable-detector", "K1")
    with pytest.raises(CommandError, match="no event"):
        call_command("localize", "G0")
    assert len(bayestar_calls) == 3


def test_gstlal_p_astro_does_not_wait_for_ranking_data(mock_events, cached_localization, monkeypatch):
    monkeypatch.setattr(localization, "localize", lambda *a, **k: cached_localization)
    event = upload(mock_events[BNS_INDEX], pipeline="gstlal")
    assert "PASTRO_READY" in event.label_names()
    add_event_file(event, RANKING_DATA_FILENAME, gzip.compress(b"<LIGO_LW/>"))
    assert latest_file(event, "gstlal.p_astro.json").version == 2
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
    event = make_event(pipeline="mbta", extra_attributes={"mass1": 1.4, "mass2": 1.3})
    computed = latest_file(event, "mbta.p_astro.json")
    assert "computed" in computed.tags and "PASTRO_READY" in event.label_names()  # at once, not waited for
    own = {"BNS": 0.9, "NSBH": 0.05, "BBH": 0.0, "Terrestrial": 0.05}
    add_event_file(event, "mbta.p_astro.json", json.dumps(own).encode())
    assert json.loads(latest_file(event, "mbta.p_astro.json").read()) == own
    assert products.p_astro_file(event) == latest_file(event, "mbta.p_astro.json")
    assert products.classification(event) == own

    broken = make_event(gpstime=event.gpstime + 100, pipeline="mbta", extra_attributes={"mass1": 1.4, "mass2": 1.3})
    add_event_file(broken, "mbta.p_astro.json", b'{"BNS": 2.0}')
    run = StepRun.objects.get(event=broken, step="pipeline_p_astro")
    assert run.status == "failed" and "keys must be" in run.error
    assert "computed" in products.p_astro_file(broken).tags  # the broken upload is never used
    assert any(m.startswith("pipeline_p_astro failed: p_astro.json keys must be") for m in messages(broken))


def test_gstlal_gets_p_astro_at_once_and_ranking_data_replaces_it():
    event = make_event(pipeline="gstlal", extra_attributes={"mass1": 1.4, "mass2": 1.3})
    first = products.p_astro_file(event)
    assert first.version == 1 and "PASTRO_READY" in event.label_names()
    add_event_file(event, RANKING_DATA_FILENAME, gzip.compress(b"<LIGO_LW/>"))
    later = products.p_astro_file(event)
    assert later.name == first.name and later.version == 2


def test_expected_annotations_only_what_is_there_or_on_its_way():
    needed = ["SKYMAP_READY", "EMBRIGHT_READY", "PASTRO_READY"]
    event = make_event(pipeline="gstlal", extra_attributes={"mass1": 1.4, "mass2": 1.3})
    assert annotations.expected_annotations(event) == ["EMBRIGHT_READY", "PASTRO_READY"]  # no PSD, no BAYESTAR
    run = StepRun.objects.create(event=event, step="bayestar", started=event.created)
    assert annotations.expected_annotations(event) == needed  # BAYESTAR running
    run.delete()
    add_file(event, PSD_FILENAME, b"announced psd", tags=["psd"], announce=False)
    assert annotations.expected_annotations(event) == needed
    with_psd = make_event(gpstime=event.gpstime + 100, pipeline="gstlal",
                          extra_attributes={"mass1": 1.4, "mass2": 1.3, "has_psd": True})
    assert annotations.expected_annotations(with_psd) == needed


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
    monkeypatch.setattr(annotations.workers, "enqueue", lambda path, *args, **kw: queued.append((annotations.workers.task_path(path), args)))
    monkeypatch.setattr(annotations, "localize_event", lambda pk, *args, **kwargs: ran.append(pk))
    for event in (other, lone, preferred, ungrouped):
        annotations.localize_in_turn(event.pk)
    assert ran == [preferred.pk, ungrouped.pk]
    assert queued == [(annotations.LOCALIZE_IN_TURN_TASK, (other.pk, True)),
                      (annotations.LOCALIZE_IN_TURN_TASK, (lone.pk, True))]
    for _, args in queued:
        annotations.localize_in_turn(*args)
    assert ran == [preferred.pk, ungrouped.pk, other.pk, lone.pk]


# --- a pipeline's own p_astro.json against the computed one ------------------------------

OWN_P_ASTRO = {"BNS": 0.9, "NSBH": 0.05, "BBH": 0.0, "Terrestrial": 0.05}


def test_pipeline_p_astro_arriving_after_the_computed_one_wins():
    event = make_event(pipeline="pycbc")  # not in PIPELINES_WITH_OWN_PASTRO: computed at once
    computed = latest_file(event, "pycbc.p_astro.json")
    assert computed.version == 1 and "computed" in computed.tags
    assert products.p_astro_file(event) == computed

    add_event_file(event, "pycbc.p_astro.json", json.dumps(OWN_P_ASTRO).encode())
    own = latest_file(event, "pycbc.p_astro.json")
    assert own.version == 2 and "computed" not in own.tags and "p_astro" in own.tags
    assert products.p_astro_file(event) == own
    assert products.classification(event) == OWN_P_ASTRO
    assert step_runs(event, "pipeline_p_astro") == [("succeeded", 1)]


def test_computed_p_astro_never_overrides_the_pipelines_own():
    """gstlal's p_astro.json comes after the one computed at once and before
    its ranking data: the computation the ranking data triggers is skipped,
    the upload stays in use."""
    event = make_event(pipeline="gstlal")
    add_event_file(event, "gstlal.p_astro.json", json.dumps(OWN_P_ASTRO).encode())
    add_event_file(event, RANKING_DATA_FILENAME, gzip.compress(b"<LIGO_LW/>"))
    assert sorted(step_runs(event, "p_astro")) == [("skipped", 1), ("succeeded", 1)]
    assert "gstlal.p_astro.json,2 uploaded by gstlal is used as is" in StepRun.objects.get(
        event=event, step="p_astro", status="skipped").error
    assert any(m.startswith("p_astro skipped: gstlal.p_astro.json,2") for m in messages(event))
    assert versions(event, "gstlal.p_astro.json") == [1, 2]
    assert products.classification(event) == OWN_P_ASTRO


def test_upload_stored_but_not_yet_validated_still_stops_the_computation():
    """The race: the upload is stored, its validation not run yet, when the
    computation runs. The computation sees it; the upload is used once
    validated, and not before."""
    event = make_event(pipeline="gstlal")
    upload_file = add_file(event, "gstlal.p_astro.json", json.dumps(OWN_P_ASTRO).encode(), announce=False)
    computed = products.p_astro_file(event)  # the one computed at once
    annotations.compute_pastro(event.pk)
    assert sorted(step_runs(event, "p_astro")) == [("skipped", 1), ("succeeded", 1)]
    assert products.p_astro_file(event) == computed  # the upload is not validated yet
    annotations.accept_pipeline_pastro_task(event.pk, upload_file.pk)
    assert products.p_astro_file(event) == upload_file
    assert "PASTRO_READY" in event.label_names()


def test_invalid_pipeline_p_astro_is_never_used():
    event = make_event(pipeline="pycbc")
    computed = latest_file(event, "pycbc.p_astro.json")
    # Tagged p_astro by the pipeline itself: the tag must not smuggle it in.
    bad = {"BNS": 0.9, "NSBH": 0.5, "BBH": 0.0, "Terrestrial": 0.05}
    add_event_file(event, "pycbc.p_astro.json", json.dumps(bad).encode(), tags=["p_astro", "public"])
    rejected = latest_file(event, "pycbc.p_astro.json")
    assert rejected.version == 2 and "p_astro" not in rejected.tags
    run = StepRun.objects.get(event=event, step="pipeline_p_astro")
    assert run.status == "failed" and "sum to 1.45" in run.error
    assert "pipeline_p_astro failed: p_astro.json probabilities sum to 1.45, not 1" in messages(event)
    assert products.p_astro_file(event) == computed
    assert products.classification(event) == json.loads(computed.read())


# --- transient failures, atomic products, failure logs ------------------------------------

@pytest.mark.parametrize("kind", ["p_astro", "skymap"])
def test_transient_failure_of_an_upload_step_gives_up_after_max_attempts(kind):
    """A file gone from storage (FileNotFoundError) is retried, but only up
    to ANNOTATION_RETRY["max_attempts"]; then the step fails, with a log."""
    if kind == "p_astro":
        event = make_event(pipeline="mbta", extra_attributes={})
        stored = add_file(event, "mbta.p_astro.json", json.dumps(OWN_P_ASTRO).encode(), announce=False)
        task, step = annotations.accept_pipeline_pastro_task, "pipeline_p_astro"
    else:
        event = make_event(group="Burst", pipeline="cwb", snr=None, extra_attributes={})
        stored = add_file(event, "cwb.multiorder.fits", tiny_skymap(), announce=False)
        task, step = annotations.accept_pipeline_skymap_task, "pipeline_skymap"
    os.remove(stored.content.path)
    task(event.pk, stored.pk)
    max_attempts = settings.ORCHESTRATOR["ANNOTATION_RETRY"]["max_attempts"]
    expected = [("skipped", attempt) for attempt in range(1, max_attempts)] + [("failed", max_attempts)]
    assert step_runs(event, step) == expected
    assert "FileNotFoundError" in StepRun.objects.get(event=event, step=step, status="failed").error
    assert any(m.startswith(f"{step} failed after {max_attempts} attempts: FileNotFoundError")
               for m in messages(event))
    assert not {"PASTRO_READY", "SKYMAP_READY"} & event.label_names()


def test_a_failure_after_the_sky_map_leaves_no_half_product(mock_events, bayestar_calls, monkeypatch):
    """The label fails after the multi-order file and its summary were
    written: all of it is rolled back (and the flattening it queued never
    runs), and the next run writes version 1 again. The failure (a
    KeyError) is logged on the event."""
    real_add_label = annotations.add_label

    def failing_add_label(owner, name, *args, **kwargs):
        if name == "SKYMAP_READY":
            raise KeyError("label")
        return real_add_label(owner, name, *args, **kwargs)

    monkeypatch.setattr(annotations, "add_label", failing_add_label)
    event = upload(mock_events[BNS_INDEX])
    assert step_runs(event, "bayestar") == [("failed", 1)]
    assert not File.objects.filter(event=event, name__startswith="bayestar").exists()
    assert not SkymapSummary.objects.filter(file__event=event).exists()
    assert "SKYMAP_READY" not in event.label_names()
    assert "bayestar failed: KeyError: 'label'" in messages(event)

    monkeypatch.setattr(annotations, "add_label", real_add_label)
    annotations.localize_event(event.pk)
    assert versions(event, "bayestar.multiorder.fits") == [1] and versions(event, "bayestar.fits.gz") == [1]
    assert SkymapSummary.objects.filter(file__event=event).count() == 1
    assert "SKYMAP_READY" in event.label_names()


@pytest.mark.parametrize("error", [TypeError("unsupported operand"), KeyError("spin1z")])
def test_any_failure_leaves_a_one_line_log(monkeypatch, error):
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(em_bright, "em_bright_json", broken)
    event = make_event(pipeline="pycbc")
    run = StepRun.objects.get(event=event, step="em_bright")
    assert run.status == "failed"
    logged = [m for m in messages(event) if m.startswith("em_bright failed:")]
    assert logged == [f"em_bright failed: {type(error).__name__}: {error}"]
    assert "\n" not in logged[0]
    assert "EMBRIGHT_READY" not in event.label_names()


LOCALIZE_ON_PSD_TASK = annotations.workers.task_path(annotations.localize_on_psd)


def test_classification_and_p_astro_do_not_wait_for_bayestar(mock_events, bayestar_calls, monkeypatch):
    """BAYESTAR held back on the slow queue: the other two products are
    already there; the sky map follows when the slow task runs."""
    held = []
    real_enqueue = annotations.workers.enqueue

    def enqueue(path, *args, **kwargs):
        path = annotations.workers.task_path(path)
        if path in (annotations.LOCALIZE_IN_TURN_TASK, annotations.LOCALIZE_TASK, LOCALIZE_ON_PSD_TASK):
            held.append((path, args))
        else:
            real_enqueue(path, *args, **kwargs)

    monkeypatch.setattr(annotations.workers, "enqueue", enqueue)
    event = upload(mock_events[BNS_INDEX])
    # The PSD's handler is queued for every new file; it localizes only for psd.xml.gz.
    psd = event.files.get(name="psd.xml.gz")
    assert (LOCALIZE_ON_PSD_TASK, (event.pk, psd.pk)) in held
    assert {path for path, _ in held} == {LOCALIZE_ON_PSD_TASK}
    labels = event.label_names()
    assert {"EMBRIGHT_READY", "PASTRO_READY"} <= labels and "SKYMAP_READY" not in labels
    assert not StepRun.objects.filter(event=event, step="bayestar").exists()
    assert bayestar_calls == []

    for _, args in held:
        annotations.localize_on_psd(*args)
    assert StepRun.objects.filter(event=event, step="bayestar").count() == 1
    assert "SKYMAP_READY" in event.label_names()


# --- BAYESTAR once per input; a coinc.xml that carries its PSDs ---------------------------

F_LOW_OF_UPLOAD_HZ = 25.0


def test_coinc_with_embedded_psds_is_localized_once_per_input(mock_events, monkeypatch):
    """A coinc.xml carrying its PSDs (no psd.xml.gz) and a process-params
    cutoff of 25 Hz (not the 30 Hz default): BAYESTAR runs on it with 25 Hz.
    A later psd.xml.gz with the same spectra does not run it again; one
    with other spectra makes version 2."""
    mock = mock_events[BNS_INDEX]
    assert settings.ORCHESTRATOR["DEFAULT_F_LOW_HZ"] != F_LOW_OF_UPLOAD_HZ
    seen = []
    real_bayestar = localization.bayestar_localize

    def recording_bayestar(event, waveform, f_low, *args, **kwargs):
        seen.append(f_low)
        return real_bayestar(event, waveform, f_low, *args, **kwargs)

    monkeypatch.setattr(localization, "bayestar_localize", recording_bayestar)
    event = upload(mock, files=[], coinc=coinc_with_psds(mock.coinc_xml, mock.psd_xml_gz, f_low=F_LOW_OF_UPLOAD_HZ))
    assert event.extra_attributes["f_low"] == F_LOW_OF_UPLOAD_HZ and event.extra_attributes["has_psd"]
    assert latest_file(event, PSD_FILENAME) is None
    assert seen == [F_LOW_OF_UPLOAD_HZ]
    assert step_runs(event, "bayestar") == [("succeeded", 1)]
    skymap_file = latest_file(event, "bayestar.multiorder.fits")
    skymap = read_skymap(skymap_file)
    assert np.sum(skymap["PROBDENSITY"] * uniq2pixarea(skymap["UNIQ"])) == pytest.approx(1, abs=1e-3)
    assert sorted(skymap.meta["instruments"]) == event.instrument_list
    assert "SKYMAP_READY" in event.label_names()
    made = skymap_file.logs.first().message
    assert "(PSDs in the coinc)" in made and f"f_low {F_LOW_OF_UPLOAD_HZ:g} Hz" in made

    # The same spectra again as psd.xml.gz: nothing to redo.
    add_event_file(event, PSD_FILENAME, mock.psd_xml_gz)
    assert step_runs(event, "bayestar") == [("succeeded", 1), ("skipped", 1)]
    assert versions(event, "bayestar.multiorder.fits") == [1]
    assert any(m.startswith("bayestar skipped: bayestar.multiorder.fits,1 was already made") for m in messages(event))
    assert seen == [F_LOW_OF_UPLOAD_HZ]

    # Other spectra: a new map (BAYESTAR stubbed from here on).
    monkeypatch.setattr(localization, "bayestar_localize", lambda *a, **k: read_skymap(skymap_file))
    louder_noise = psd_with_scaled_noise(mock.psd_xml_gz, 2.0)
    add_event_file(event, PSD_FILENAME, louder_noise)
    assert versions(event, "bayestar.multiorder.fits") == [1, 2]
    assert "from coinc.xml,1 and psd.xml.gz,2" in latest_file(event, "bayestar.multiorder.fits").logs.first().message


def psd_with_scaled_noise(psd_xml_gz, factor):
    import lal.series
    from igwn_ligolw import utils as ligolw_utils

    doc = ligolw_utils.load_fileobj(io.BytesIO(psd_xml_gz), contenthandler=lal.series.PSDContentHandler)
    psds = lal.series.read_psd_xmldoc(doc, root_name=None)
    for psd in psds.values():
        psd.data.data = psd.data.data * factor
    buffer = io.BytesIO()
    ligolw_utils.write_fileobj(lal.series.make_psd_xmldoc(psds), buffer)
    return gzip.compress(buffer.getvalue())


# --- the sky map summary in the REST API -----------------------------------------------------

def test_skymap_summary_is_in_the_api(mock_events, bayestar_calls, cached_localization):
    event = upload(mock_events[BNS_INDEX])
    expected = cached_localization.summary.as_dict()
    api = APIClient()
    api.force_authenticate(get_user_model().objects.create_user("reader"))  # any signed-in user reads

    body = api.get(f"/api/events/{event.graceid}/").json()
    assert body["skymap"]["filename"] == "bayestar.multiorder.fits,1"
    for key, value in expected.items():
        assert body["skymap"][key] == pytest.approx(value)

    files = {f["filename"]: f for f in api.get(f"/api/events/{event.graceid}/files/").json()}
    for key, value in expected.items():
        assert files["bayestar.multiorder.fits,1"]["skymap_summary"][key] == pytest.approx(value)
    assert files["coinc.xml,1"]["skymap_summary"] is None
    assert files["bayestar.fits.gz,1"]["skymap_summary"] is None

    # The superevent's sky map (the preliminary alert copies it there)
    # shares the event file's summary.
    event.refresh_from_db()
    superevent = event.superevent
    assert api.get(f"/api/superevents/{superevent.superevent_id}/").json()["skymap"] is None
    add_file(superevent, "bayestar.multiorder.fits", latest_file(event, "bayestar.multiorder.fits").read(),
             tags=["sky_loc", "public"])
    body = api.get(f"/api/superevents/{superevent.superevent_id}/").json()
    assert body["skymap"]["filename"] == "bayestar.multiorder.fits,1"
    assert body["skymap"]["area_90_deg2"] == pytest.approx(expected["area_90_deg2"])
    listed = api.get("/api/events/").json()["results"]
    assert [e["skymap"]["area_50_deg2"] for e in listed if e["graceid"] == event.graceid] == [
        pytest.approx(expected["area_50_deg2"])]
