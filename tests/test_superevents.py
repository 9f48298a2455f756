"""The superevent manager against the database: grouping, IDs, preferred event."""
import pytest

from alerts import superevents, workers
from alerts.models import Event, Superevent
from alerts.store import add_label
from tests.factories import T0, make_event

pytestmark = pytest.mark.django_db(transaction=True)

# GPS of 2019-04-25 23:59:59 UTC and of the next UTC day's first second.
LAST_SECOND_OF_DAY = T0 + (23 * 3600 + 59 * 60 + 59) - (8 * 3600 + 18 * 60 + 5)


def refreshed(event):
    return Event.objects.select_related("superevent").get(pk=event.pk)


def test_events_within_the_window_share_one_superevent_and_it_grows():
    first = make_event(gpstime=T0, snr=9)
    second = make_event(gpstime=T0 + 0.6, snr=12, pipeline="pycbc")
    third = make_event(gpstime=T0 + 1.5, snr=8, pipeline="mbta")
    superevent = refreshed(first).superevent
    assert superevent is not None
    assert {e.superevent_id for e in map(refreshed, (first, second, third))} == {superevent.pk}
    superevent.refresh_from_db()
    assert superevent.superevent_id == "S190425a"
    assert (superevent.t_start, superevent.t_end) == (T0 - 1, T0 + 2.5)
    # Highest SNR wins among equally annotated significant CBC events.
    assert superevent.preferred_event_id == second.pk
    assert superevent.t_0 == second.gpstime
    messages = list(superevent.logs.values_list("message", flat=True))
    assert any("Preferred event changed" in m for m in messages)
    assert any(f"Added event {third.graceid}" in m for m in messages)


def test_separate_events_get_consecutive_ids():
    ids = [refreshed(make_event(gpstime=T0 + 10 * i)).superevent.superevent_id for i in range(3)]
    assert ids == ["S190425a", "S190425b", "S190425c"]


def test_27th_superevent_of_a_day_gets_aa():
    for i in range(27):
        make_event(gpstime=T0 + 10 * i)
    latest = Superevent.objects.order_by("-day_index").first()
    assert latest.superevent_id == "S190425aa"
    assert Superevent.objects.count() == 27


def test_day_boundary_restarts_the_suffix():
    before = refreshed(make_event(gpstime=LAST_SECOND_OF_DAY + 0.5)).superevent
    after = refreshed(make_event(gpstime=LAST_SECOND_OF_DAY + 10)).superevent
    assert before.superevent_id == "S190425a"
    assert after.superevent_id == "S190426a"


def test_mdc_and_production_are_separate_streams():
    production = refreshed(make_event(gpstime=T0)).superevent
    mdc = refreshed(make_event(gpstime=T0, search="MDC")).superevent
    assert production.superevent_id == "S190425a"
    assert mdc.superevent_id == "MS190425a"
    assert mdc.category == "mdc"


def test_event_above_far_threshold_forms_no_superevent_and_says_why():
    event = make_event(far=1e-3)
    assert refreshed(event).superevent is None
    assert Superevent.objects.count() == 0
    assert event.logs.filter(message__contains="above the superevent threshold").exists()


def test_repeated_manager_task_changes_nothing():
    event = make_event()
    superevents.process_event(event.pk)
    superevents.process_event(event.pk)
    assert Superevent.objects.count() == 1
    assert Superevent.objects.get().events.count() == 1


def test_lock_label_freezes_preferred_event():
    first = make_event(snr=9)
    superevent = refreshed(first).superevent
    add_label(superevent, "SIGNIF_LOCKED")
    make_event(gpstime=T0 + 0.2, snr=30)
    superevent.refresh_from_db()
    assert superevent.preferred_event_id == first.pk
    assert superevent.logs.filter(message__contains="superevent is locked").exists()


def test_completed_annotations_make_an_event_preferred():
    loud = make_event(snr=30)
    quiet = make_event(gpstime=T0 + 0.1, snr=8, pipeline="pycbc")
    superevent = refreshed(loud).superevent
    assert superevent.preferred_event_id == loud.pk
    for label in ("SKYMAP_READY", "EMBRIGHT_READY", "PASTRO_READY"):
        add_label(quiet, label)
    superevent.refresh_from_db()
    assert superevent.preferred_event_id == quiet.pk


