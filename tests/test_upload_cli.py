"""``manage.py upload_event``: a pipeline's upload from the command line.

Uploads are the simulated coinc.xml / psd.xml.gz of ``mock_events``; bad
uploads must exit with status 2, leave no Event or File behind and record
one Rejection.
"""
import gzip
import hashlib
import io
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from igwn_ligolw import lsctables
from igwn_ligolw import utils as ligolw_utils

from alerts.models import Event, File, Rejection, Superevent
from alerts.science.coinc import _ContentHandler
from tests.intake import damaged_array, superevent_manager_only  # noqa: F401 (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("superevent_manager_only")]

BAD_INPUT_STATUS = 2


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def upload(*args):
    """Run upload_event; returns (stdout, stderr)."""
    out, err = StringIO(), StringIO()
    call_command("upload_event", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def edited_coinc(coinc_xml, edit):
    """The coinc document after ``edit(xmldoc)``, written back with igwn-ligolw."""
    xmldoc = ligolw_utils.load_fileobj(io.BytesIO(coinc_xml), compress=False, contenthandler=_ContentHandler)
    edit(xmldoc)
    buffer = io.BytesIO()
    ligolw_utils.write_fileobj(xmldoc, buffer)
    return buffer.getvalue()


def without_combined_far(xmldoc):
    for row in lsctables.CoincInspiralTable.get_table(xmldoc):
        row.combined_far = None


def without_coinc_inspiral(xmldoc):
    table = lsctables.CoincInspiralTable.get_table(xmldoc)
    table.parentNode.removeChild(table)
    table.unlink()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def mock(mock_events):
    return mock_events[1]


@pytest.fixture
def coinc_path(tmp_path, mock):
    return write(tmp_path, "coinc.xml", mock.coinc_xml)


@pytest.fixture
def psd_path(tmp_path, mock):
    return write(tmp_path, "psd.xml.gz", mock.psd_xml_gz)


def test_upload_stores_the_event_its_files_and_forms_a_superevent(coinc_path, psd_path, mock,
                                                                 superevent_manager_only):
    out, _ = upload(coinc_path, "--group", "CBC", "--pipeline", "gstlal", "--psd", psd_path)

    event = Event.objects.get()
    assert out.strip() == event.graceid
    assert event.graceid.startswith("G")
    assert (event.group, event.pipeline, event.search, event.category) == ("CBC", "gstlal", "AllSky", "production")
    assert event.gpstime == pytest.approx(mock.gpstime, abs=1e-6)
    assert event.far == pytest.approx(mock.far, rel=1e-12)
    assert event.snr == pytest.approx(mock.snr, rel=1e-6)
    assert event.instrument_list == sorted(mock.instruments)
    assert event.offline is False
    extra = event.extra_attributes
    assert extra["mass1"] == pytest.approx(mock.source.mass1, rel=0.5)  # template masses, near the truth
    assert extra["mass2"] == pytest.approx(mock.source.mass2, rel=0.5)
    assert extra["mass1"] >= extra["mass2"] > 0
    assert extra["detector_snrs"] == pytest.approx(mock.detector_snrs, rel=1e-6)
    assert extra["chirp_mass"] == pytest.approx(
        (extra["mass1"] * extra["mass2"]) ** 0.6 / (extra["mass1"] + extra["mass2"]) ** 0.2)

    files = {f.filename: f for f in File.objects.filter(event=event)}
    assert set(files) == {"coinc.xml,1", "psd.xml.gz,1"}
    assert files["coinc.xml,1"].sha256 == sha256(mock.coinc_xml)
    assert files["psd.xml.gz,1"].sha256 == sha256(mock.psd_xml_gz)
    assert files["coinc.xml,1"].read() == mock.coinc_xml
    assert files["psd.xml.gz,1"].read() == mock.psd_xml_gz
    assert files["psd.xml.gz,1"].size == len(mock.psd_xml_gz)
    assert "psd" in files["psd.xml.gz,1"].tags

    superevent = Superevent.objects.get()
    assert superevent.superevent_id.startswith("S240517")  # GPS 1400000100 is 2024-05-17 16:54:42 UTC
    assert superevent.preferred_event_id == event.pk
    assert list(superevent.events.all()) == [event]
    assert superevent.t_start < event.gpstime < superevent.t_end
    assert not Rejection.objects.exists()
    # The rest of the workflow heard of the PSD (BAYESTAR's cue) and of the superevent.
    held_back = superevent_manager_only
    assert any(args == (event.pk, files["psd.xml.gz,1"].pk) for _, args in held_back)
    assert any(args == (superevent.pk,) for _, args in held_back)


def test_file_option_adds_a_new_version(coinc_path, psd_path, mock, tmp_path):
    out, _ = upload(coinc_path, "--pipeline", "gstlal", "--psd", psd_path)
    graceid = out.strip()
    second_psd = gzip.compress(gzip.decompress(mock.psd_xml_gz), mtime=1)  # same spectra, other bytes
    assert second_psd != mock.psd_xml_gz
    later = tmp_path / "later"
    later.mkdir()
    out, _ = upload("--file", graceid, write(later, "psd.xml.gz", second_psd))

    assert out.strip() == f"{graceid} psd.xml.gz,2"
    versions = File.objects.filter(event__graceid=graceid, name="psd.xml.gz").order_by("version")
    assert [(f.version, f.sha256) for f in versions] == [(1, sha256(mock.psd_xml_gz)), (2, sha256(second_psd))]
    assert versions[1].read() == second_psd


def test_ranking_data_is_stored_after_the_psd(coinc_path, psd_path, tmp_path, superevent_manager_only):
    ranking_data = gzip.compress(b"<?xml version='1.0'?><LIGO_LW><!-- gstlal ranking statistic --></LIGO_LW>")
    ranking_path = write(tmp_path, "rankingstat_H1L1.xml.gz", ranking_data)  # stored under the usual name
    out, _ = upload(coinc_path, "--pipeline", "gstlal", "--psd", psd_path, "--ranking-data", ranking_path)

    event = Event.objects.get()
    assert out.strip() == event.graceid
    stored = File.objects.get(event=event, name="ranking_data.xml.gz")
    assert stored.filename == "ranking_data.xml.gz,1"
    assert stored.read() == ranking_data
    assert stored.sha256 == sha256(ranking_data)
    assert "ranking_data" in stored.tags
    # Uploaded after the PSD, as gstlal does, and announced (gstlal's p_astro cue).
    assert stored.pk > File.objects.get(event=event, name="psd.xml.gz").pk
    assert any(args == (event.pk, stored.pk) for _, args in superevent_manager_only)


def test_offline_flag_is_stored(coinc_path, psd_path):
    upload(coinc_path, "--pipeline", "gstlal", "--psd", psd_path, "--offline")
    assert Event.objects.get().offline is True


def test_mdc_search_makes_an_m_event_and_an_ms_superevent(coinc_path, psd_path):
    out, _ = upload(coinc_path, "--pipeline", "gstlal", "--psd", psd_path, "--search", "MDC")
    event = Event.objects.select_related("superevent").get()
    assert out.strip() == event.graceid
    assert event.graceid.startswith("M")
    assert (event.search, event.category) == ("MDC", "mdc")
    assert event.superevent.superevent_id.startswith("MS240517")
    assert event.superevent.category == "mdc"


# --- refused uploads -------------------------------------------------------------------


def assert_refused(args, reason_fragment):
    with pytest.raises(CommandError) as refused:
        upload(*args)
    assert refused.value.returncode == BAD_INPUT_STATUS
    message = str(refused.value)
    assert "\n" not in message
    assert reason_fragment in message
    assert not Event.objects.exists()
    assert not File.objects.exists()
    assert not Superevent.objects.exists()
    rejection = Rejection.objects.get()
    assert rejection.source == "cli"
    assert rejection.reason == message
    # Nothing stored on disk either.
    media = Path(settings.MEDIA_ROOT)
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))
    return message


