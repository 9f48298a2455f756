"""Statements compiled once (alerts/prepared.py) write and read what the ORM would."""
import pytest
from django.db import connection, transaction
from django.db.models import FloatField
from django.test.utils import CaptureQueriesContext

from alerts import prepared
from alerts.models import Event, File, Log, Superevent
from alerts.prepared import Param, PreparedSelect, PreparedUpdate, insert
from alerts.store import pending_log
from tests.factories import T0, make_event

pytestmark = pytest.mark.django_db(transaction=True)

COMPARED = ("event_id", "superevent_id", "message", "file_id", "tags", "external_key")


def stored(logs):
    return [tuple(getattr(log, name) for name in COMPARED)
            for log in Log.objects.filter(pk__in=[log.pk for log in logs]).order_by("pk")]


def test_insert_stores_the_rows_bulk_create_stores():
    event = make_event()
    superevent = event.superevent
    attachment = File(name="x.txt", version=1, size=1, sha256="0" * 64, event=event, content="x")
    insert([attachment])  # pk drawn by the INSERT, as bulk_create does
    assert attachment.pk is not None and not attachment._state.adding

    def entries():
        # The file's pk is read at the INSERT, as bulk_create reads it.
        return [pending_log(event, "one"), pending_log(superevent, "two", tags=["a", "b"]),
                pending_log(event, "three", file=attachment)]

    by_bulk = Log.objects.bulk_create(entries())
    with CaptureQueriesContext(connection) as queries:
        by_insert = insert(entries())
    assert [len(queries)] == [1] and "UNNEST" not in queries[0]["sql"]  # VALUES rows
    assert all(log.pk is not None and not log._state.adding for log in by_insert)
    assert stored(by_insert) == stored(by_bulk)
    assert stored(by_insert)[2][3] == attachment.pk
    assert all(log.created is not None for log in Log.objects.filter(pk__in=[log.pk for log in by_insert]))


def test_insert_keeps_given_pks_and_large_batches_go_through_bulk_create():
    event = make_event()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT nextval(pg_get_serial_sequence('alerts_event', 'id'))")
            pk = cursor.fetchone()[0]
        twin = Event(pk=pk, graceid="G9", category=event.category, group="CBC", pipeline="gstlal",
                     search="AllSky", gpstime=T0 + 100, far=1e-9, snr=9.0, instruments="H1,L1",
                     extra_attributes={"x": [1, 2]})
        insert([twin])
    assert Event.objects.get(pk=pk).extra_attributes == {"x": [1, 2]}
    many = insert([pending_log(event, f"m{i}") for i in range(prepared.MAX_PREPARED_ROWS + 1)])
    assert Log.objects.filter(pk__in=[log.pk for log in many]).count() == prepared.MAX_PREPARED_ROWS + 1


def test_a_prepared_select_compiles_once_and_builds_instances_as_a_queryset_does():
    first = make_event(gpstime=T0)
    make_event(gpstime=T0 + 0.5, pipeline="pycbc")
    far_away = make_event(gpstime=T0 + 100)
    builds = []

    def build(key):
        builds.append(key)
        return Event.objects.select_related("superevent").filter(
            superevent__t_start__lte=Param("end", FloatField()),
            superevent__t_end__gte=Param("start", FloatField())).order_by("pk")

    select = PreparedSelect(build)
    near = select("one", start=T0, end=T0 + 1)
    later = select("one", start=T0 + 100, end=T0 + 100)
    assert builds == ["one"]
    expected = list(Event.objects.select_related("superevent").filter(
        superevent__t_start__lte=T0 + 1, superevent__t_end__gte=T0).order_by("pk"))
    assert [e.pk for e in near] == [e.pk for e in expected] and len(near) == 2
    assert near[0].extra_attributes == expected[0].extra_attributes  # JSON converted
    assert near[0].superevent.superevent_id == expected[0].superevent.superevent_id  # select_related
    assert [e.pk for e in later] == [far_away.pk]
    assert first.pk in [e.pk for e in near]


def test_a_prepared_update_changes_the_row_and_counts_it():
    superevent = make_event().superevent
    builds = []

    def build(key):
        builds.append(key)
        return (Superevent.objects.filter(pk=Param("pk", Superevent._meta.pk)),
                {"far": Param("far", Superevent._meta.get_field("far"))})

    update = PreparedUpdate(build)
    assert update(None, pk=superevent.pk, far=1e-20) == 1
    assert update(None, pk=superevent.pk + 1000, far=1e-21) == 0
    assert builds == [None]
    superevent.refresh_from_db()
    assert superevent.far == 1e-20


def test_a_server_prepared_select_reads_what_the_orm_reads_from_a_statement_prepared_once():
    """PreparedSelect(server_prepared=True): the same rows as the ORM, from
    a statement PostgreSQL prepared once for this connection and reuses."""
    events = [make_event(), make_event(gpstime=T0 + 1000.0)]
    select = PreparedSelect(lambda _: Event.objects.filter(graceid=Param("graceid", Event._meta.get_field("graceid")))[:1],
                            server_prepared=True)

    def prepared_count():
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_prepared_statements")
            return cursor.fetchone()[0]

    before = prepared_count()
    for event in events:
        found = select(None, graceid=event.graceid)
        assert [(row.pk, row.graceid, row.gpstime, row.far) for row in found] == [
            (event.pk, event.graceid, event.gpstime, event.far)]
        assert found[0].superevent_id == Event.objects.get(pk=event.pk).superevent_id
    assert select(None, graceid="G0NONE") == []
    assert prepared_count() == before + 1  # three runs, one statement prepared


def test_execute_prepared_counts_the_rows_it_writes():
    event = make_event()
    sql = f'UPDATE "{Event._meta.db_table}" SET "far" = %s WHERE "id" = %s'
    assert prepared.execute_prepared("default", sql, [1e-9, event.pk]) == 1
    assert prepared.execute_prepared("default", sql, [1e-9, -1]) == 0
    event.refresh_from_db()
    assert event.far == 1e-9