def test_removing_an_annotation_label_reapplies_the_order():
    from alerts import handlers
    from alerts.store import remove_label

    loud = make_event(snr=30)
    quiet = make_event(gpstime=T0 + 0.1, snr=8, pipeline="pycbc",
                       labels=["SKYMAP_READY", "EMBRIGHT_READY", "PASTRO_READY"])
    superevent = refreshed(loud).superevent
    assert superevent.preferred_event_id == quiet.pk
    assert "alerts.superevents.reconsider_on_label" in handlers.subscribers(handlers.EVENT_LABEL_REMOVED)
    assert remove_label(quiet, "PASTRO_READY")
    assert not remove_label(quiet, "PASTRO_READY")  # gone already: nothing to tell
    superevent.refresh_from_db()
    assert superevent.preferred_event_id == loud.pk
    assert any("Preferred event changed" in m for m in superevent.logs.values_list("message", flat=True))
    assert quiet.logs.filter(message="Label removed: PASTRO_READY").count() == 1


def test_growth_stops_at_a_neighbouring_superevent():
    left = refreshed(make_event(gpstime=T0)).superevent
    right = refreshed(make_event(gpstime=T0 + 2.5)).superevent
    assert left.pk != right.pk
    # Overlaps only the left window; growing would reach into the right one.
    make_event(gpstime=T0 + 0.9, snr=5)
    left.refresh_from_db()
    right.refresh_from_db()
    assert left.t_end <= right.t_start
    assert left.events.count() == 2



def batch_scenario(before_the_others):
    """One event grouped at once, then ``before_the_others(first_event)``, then
    events of every kind of decision; returns the events in creation order."""
    events = [make_event(gpstime=T0, snr=9)]
    before_the_others(events[0])
    specs = [
        dict(gpstime=T0 + 0.3, snr=30),  # joins a locked superevent: preferred event kept
        dict(gpstime=T0 + 100, snr=9),  # a new superevent ...
        dict(gpstime=T0 + 102.5, snr=9, pipeline="pycbc"),  # ... and its neighbour
        dict(gpstime=T0 + 100.9, snr=5, pipeline="mbta"),  # grows the first, clipped at the neighbour
        dict(gpstime=T0 + 200, far=1e-3),  # above the FAR threshold: not grouped
        dict(gpstime=T0 + 100.2, snr=20, pipeline="spiir"),  # louder: becomes preferred
        dict(gpstime=LAST_SECOND_OF_DAY + 10),  # next UTC day: S190426a ...
        dict(gpstime=LAST_SECOND_OF_DAY + 0.5),  # ... and back: S190425d, in creation order
        dict(gpstime=T0 + 300, snr=30),
        # Quieter, but complete annotations (labels given at upload) make it preferred.
        dict(gpstime=T0 + 300.4, snr=8, pipeline="pycbc",
             labels=["SKYMAP_READY", "EMBRIGHT_READY", "PASTRO_READY"]),
    ]
    return events + [make_event(**spec) for spec in specs]


def grouping_summary(events):
    """What the manager decided and logged, with events named by creation order."""
    names = {event.pk: f"e{index}" for index, event in enumerate(events)}
    graceids = sorted(((event.graceid, names[event.pk]) for event in events), key=lambda g: -len(g[0]))

    def renamed(message):
        for graceid, name in graceids:
            message = message.replace(graceid, name)
        return message

    superevents = {
        superevent.superevent_id: dict(
            window=(superevent.t_start, superevent.t_0, superevent.t_end), far=superevent.far,
            preferred=names[superevent.preferred_event_id],
            events=sorted(names[pk] for pk in superevent.events.values_list("pk", flat=True)),
            logs=[renamed(message) for message in superevent.logs.order_by("id").values_list("message", flat=True)],
        )
        for superevent in Superevent.objects.all()
    }
    event_logs = {names[event.pk]: [renamed(m) for m in event.logs.order_by("id").values_list("message", flat=True)]
                  for event in events}
    runs = {names[event.pk]: list(event.step_runs.filter(step="superevent_manager").values_list("status", flat=True))
            for event in events}
    return superevents, event_logs, runs


