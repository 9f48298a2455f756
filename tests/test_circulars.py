"""GCN Circular drafts: wording helpers, templates, numbers from the store."""
import json

import pytest

from alerts import products
from alerts.circulars import circular_context, circular_filename, render_circular, write_circular
from alerts.models import Superevent
from alerts.science import circular_text
from alerts.store import add_file
from tests.annotated import EM_BRIGHT, P_ASTRO, annotated_event, tiny_skymap
from tests.factories import T0, make_event

NOT_SIGNIFICANT_FAR = 1e-4


# --- wording (pure) ---------------------------------------------------------------


def test_percentages_round_and_saturate():
    assert [circular_text.percent_text(p) for p in (0.0, 0.004, 0.01, 0.376, 0.99, 0.995, 1.0)] == [
        "<1%", "<1%", "1%", "38%", "99%", ">99%", ">99%"]


def test_words_lists_and_names():
    assert circular_text.join_words(["A"]) == "A"
    assert circular_text.join_words(["A", "B"]) == "A and B"
    assert circular_text.join_words(["A", "B", "C"]) == "A, B, and C"
    assert circular_text.pipeline_title("pycbc") == "PyCBC Live"
    assert circular_text.detector_title("V1") == "Virgo Observatory (V1)"


def test_gps_time_in_utc_and_rounded_numbers():
    # GPS 1240215503 is 2019-04-25 08:18:05 UTC (18 leap seconds then).
    assert circular_text.gps_to_utc_text(T0 + 0.0174) == "2019-04-25 08:18:05.017 UTC"
    assert circular_text.area_text(1130.6) == "1131 deg2"
    assert circular_text.distance_text(155.4, 44.6) == "155 +/- 45 Mpc"
    assert circular_text.ranked({"BBH": 0.1, "BNS": 0.7, "NSBH": 0.1}) == [("BNS", 0.7), ("BBH", 0.1),
                                                                            ("NSBH", 0.1)]


def hand_context(**changes):
    context = {
        "superevent_id": "S190425z", "alert_type": "PRELIMINARY", "alert_title": "Preliminary",
        "superevent_url": "https://example.org/superevents/S190425z/", "user_guide_url": "https://example.org/guide/",
        "event": {"graceid": "G1", "group": "CBC", "is_cbc": True, "pipeline": "gstlal", "search": "AllSky",
                  "gpstime": T0, "far": 1 / (3.16e7 * 22), "instruments": ["LIGO Livingston Observatory (L1)",
                                                                           "Virgo Observatory (V1)"],
                  "duration": None, "central_frequency": None},
        "pipelines": [{"title": "GstLAL", "ref": 1}], "pipeline_citations": ["GstLAL [1]"],
        "classification": [("BNS", 0.999), ("Terrestrial", 0.001)], "properties": {"HasNS": 1.0},
        "skymaps": [{"filename": "bayestar.multiorder.fits,1", "url": "https://example.org/b,1",
                     "description": "a rapid localization by BAYESTAR [2]"}],
        "skymap": "bayestar.multiorder.fits,1", "area_50": 2500.2, "area_90": 10183.4,
        "distance_mean": 155.2, "distance_std": 45.1,
        "references": [{"number": 1, "text": "GstLAL paper"}, {"number": 2, "text": "BAYESTAR paper"}],
    }
    context.update(changes)
    return context


def test_preliminary_circular_in_the_established_style():
    text = render_circular("PRELIMINARY", hand_context())
    lines = text.splitlines()
    assert lines[0] == "LIGO/Virgo/KAGRA S190425z: Identification of a GW compact binary merger candidate"
    assert lines[2] == ("The LIGO Scientific Collaboration, the Virgo Collaboration, and the KAGRA "
                        "Collaboration report:")
    assert ("data from LIGO Livingston Observatory (L1) and Virgo Observatory (V1) identified the compact binary "
            "merger candidate S190425z at 2019-04-25 08:18:05.000 UTC (GPS time 1240215503.000)") in text
    assert "found by the GstLAL [1] pipeline." in text
    assert "about one in 22 years" in text
    assert "BNS (>99%) and Terrestrial (<1%)" in text
    assert "(HasNS" not in text and "HasNS, the lighter component" in text and "HasRemnant" not in text
    assert " * bayestar.multiorder.fits,1, a rapid localization by BAYESTAR [2]:\n   https://example.org/b,1" in text
    assert "90% credible region covers 10183 deg2 (50%: 2500 deg2)" in text
    assert "luminosity distance is 155 +/- 45 Mpc" in text
    assert " [2] BAYESTAR paper" in text
    assert "\n\n\n" not in text and text.endswith("\n") and "&gt;" not in text


def test_circular_without_sky_map_or_classification():
    text = render_circular("PRELIMINARY", hand_context(skymaps=[], skymap=None, classification=[], properties={}))
    assert "No sky map is available yet" in text
    assert "source category" not in text and "credible region" not in text