def test_not_xml_is_refused(tmp_path, psd_path):
    bad = write(tmp_path, "coinc.xml", b"this is not a coinc.xml, just text\n")
    message = assert_refused([bad, "--pipeline", "gstlal", "--psd", psd_path], "coinc.xml:")
    assert "not a LIGO-LW XML document" in message


def test_gzipped_coinc_cut_in_half_is_refused(tmp_path, mock, psd_path):
    compressed = gzip.compress(mock.coinc_xml)
    bad = write(tmp_path, "coinc.xml.gz", compressed[: len(compressed) // 2])
    message = assert_refused([bad, "--pipeline", "gstlal", "--psd", psd_path], "coinc.xml:")
    assert "gzip" in message


def test_truncated_psd_refuses_the_whole_upload(tmp_path, coinc_path, mock):
    bad_psd = write(tmp_path, "psd.xml.gz", mock.psd_xml_gz[: len(mock.psd_xml_gz) // 2])
    message = assert_refused([coinc_path, "--pipeline", "gstlal", "--psd", bad_psd], "psd.xml.gz:")
    assert "gzip" in message


def test_psd_without_spectra_refuses_the_whole_upload(tmp_path, coinc_path, mock):
    # A well-formed LIGO-LW document, but not a PSD: the coinc is fine, the upload is not.
    bad_psd = write(tmp_path, "psd.xml.gz", gzip.compress(mock.coinc_xml))
    assert_refused([coinc_path, "--pipeline", "gstlal", "--psd", bad_psd], "psd.xml.gz:")


def test_xml_without_coinc_inspiral_is_refused(tmp_path, mock, psd_path):
    bad = write(tmp_path, "coinc.xml", edited_coinc(mock.coinc_xml, without_coinc_inspiral))
    assert b"coinc_inspiral:table" not in Path(bad).read_bytes()
    message = assert_refused([bad, "--pipeline", "gstlal", "--psd", psd_path], "coinc.xml:")
    assert "coinc_inspiral" in message


def test_coinc_without_far_is_refused(tmp_path, mock, psd_path):
    bad = write(tmp_path, "coinc.xml", edited_coinc(mock.coinc_xml, without_combined_far))
    message = assert_refused([bad, "--pipeline", "gstlal", "--psd", psd_path], "coinc.xml:")
    assert "FAR" in message


def test_coinc_with_a_damaged_snr_series_is_refused(tmp_path, mock, psd_path):
    bad = write(tmp_path, "coinc.xml", damaged_array(mock.coinc_xml))
    message = assert_refused([bad, "--pipeline", "gstlal", "--psd", psd_path], "coinc.xml: ")
    assert "bytes were not decoded" in message


def test_psd_with_a_damaged_spectrum_refuses_the_whole_upload(tmp_path, coinc_path, mock):
    bad_psd = write(tmp_path, "psd.xml.gz", damaged_array(mock.psd_xml_gz))
    message = assert_refused([coinc_path, "--pipeline", "gstlal", "--psd", bad_psd], "psd.xml.gz: ")
    assert "bytes were not decoded" in message


@pytest.mark.parametrize("far", [-1.0, float("nan"), float("inf")])
def test_coinc_with_an_impossible_far_is_refused(tmp_path, mock, psd_path, far):
    def with_far(xmldoc):
        for row in lsctables.CoincInspiralTable.get_table(xmldoc):
            row.combined_far = far

    bad = write(tmp_path, "coinc.xml", edited_coinc(mock.coinc_xml, with_far))
    message = assert_refused([bad, "--pipeline", "gstlal", "--psd", psd_path], "coinc.xml: ")
    assert f"combined_far: {far}" in message


def test_unreadable_input_file_is_refused_and_recorded(tmp_path, coinc_path):
    missing = str(tmp_path / "no-such-psd.xml.gz")
    message = assert_refused([coinc_path, "--pipeline", "gstlal", "--psd", missing], "cannot read ")
    assert missing in message


def test_unknown_pipeline_is_refused(coinc_path, psd_path):
    message = assert_refused([coinc_path, "--pipeline", "nosuchpipe", "--psd", psd_path], "nosuchpipe")
    assert "gstlal" in message  # says what is expected


def test_unknown_event_for_file_is_refused(tmp_path, psd_path):
    assert_refused(["--file", "G999999", psd_path], "G999999")


def test_bad_file_for_existing_event_adds_no_version(coinc_path, psd_path, mock, tmp_path):
    graceid = upload(coinc_path, "--pipeline", "gstlal", "--psd", psd_path)[0].strip()
    bad_psd = write(tmp_path, "bad.xml.gz", mock.psd_xml_gz[:1000])
    with pytest.raises(CommandError) as refused:
        upload("--file", graceid, bad_psd, "--filename", "psd.xml.gz")
    assert refused.value.returncode == BAD_INPUT_STATUS
    assert "psd.xml.gz:" in str(refused.value)
    assert list(File.objects.filter(event__graceid=graceid).values_list("name", "version")) == [
        ("coinc.xml", 1), ("psd.xml.gz", 1)]
    assert Rejection.objects.count() == 1


def test_command_line_exit_status_and_one_line_message(tmp_path, worker_env, psd_path):
    """The real process: exit status 2 and a one-line reason on stderr."""
    bad = write(tmp_path, "coinc.xml", b"<not-ligolw>nothing here</not-ligolw>")
    result = subprocess.run(
        [sys.executable, "manage.py", "upload_event", bad, "--pipeline", "gstlal", "--psd", psd_path],
        cwd=settings.BASE_DIR, env=worker_env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == BAD_INPUT_STATUS, result.stderr
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("CommandError:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("CommandError: coinc.xml: coinc file is not a LIGO-LW XML document")
    assert "Traceback" not in result.stderr
    # The reason is the last word; before it only the audit log's record of the rejection
    # (and warnings of imported libraries).
    assert result.stderr.splitlines()[-1] == errors[0]
    assert " WARNING alerts.events: rejected cli input: coinc.xml: " in result.stderr
    assert not Event.objects.exists()
    assert not File.objects.exists()
    assert Rejection.objects.get().source == "cli"


@pytest.mark.parametrize("filename", ["../psd.xml.gz", "sub/psd.xml.gz", "psd.xml.gz,3"])
def test_file_names_with_directories_or_versions_are_refused(coinc_path, psd_path, filename):
    graceid = upload(coinc_path, "--pipeline", "gstlal", "--psd", psd_path)[0].strip()
    with pytest.raises(CommandError) as refused:
        upload("--file", graceid, psd_path, "--filename", filename)
    assert refused.value.returncode == BAD_INPUT_STATUS
    assert str(refused.value).startswith("filename ")
    assert File.objects.count() == 2
    assert Rejection.objects.get().source == "cli"