def test_one_task_groups_a_batch_as_one_task_per_event_would(monkeypatch, settings):
    from alerts import handlers, workers
    from alerts.models import Label, Log, StepRun, SupereventDayCounter

    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "GROUP_AT_UPLOAD": False}  # a backlog for the task

    enqueue, dispatch = workers.enqueue, handlers.dispatch
    state = {"manager runs": True}
    held_back, announced = [], []

    def enqueue_manager_only(path, *args, delay_s=0.0):
        """Only the manager's tasks run, and only while it is not held back."""
        path = workers.task_path(path)
        if path.startswith("alerts.superevents.") and state["manager runs"]:
            enqueue(path, *args, delay_s=delay_s)
        elif path == "alerts.superevents.process_event":
            held_back.append(args[0])

    def recording_dispatch(kind, *args, **options):
        if kind in {handlers.SUPEREVENT_CREATED, handlers.SUPEREVENT_EVENT_ADDED,
                    handlers.SUPEREVENT_PREFERRED_CHANGED}:
            announced.append((kind, args))
        dispatch(kind, *args, **options)

    monkeypatch.setattr(workers, "enqueue", enqueue_manager_only)
    monkeypatch.setattr(handlers, "dispatch", recording_dispatch)

    def lock(event):
        add_label(refreshed(event).superevent, "SIGNIF_LOCKED")

    def hold_back_manager(event):
        lock(event)
        state["manager runs"] = False

    def named_announcements(events):
        names = {event.pk: f"e{index}" for index, event in enumerate(events)}
        ids = dict(Superevent.objects.values_list("pk", "superevent_id"))
        return [(kind, ids[args[0]], *(names[arg] for arg in args[1:])) for kind, args in announced]

    # One task per event, run as each event is made.
    one_by_one_events = batch_scenario(lock)
    one_by_one = grouping_summary(one_by_one_events), named_announcements(one_by_one_events)
    for model in (Log, Label, StepRun, Event, Superevent, SupereventDayCounter):
        model.objects.all().delete()
    announced.clear()

    # The same events while the manager is held back, then one task for all.
    events = batch_scenario(hold_back_manager)
    state["manager runs"] = True
    assert held_back == [event.pk for event in events[1:]]
    assert Event.objects.filter(grouping_done=False).count() == len(events) - 1
    assert not Event.objects.filter(pk__in=held_back, superevent__isnull=False).exists()
    superevents.process_event(held_back[0])
    assert not Event.objects.filter(grouping_done=False).exists()
    assert (grouping_summary(events), named_announcements(events)) == one_by_one
    assert sorted(Superevent.objects.values_list("superevent_id", flat=True)) == [
        "S190425a", "S190425b", "S190425c", "S190425d", "S190425e", "S190426a"]

    # The other events' tasks find them done: nothing more is written.
    counts = [model.objects.count() for model in (Log, StepRun, Superevent)]
    for event_pk in held_back[1:]:
        superevents.process_event(event_pk)
    assert [model.objects.count() for model in (Log, StepRun, Superevent)] == counts
    assert (grouping_summary(events), named_announcements(events)) == one_by_one


@pytest.fixture
def manager_tasks_recorded(monkeypatch):
    """Tasks are not run; returns the event pks of the manager's tasks."""
    from alerts import workers

    held_back = []

    def hold(path, *args, delay_s=0.0):
        if path == "alerts.superevents.process_event":
            held_back.append(args[0])

    monkeypatch.setattr(workers, "enqueue", hold)
    return held_back


@pytest.fixture
def manager_held_back(manager_tasks_recorded, settings):
    """Events are made with no task run and no grouping at upload, so they
    wait for the manager; returns the manager's held-back event pks."""
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "GROUP_AT_UPLOAD": False}
    return manager_tasks_recorded


def test_an_event_the_rules_cannot_handle_fails_alone(manager_held_back):
    from alerts.models import StepRun

    good = make_event(gpstime=T0)
    broken = make_event(gpstime=T0 + 50, group="Burst", pipeline="cwb", extra_attributes={"duration": "long"})
    later = make_event(gpstime=T0 + 100)
    superevents.process_event(good.pk)
    assert refreshed(good).superevent is not None and refreshed(later).superevent is not None
    assert not refreshed(broken).grouping_done
    with pytest.raises(TypeError):
        superevents.process_event(broken.pk)
    run = StepRun.objects.get(event=broken, step="superevent_manager")
    assert run.status == "failed" and "TypeError" in run.error
    superevents.process_event(later.pk)  # already handled
    assert StepRun.objects.filter(event=later, step="superevent_manager").count() == 1


