"""alerts.row_insert writes the rows the ORM would (on the test database's backend)."""
import datetime

import pytest
from django.forms.models import model_to_dict

from alerts.models import Category, Event, Log, Superevent
from alerts.row_insert import insert
from tests.factories import T0

pytestmark = pytest.mark.django_db


def event_fields(**overrides):
    fields = dict(group="CBC", pipeline="gstlal", search="AllSky", category=Category.PRODUCTION,
                  gpstime=T0, far=1e-10, snr=9.5, instruments="H1,L1",
                  extra_attributes={"mass1": 1.4, "detector_snrs": {"H1": 6.0, "L1": 7.0}})
    return {**fields, **overrides}


def stored(model, pk):
    """A row as read back through the ORM, without what differs by nature."""
    row = model_to_dict(model.objects.get(pk=pk))
    row.pop("id")
    return row


def test_rows_match_those_the_orm_writes():
    by_orm = Event.objects.create(graceid="G1", **event_fields())
    by_insert = Event(graceid="G2", **event_fields())
    insert([by_insert])
    assert by_insert.pk is not None and not by_insert._state.adding
    assert {**stored(Event, by_insert.pk), "graceid": "G1"} == stored(Event, by_orm.pk)

    orm_log = Log.objects.create(event=by_orm, message="hello", tags=["a", "b"])
    logs = insert([Log(event=by_orm, message="hello", tags=["a", "b"]),
                   Log(event=by_insert, message="second", tags=[])])
    assert [log.pk for log in logs] == sorted(log.pk for log in logs) and logs[0].pk > orm_log.pk
    assert stored(Log, logs[0].pk) == stored(Log, orm_log.pk)
    # auto_now_add filled in, on the instance and in the row.
    assert logs[1].created is not None
    assert Log.objects.get(pk=logs[1].pk).created == logs[1].created
    assert Log.objects.get(pk=logs[1].pk).tags == []


def test_a_preset_primary_key_is_written_as_given():
    event = Event(pk=987654, graceid="G987654", **event_fields())
    insert([event])
    assert Event.objects.get(pk=987654).graceid == "G987654"


def test_objects_saved_before_are_linked_and_unsaved_ones_refused():
    superevent = Superevent(superevent_id="S190425a", category=Category.PRODUCTION, t_start=T0 - 1, t_0=T0,
                            t_end=T0 + 1, far=1e-10, date=datetime.date(2019, 4, 25), day_index=0)
    log = Log(superevent=superevent, message="created")
    with pytest.raises(ValueError, match="unsaved"):
        insert([log])
    insert([superevent])
    insert([log])
    assert Log.objects.get(pk=log.pk).superevent_id == superevent.pk


def test_one_model_at_a_time_and_no_mixed_primary_keys():
    with pytest.raises(TypeError):
        insert([Event(graceid="G3", **event_fields()), Log(message="x")])
    with pytest.raises(ValueError):
        insert([Event(pk=5, graceid="G5", **event_fields()), Event(graceid="G6", **event_fields())])
    assert insert([]) == []
    assert not Event.objects.exists()


def test_statements_run_in_order_in_one_round_trip_on_postgresql():
    """run() hands each statement its own rows; on PostgreSQL they travel as
    one query string, elsewhere one by one with the same outcome."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from alerts.row_insert import Statement, insert_statement, run

    event = Event(graceid="G7", **event_fields())
    seen = []
    with CaptureQueriesContext(connection) as queries:
        run([
            insert_statement([event]),
            None,  # skipped
            Statement("SELECT graceid FROM alerts_event WHERE graceid = %s", ["G7"], returns_rows=True,
                      done=seen.append),
            Statement("UPDATE alerts_event SET snr = %s WHERE graceid = %s", [12.5, "G7"]),
        ])
    assert len(queries.captured_queries) == (1 if connection.vendor == "postgresql" else 3)
    assert event.pk is not None and not event._state.adding
    assert seen == [[("G7",)]]  # the row the INSERT before it wrote
    assert Event.objects.get(pk=event.pk).snr == 12.5


def test_a_failing_statement_stops_the_rest():
    from django.db import DatabaseError, transaction

    from alerts.row_insert import Statement, insert_statement, run

    with pytest.raises(DatabaseError), transaction.atomic():
        run([insert_statement([Event(graceid="G8", **event_fields())]),
             Statement("UPDATE alerts_no_such_table SET x = %s", [1]),
             insert_statement([Event(graceid="G9", **event_fields())])])
    assert not Event.objects.exists()


def test_reserved_primary_keys_are_new_and_distinct():
    from django.db import connection

    from alerts.models import File
    from alerts.row_insert import reserve_pks

    if connection.vendor != "postgresql":
        pytest.skip("reserve_pks draws from PostgreSQL sequences; SQLite uploads insert then update")
    first, file_pk = reserve_pks(Event, File)
    again, = reserve_pks(Event)
    assert again > first and file_pk > 0
    insert([Event(pk=first, graceid="G10", **event_fields())])
    assert Event.objects.get(pk=first).graceid == "G10"


def test_selected_rows_are_the_instances_the_orm_reads():
    """select_statement converts each column as a queryset does (JSON, and
    SQLite's dates and booleans), so the instances compare field by field."""
    from alerts.row_insert import run, select_statement

    first = Event.objects.create(graceid="G11", **event_fields())
    Event.objects.create(graceid="G12", grouping_done=True, **event_fields(extra_attributes={"a": [1, 2]}))
    read = []
    run([select_statement(Event, "gpstime = %s", [T0], read.extend, order_by="id")])
    assert [type(e) for e in read] == [Event, Event] and not read[0]._state.adding
    assert [model_to_dict(e) for e in read] == [model_to_dict(e) for e in Event.objects.order_by("id")]
    assert read[0].created == first.created and read[1].grouping_done is True


def test_a_savepoint_is_sent_with_the_next_statements_and_rolled_back_to():
    from django.db import DatabaseError, connection, transaction
    from django.test.utils import CaptureQueriesContext

    from alerts.row_insert import Savepoint, Statement, insert_statement, run

    with transaction.atomic():
        kept = Event.objects.create(graceid="G13", **event_fields())
        untouched = Savepoint("never_sent")
        untouched.rollback()  # never sent: nothing to undo, no query
        savepoint = Savepoint("trial")
        with CaptureQueriesContext(connection) as queries, pytest.raises(DatabaseError):
            run([savepoint.statement(), insert_statement([Event(graceid="G14", **event_fields())]),
                 Statement("UPDATE alerts_no_such_table SET x = %s", [1])])
        if connection.vendor == "postgresql":
            assert len(queries.captured_queries) == 1  # no round trip of its own
        savepoint.rollback()
        Event.objects.create(graceid="G15", **event_fields())  # the transaction works on
    assert sorted(Event.objects.values_list("graceid", flat=True)) == ["G13", "G15"] and kept.pk
