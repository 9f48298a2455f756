"""Stored files that no File row names: found after a rolled-back upload, removed on request."""
import os
import time

import pytest
from django.core.management import call_command

from alerts import events
from alerts.events import create_event
from alerts.models import Event, File
from alerts.store import add_file, orphaned_files
from tests.factories import make_event

pytestmark = pytest.mark.django_db(transaction=True)

HOUR_S = 3600.0


def age(settings, name, seconds):
    path = os.path.join(settings.MEDIA_ROOT, name)
    then = time.time() - seconds
    os.utime(path, (then, then))


def stored_names(settings):
    return {os.path.relpath(os.path.join(root, name), settings.MEDIA_ROOT)
            for root, _, names in os.walk(settings.MEDIA_ROOT) for name in names}


def test_a_rolled_back_upload_leaves_an_orphan_that_prune_storage_removes(settings, mock_events, monkeypatch,
                                                                          capsys):
    kept = add_file(make_event(), "notes.txt", b"kept")
    rows_before = (Event.objects.count(), File.objects.count())
    on_disk_before = stored_names(settings)
    assert set(File.objects.values_list("content", flat=True)) == on_disk_before
    mock = mock_events[0]

    def fail(stored):
        raise RuntimeError("database went away")

    monkeypatch.setattr(events, "file_added_message", fail)  # after the coinc.xml is in storage
    with pytest.raises(RuntimeError):
        create_event(group="CBC", pipeline=mock.pipeline, coinc=mock.coinc_xml)
    monkeypatch.undo()
    assert (Event.objects.count(), File.objects.count()) == rows_before  # the upload left no rows
    (orphan,) = stored_names(settings) - on_disk_before
    assert "coinc.xml" in orphan

    # Young files may belong to transactions still running: not listed.
    assert orphaned_files(HOUR_S) == []
    for name in stored_names(settings):
        age(settings, name, 2 * HOUR_S)
    assert orphaned_files(HOUR_S) == [orphan]

    call_command("prune_storage", "--grace", str(HOUR_S))  # lists only
    out, err = capsys.readouterr()
    assert out.split() == [orphan] and "1 orphaned file(s)" in err
    assert os.path.exists(os.path.join(settings.MEDIA_ROOT, orphan))

    call_command("prune_storage", "--grace", str(HOUR_S), "--delete")
    assert "removed" in capsys.readouterr().err
    assert stored_names(settings) == on_disk_before
    assert File.objects.get(pk=kept.pk).read() == b"kept"
    assert orphaned_files(0) == []