def test_a_failing_batch_falls_back_to_one_event_at_a_time(manager_held_back, monkeypatch):
    events = [make_event(gpstime=T0 + 10 * i) for i in range(3)]
    mark_done = superevents.mark_done

    def fails_for_several(batch):
        if len(batch) > 1:
            raise RuntimeError("trouble with a batch")
        return mark_done(batch)

    monkeypatch.setattr(superevents, "mark_done", fails_for_several)
    for event in reversed(events):
        superevents.process_event(event.pk)
    assert [refreshed(e).superevent.superevent_id for e in events] == ["S190425c", "S190425b", "S190425a"]
    assert all(refreshed(e).grouping_done for e in events)


ANNOTATIONS = ("SKYMAP_READY", "EMBRIGHT_READY", "PASTRO_READY")
# How long the batch waits for the label (on SQLite it never comes: the
# label waits for the batch's write lock instead), and the head start the
# label's handler gets before the batch commits.
LABEL_WAIT_S = 3.0
HANDLER_HEAD_START_S = 0.3


@pytest.fixture
def only_the_manager_held_back(monkeypatch, settings):
    """The manager's tasks are held back (their event pks returned) and
    uploads are not grouped; every other task, such as
    reconsider_on_label, runs inline as usual."""
    from alerts import workers

    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "GROUP_AT_UPLOAD": False}

    enqueue, held_back = workers.enqueue, []

    def hold_the_manager(path, *args, delay_s=0.0):
        if path == "alerts.superevents.process_event":
            held_back.append(args[0])
        else:
            enqueue(path, *args, delay_s=delay_s)

    monkeypatch.setattr(workers, "enqueue", hold_the_manager)
    return held_back


def test_labels_added_before_grouping_count_when_the_event_is_grouped(only_the_manager_held_back):
    loud = make_event(snr=30)
    quiet = make_event(gpstime=T0 + 0.1, snr=8, pipeline="pycbc")
    for label in ANNOTATIONS:
        add_label(quiet, label)  # its handler finds no superevent yet
    superevents.process_event(loud.pk)
    assert refreshed(loud).superevent.preferred_event_id == quiet.pk


def test_a_label_added_while_a_batch_holds_its_event_is_not_missed(only_the_manager_held_back, monkeypatch):
    """The last annotation label commits after the batch that groups its
    event has read the labels and before it commits; the label's handler
    must wait for the batch and then re-apply the order (PostgreSQL: row
    locks; SQLite: the label waits for the batch's write lock)."""
    import threading
    import time

    from django.db import connections

    loud = make_event(snr=30)
    superevents.process_event(loud.pk)
    superevent = refreshed(loud).superevent
    quiet = make_event(gpstime=T0 + 0.1, snr=8, pipeline="pycbc")  # pending
    last = "SKYMAP_READY"  # the others may come inline with the upload
    for label in ANNOTATIONS:
        if label != last:
            add_label(quiet, label)
    assert not quiet.labels.filter(name=last).exists()
    labels_read, label_committed = threading.Event(), threading.Event()
    write, reconsider = superevents._write_superevents, superevents.reconsider_on_label

    def write_after_the_label(*args):
        labels_read.set()
        label_committed.wait(LABEL_WAIT_S)
        time.sleep(HANDLER_HEAD_START_S)
        write(*args)

    def reconsider_once_committed(*args):
        label_committed.set()
        reconsider(*args)

    monkeypatch.setattr(superevents, "_write_superevents", write_after_the_label)
    monkeypatch.setattr(superevents, "reconsider_on_label", reconsider_once_committed)
    errors = []

    def run_batch():
        try:
            superevents.process_event(quiet.pk)
        except Exception as error:  # reported below
            errors.append(error)
        finally:
            connections.close_all()  # this thread's connection

    batch = threading.Thread(target=run_batch)
    batch.start()
    assert labels_read.wait(60), "the batch never reached its write"
    assert add_label(quiet, last)
    batch.join(60)
    assert not batch.is_alive() and not errors, errors
    superevent.refresh_from_db()
    assert refreshed(quiet).superevent_id == superevent.pk
    assert superevent.preferred_event_id == quiet.pk, "the label that completed the event was missed"


# --- grouping inside the upload's transaction (GROUP_AT_UPLOAD) ---------------------