@pytest.mark.parametrize("alert_type, first_line", [
    ("INITIAL", "LIGO/Virgo/KAGRA S190425z: Identification of a GW compact binary merger candidate"),
    ("UPDATE", "LIGO/Virgo/KAGRA S190425z: Updated sky localization and source classification"),
    ("RETRACTION", "LIGO/Virgo/KAGRA S190425z: Retraction"),
    ("EARLYWARNING", "LIGO/Virgo/KAGRA S190425z: Early-warning identification of a GW compact binary merger "
                     "candidate"),
])
def test_every_alert_type_has_a_template(alert_type, first_line):
    text = render_circular(alert_type, hand_context())
    assert text.splitlines()[0] == first_line
    assert "https://example.org/superevents/S190425z/" in text
    assert circular_filename(alert_type) == f"{alert_type.lower()}-circular.txt"


# --- from the store -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_context_reads_the_superevent_products_and_stored_draft_is_not_repeated():
    # Automatic alerts are off (tests/conftest.py): nothing else writes here.
    first = make_event(far=NOT_SIGNIFICANT_FAR, pipeline="pycbc", snr=8.0)
    make_event(far=NOT_SIGNIFICANT_FAR * 2, pipeline="gstlal", snr=12.0, gpstime=T0 + 0.2)
    first.refresh_from_db()
    superevent = Superevent.objects.get(pk=first.superevent_id)
    skymap = add_file(superevent, "bayestar.multiorder.fits", tiny_skymap(), tags=["sky_loc", "public"])
    add_file(superevent, "gstlal.p_astro.json", json.dumps(P_ASTRO).encode(), tags=["p_astro"])
    add_file(superevent, "em_bright.json", json.dumps(EM_BRIGHT).encode(), tags=["em_bright"])

    context = circular_context(superevent)
    summary = products.skymap_summary(skymap)
    assert context["event"]["pipeline"] == "gstlal"  # the preferred event (louder)
    assert context["pipeline_citations"] == ["GstLAL [1]", "PyCBC Live [2]"]
    assert context["classification"][0] == ("BNS", 0.952)
    assert context["properties"] == EM_BRIGHT
    assert context["area_90"] == pytest.approx(summary["area_90_deg2"])
    assert context["distance_mean"] == pytest.approx(150, rel=0.02)
    assert context["skymaps"][0]["url"].endswith(
        f"/api/superevents/{superevent.superevent_id}/files/bayestar.multiorder.fits,1")

    stored = write_circular(superevent, "PRELIMINARY")
    assert (stored.name, stored.version, stored.tags) == ("preliminary-circular.txt", 1, ["em_follow"])
    text = stored.read().decode()
    assert f"{round(summary['area_90_deg2'])} deg2" in text
    assert "150 +/- 40 Mpc" in text
    assert "GstLAL [1] and PyCBC Live [2] pipelines" in text
    assert write_circular(superevent, "PRELIMINARY").pk == stored.pk  # same text: no new version


@pytest.mark.django_db(transaction=True)
def test_alert_flow_writes_the_circular_with_the_alert_numbers(settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "PRELIMINARY_ALERTS": True}
    event = annotated_event()
    superevent = Superevent.objects.get(pk=event.superevent_id)
    draft = superevent.files.get(name="preliminary-circular.txt")
    summary = products.skymap_summary(superevent.files.get(name="bayestar.multiorder.fits"))
    text = draft.read().decode()
    assert superevent.superevent_id in text.splitlines()[0]
    assert f"90% credible region covers {round(summary['area_90_deg2'])} deg2" in text
    assert "BNS (95%), Terrestrial (4%), NSBH (<1%), and BBH (<1%)" in text
    assert "HasRemnant, some matter remains outside the final compact object: 87%" in text


def test_far_is_always_about_one_in_n_years():
    """The issue's wording, also for recurrences under a year (an early-warning
    alert passes with trials factor 4 x FAR below one a month)."""
    seconds_per_year = 365.25 * 86400
    text = render_circular("EARLYWARNING", hand_context(event={**hand_context()["event"],
                                                              "far": 1 / (0.33 * seconds_per_year)}))
    assert "that is about one in 0.33 years." in text
    assert "month" not in text and " days" not in text


@pytest.mark.django_db(transaction=True)
def test_the_circular_describes_the_event_it_is_given_not_the_current_preferred_event():
    loud = make_event(far=NOT_SIGNIFICANT_FAR, pipeline="gstlal", snr=12.0)
    quiet = make_event(far=NOT_SIGNIFICANT_FAR * 2, pipeline="pycbc", snr=8.0, gpstime=T0 + 0.2)
    loud.refresh_from_db()
    superevent = Superevent.objects.get(pk=loud.superevent_id)
    assert superevent.preferred_event_id == loud.pk

    context = circular_context(superevent, event=quiet)
    assert context["event"]["graceid"] == quiet.graceid and context["event"]["far"] == quiet.far
    assert context["pipeline_citations"] == ["PyCBC Live [1]", "GstLAL [2]"]
    text = write_circular(superevent, "PRELIMINARY", event=quiet).read().decode()
    assert "found by the PyCBC Live [1] and GstLAL [2] pipelines" in text
    assert circular_context(superevent)["event"]["graceid"] == loud.graceid  # default: the preferred event