# BEGIN, the event's id, the bucket locks, the superevents with their events,
# their labels, the superevent's UPDATE, the INSERTs of the event, the logs
# and the step run, COMMIT.
UPLOAD_JOINING_QUERIES = 10


def test_an_upload_is_grouped_in_its_own_transaction(manager_tasks_recorded):
    """The superevent is there when create_event returns, committed with the
    event (one COMMIT); the manager's task is not queued, it has nothing left to do.

    The upload's round trips are counted: the event's row goes in once with
    its superevent and done flag (no UPDATE of it, no savepoint), the
    superevent and its events come in one locked read, and the upload's and
    the grouping's logs in one INSERT."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from alerts.models import StepRun

    first = make_event(gpstime=T0)
    with CaptureQueriesContext(connection) as queries:
        second = make_event(gpstime=T0 + 0.5, snr=20, pipeline="pycbc")
    commits = [q["sql"] for q in queries.captured_queries if q["sql"].strip().upper() == "COMMIT"]
    assert len(commits) == 1
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) == UPLOAD_JOINING_QUERIES, "\n".join(sql[:100] for sql in statements)
    assert sum(sql.startswith('INSERT INTO "alerts_event"') for sql in statements) == 1
    assert sum(sql.startswith('INSERT INTO "alerts_log"') for sql in statements) == 1
    assert not any(sql.startswith(('UPDATE "alerts_event"', "SAVEPOINT")) for sql in statements)
    assert refreshed(first).superevent_id == refreshed(second).superevent_id is not None
    superevent = refreshed(second).superevent
    assert superevent.preferred_event_id == second.pk and superevent.t_end == T0 + 1.5
    assert refreshed(second).grouping_done
    assert manager_tasks_recorded == []  # the upload did the manager's work: no task re-reads it
    assert StepRun.objects.filter(step="superevent_manager", event=second, status="succeeded").count() == 1
    superevents.process_event(second.pk)  # a repeated task would find nothing left to do
    assert StepRun.objects.filter(step="superevent_manager", event=second).count() == 1


def test_when_grouping_at_upload_fails_the_upload_commits_and_the_task_groups_it(manager_tasks_recorded,
                                                                                monkeypatch):
    plan = superevents._plan

    def fails_once(*args, **kwargs):
        monkeypatch.setattr(superevents, "_plan", plan)
        raise RuntimeError("trouble in the rules")

    monkeypatch.setattr(superevents, "_plan", fails_once)
    event = make_event(gpstime=T0)
    stored = refreshed(event)
    assert stored.superevent is None and not stored.grouping_done
    assert not Superevent.objects.exists()
    assert stored.logs.filter(message__startswith="Event uploaded").exists()  # the upload is whole
    assert manager_tasks_recorded == [event.pk]
    superevents.process_event(event.pk)
    assert refreshed(event).superevent.superevent_id == "S190425a"


def test_grouping_at_upload_can_be_turned_off(manager_tasks_recorded, settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "GROUP_AT_UPLOAD": False}
    event = make_event(gpstime=T0)
    assert refreshed(event).superevent is None and not refreshed(event).grouping_done
    assert manager_tasks_recorded == [event.pk]
    superevents.process_event(event.pk)
    assert refreshed(event).superevent.superevent_id == "S190425a"


def test_a_database_error_in_grouping_at_upload_fails_the_whole_upload(manager_tasks_recorded, monkeypatch):
    """A statement failing inside the database after the grouping wrote its
    superevent rolls the whole upload back: nothing half written, no task."""
    from django.db import DatabaseError, connection

    from alerts.models import File, Log, StepRun, SupereventDayCounter

    write_superevents, calls = superevents._write_superevents, []

    def write_then_fail(outcome):
        calls.append(outcome)
        write_superevents(outcome)  # the counter and the superevent row are written by now
        with connection.cursor() as cursor:
            cursor.execute("UPDATE alerts_no_such_table SET x = %s", [1])

    monkeypatch.setattr(superevents, "_write_superevents", write_then_fail)
    with pytest.raises(DatabaseError):
        make_event(gpstime=T0)
    assert len(calls) == 1 and calls[0].created
    assert not Event.objects.exists() and not Superevent.objects.exists()
    assert not SupereventDayCounter.objects.exists()
    assert not Log.objects.exists() and not File.objects.exists() and not StepRun.objects.exists()
    assert manager_tasks_recorded == []
