"""The orchestrator's store: events, superevents, labels, logs, files, notices
and the record of every step run.

Models hold no science: values are computed in ``alerts.science`` and stored
here by the services (``alerts.events``, ``alerts.superevents`` ...).
"""
import hashlib

from django.conf import settings
from django.db import models
from django.db.models import Q

from alerts import vocabulary as v


class Category(models.TextChoices):
    """Which stream a candidate belongs to; superevent IDs differ per stream."""

    PRODUCTION = "production", "Production"
    MDC = "mdc", "Mock data challenge"
    TEST = "test", "Test"


class Group(models.TextChoices):
    CBC = v.CBC, "Compact binary coalescence"
    BURST = v.BURST, "Burst"


class Event(models.Model):
    """One pipeline's candidate (a G-event)."""

    graceid = models.CharField(max_length=32, unique=True, blank=True)
    category = models.CharField(max_length=16, choices=Category.choices, default=Category.PRODUCTION)
    group = models.CharField(max_length=16, choices=Group.choices)
    pipeline = models.CharField(max_length=32)
    search = models.CharField(max_length=32, default=v.ALLSKY)
    gpstime = models.FloatField(help_text="GPS time of the candidate (s)")
    far = models.FloatField(help_text="False alarm rate (Hz)")
    snr = models.FloatField(null=True, blank=True, help_text="Network SNR")
    instruments = models.CharField(max_length=64, help_text="Comma-separated detectors, e.g. H1,L1,V1")
    offline = models.BooleanField(default=False)
    extra_attributes = models.JSONField(default=dict, blank=True)
    superevent = models.ForeignKey(
        "Superevent", null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    # Set once the superevent manager has handled the event: grouped, or
    # left alone because its FAR is above the superevent threshold. The
    # manager drains the events without it in batches (alerts.superevents).
    grouping_done = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["category", "gpstime"]),
            # Only the few events still waiting for the manager.
            models.Index(fields=["category", "id"], condition=Q(grouping_done=False),
                         name="event_grouping_pending"),
            # The admin's date hierarchy reads the first and last upload
            # times of the (filtered) list: a scan of every event without it.
            models.Index(fields=["created"], name="event_created"),
        ]
        ordering = ["-id"]

    def __str__(self):
        return self.graceid or f"event #{self.pk}"

    @property
    def instrument_list(self):
        return [ifo for ifo in self.instruments.split(",") if ifo]

    def label_names(self):
        return {label.name for label in self.labels.all()}


class Superevent(models.Model):
    """A time window grouping the events of one astrophysical candidate."""

    superevent_id = models.CharField(max_length=32, unique=True)
    category = models.CharField(max_length=16, choices=Category.choices, default=Category.PRODUCTION)
    t_start = models.FloatField()
    t_0 = models.FloatField()
    t_end = models.FloatField()
    preferred_event = models.ForeignKey(
        Event, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    far = models.FloatField(null=True, blank=True, help_text="FAR of the preferred event (Hz)")
    # UTC date of t_0 and the creation index that day, behind the suffix.
    date = models.DateField()
    day_index = models.PositiveIntegerField()
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["category", "t_start"]),
            models.Index(fields=["category", "t_end"]),
            # The lists' newest-first order (alerts.listing.NEWEST_FIRST), walked backwards.
            models.Index(fields=["t_0", "id"], name="superevent_t0_id"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["category", "date", "day_index"], name="one_index_per_day"),
        ]
        ordering = ["-t_0"]

    def __str__(self):
        return self.superevent_id

    def label_names(self):
        return {label.name for label in self.labels.all()}


class SupereventDayCounter(models.Model):
    """Next creation index per (category, UTC day), so IDs follow creation order."""

    category = models.CharField(max_length=16, choices=Category.choices)
    date = models.DateField()
    next_index = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["category", "date"], name="one_counter_per_day")]


class OwnedByEventOrSuperevent(models.Model):
    """Base for records attached to exactly one event or one superevent."""

    event = models.ForeignKey(Event, null=True, blank=True, on_delete=models.CASCADE, related_name="%(class)ss")
    superevent = models.ForeignKey(
        Superevent, null=True, blank=True, on_delete=models.CASCADE, related_name="%(class)ss"
    )

    class Meta:
        abstract = True

    @property
    def owner(self):
        return self.event if self.event_id else self.superevent

    @property
    def owner_id_text(self):
        owner = self.owner
        return owner.graceid if isinstance(owner, Event) else owner.superevent_id


def exactly_one_owner(name):
    return models.CheckConstraint(
        condition=(Q(event__isnull=False) & Q(superevent__isnull=True))
        | (Q(event__isnull=True) & Q(superevent__isnull=False)),
        name=name,
    )


class Label(OwnedByEventOrSuperevent):
    """A named flag; labels drive the workflow."""

    name = models.CharField(max_length=32)
    created = models.DateTimeField(auto_now_add=True)
    creator = models.CharField(max_length=64, default="orchestrator")

    class Meta:
        constraints = [
            exactly_one_owner("label_has_one_owner"),
            models.UniqueConstraint(fields=["event", "name"], name="one_label_per_event",
                                    condition=Q(event__isnull=False)),
            models.UniqueConstraint(fields=["superevent", "name"], name="one_label_per_superevent",
                                    condition=Q(superevent__isnull=False)),
        ]
        ordering = ["created"]

    def __str__(self):
        return f"{self.owner_id_text}:{self.name}"


def file_upload_path(instance, filename):
    return f"{instance.owner_id_text}/{instance.name},{instance.version}"


class File(OwnedByEventOrSuperevent):
    """A versioned data product (``name,version``) stored through Django storage."""

    name = models.CharField(max_length=128)
    version = models.PositiveIntegerField()
    content = models.FileField(upload_to=file_upload_path, max_length=255)
    tags = models.JSONField(default=list, blank=True)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            exactly_one_owner("file_has_one_owner"),
            models.UniqueConstraint(fields=["event", "name", "version"], name="one_event_file_version",
                                    condition=Q(event__isnull=False)),
            models.UniqueConstraint(fields=["superevent", "name", "version"],
                                    name="one_superevent_file_version",
                                    condition=Q(superevent__isnull=False)),
        ]
        ordering = ["name", "version"]

    def __str__(self):
        return f"{self.owner_id_text}/{self.filename}"

    @property
    def filename(self):
        return f"{self.name},{self.version}"

    def read(self):
        with self.content.open("rb") as handle:
            return handle.read()

    @staticmethod
    def digest(data):
        return hashlib.sha256(data).hexdigest()


class Log(OwnedByEventOrSuperevent):
    """Append-only message list, optionally pointing at a file version."""

    message = models.TextField()
    file = models.ForeignKey(File, null=True, blank=True, on_delete=models.SET_NULL, related_name="logs")
    tags = models.JSONField(default=list, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    # Identity of an ingested log message, so a repeated message is not
    # logged twice.
    external_key = models.CharField(max_length=128, blank=True, default="")

    class Meta:
        constraints = [exactly_one_owner("log_has_one_owner")]
        ordering = ["created", "id"]

    def __str__(self):
        return f"{self.owner_id_text}: {self.message[:60]}"


class Notice(models.Model):
    """An alert sent (or to be sent) for a superevent.

    Its identity (superevent, type, serial) is recorded before anything is
    sent, so that sending can be made idempotent on it.
    """

    class AlertType(models.TextChoices):
        EARLYWARNING = "EARLYWARNING", "Early warning"
        PRELIMINARY = "PRELIMINARY", "Preliminary"
        INITIAL = "INITIAL", "Initial"
        UPDATE = "UPDATE", "Update"
        RETRACTION = "RETRACTION", "Retraction"

    superevent = models.ForeignKey(Superevent, on_delete=models.CASCADE, related_name="notices")
    # Why the notice exists (e.g. 'preliminary-1', 'initial', 'update-3',
    # 'retraction'): at most one notice per reason and superevent, which is
    # what makes issuing a notice idempotent (alerts.delivery.issue_notice).
    reason = models.CharField(max_length=64)
    alert_type = models.CharField(max_length=16, choices=AlertType.choices)
    serial = models.PositiveIntegerField()
    identity = models.CharField(max_length=128, unique=True)
    role = models.CharField(max_length=16, default="observation")
    significant = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["superevent", "serial"], name="one_notice_per_serial"),
            models.UniqueConstraint(fields=["superevent", "reason"], name="one_notice_per_reason"),
        ]
        ordering = ["superevent", "serial"]

    def __str__(self):
        return self.identity


class NoticePayload(models.Model):
    """One encoding of a notice (JSON, Avro, VOEvent)."""

    notice = models.ForeignKey(Notice, on_delete=models.CASCADE, related_name="payloads")
    format = models.CharField(max_length=16)
    content = models.BinaryField()
    sha256 = models.CharField(max_length=64)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["notice", "format"], name="one_payload_per_format")]


class NoticeDelivery(models.Model):
    """Delivery of one notice payload to one destination, with its attempts.

    A worker claims a delivery (status 'sending', ``claimed_at``,
    ``claim_token``) before sending it, so two workers never send it both; a
    claim older than the claim timeout belongs to a worker that died and may
    be taken over (see alerts.delivery).
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    notice = models.ForeignKey(Notice, on_delete=models.CASCADE, related_name="deliveries")
    destination = models.CharField(max_length=64)
    format = models.CharField(max_length=16)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # Who holds the claim: "host:pid:random", one per deliver() run.
    claim_token = models.CharField(max_length=128, blank=True, default="")
    # Taken before the first send (alerts.transports.send_mark, e.g. a Kafka
    # topic's end offsets): a later attempt looks there for what an earlier
    # one, cut off before it was recorded, may have sent.
    send_mark = models.JSONField(null=True, blank=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["notice", "destination", "format"], name="one_delivery_per_destination"),
        ]


class StepRun(models.Model):
    """What step ran for which event/superevent, when, and how it ended."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    step = models.CharField(max_length=64)
    # What the step works on when its step name does not say it: the file a
    # download fetches (a download is recorded when it is announced, so
    # "running" means queued or running).
    subject = models.CharField(max_length=128, blank=True, default="")
    event = models.ForeignKey(Event, null=True, blank=True, on_delete=models.CASCADE, related_name="step_runs")
    superevent = models.ForeignKey(
        Superevent, null=True, blank=True, on_delete=models.CASCADE, related_name="step_runs"
    )
    started = models.DateTimeField()
    finished = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    error = models.TextField(blank=True, default="")
    attempt = models.PositiveIntegerField(default=1)
    worker = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["step", "status"])]
        ordering = ["-started"]

    def __str__(self):
        return f"{self.step} ({self.status})"

    @property
    def duration_s(self):
        if self.finished is None:
            return None
        return (self.finished - self.started).total_seconds()


class DelayedTask(models.Model):
    """A task due at a precise time, fired by the orchestrator's timer.

    django-q2's scheduler checks its schedules about every half minute, too
    coarse for waits such as ``orchestrator_timeout``; the timer polls this
    table every ``TIMER_POLL_S`` and hands due tasks to django-q2.
    """

    func = models.CharField(max_length=128)
    args = models.JSONField(default=list)
    due = models.DateTimeField(db_index=True)
    fired = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["fired", "due"])]


class RunningTask(models.Model):
    """A task a worker is running now (deleted when it ends). A row left at
    the next start was cut off by a stop, and qcluster runs it again
    (alerts.workers.resume_interrupted)."""

    func = models.CharField(max_length=128)
    args = models.JSONField(default=list)
    started = models.DateTimeField(db_index=True)


class Rejection(models.Model):
    """Input that was refused, with the reason, so nothing is silently lost."""

    source = models.CharField(max_length=32, help_text="api, cli, ingest ...")
    reason = models.TextField()
    excerpt = models.TextField(blank=True, default="", help_text="The start of the rejected input")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return f"{self.source}: {self.reason[:80]}"


class SkymapSummary(models.Model):
    """Numbers of a sky map that the dashboard, circulars and the API quote.

    Computed with ligo.skymap's postprocessing when the sky map is stored.
    """

    file = models.OneToOneField(File, on_delete=models.CASCADE, related_name="skymap_summary")
    area_50_deg2 = models.FloatField()
    area_90_deg2 = models.FloatField()
    distance_mean_mpc = models.FloatField(null=True, blank=True)
    distance_std_mpc = models.FloatField(null=True, blank=True)

    def __str__(self):
        return f"{self.file}: 90% area {self.area_90_deg2:.0f} deg2"


class AuditRecord(models.Model):
    """One human act (who, when, what, the request, the outcome), kept also
    when the act was refused (alerts.decisions writes them)."""

    class Outcome(models.TextChoices):
        DONE = "done", "Done"
        REFUSED = "refused", "Refused"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    username = models.CharField(max_length=150, blank=True, default="")
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=128, blank=True, default="")
    request = models.JSONField(default=dict, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    detail = models.TextField(blank=True, default="")
    via = models.CharField(max_length=32, default="api")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["target", "created"])]

    def __str__(self):
        return f"{self.username or '?'} {self.action} {self.target}: {self.outcome}"


class WriteBack(models.Model):
    """One product, label or log written back to the source GraceDB
    (alerts.gracedb_writeback): claimed before the remote write and marked
    done after it, so a retried task never writes it twice."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    key = models.CharField(max_length=160, unique=True, help_text="what is written, e.g. file:<pk>")
    target = models.CharField(max_length=32, blank=True, default="", help_text="remote graceid or superevent id")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["state", "created"])]

    def __str__(self):
        return f"{self.key} -> {self.target or '?'} ({self.state})"


class Vetting(models.Model):
    """Where a superevent's automatic preliminary flow stands (one row per
    superevent; its logs keep the human-readable history).

    Each stage is claimed once with one conditional UPDATE on this row
    (``filter(pk=..., state__in=...).update(...)``: the row count says who
    won), so two workers never run the same stage.
    """

    class State(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"  # waiting for the preferred event to settle
        WAITING = "waiting", "Waiting for annotations"
        RUNNING = "running", "Running"  # attempt ``attempt`` holds the claim since ``claimed_at``
        FAILED = "failed", "Failed"  # attempt ``attempt`` raised; free for a retry
        DONE = "done", "Done"  # the first pass ended (alert or gate)

    superevent = models.OneToOneField(Superevent, on_delete=models.CASCADE, related_name="vetting")
    state = models.CharField(max_length=16, choices=State.choices, default=State.SCHEDULED)
    attempt = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=200, blank=True, default="")
    reason = models.TextField(blank=True, default="")  # why the latest attempt failed
    scheduled = models.BooleanField(default=False)  # handle_superevent queued the vetting
    cleanup_scheduled = models.BooleanField(default=False)
    cleanup_done = models.BooleanField(default=False)  # the clean-up pass claimed

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(state__in=["scheduled", "waiting", "running", "failed", "done"]), name="vetting_state_valid"),
            models.CheckConstraint(
                condition=~models.Q(state__in=["running", "failed"]) | models.Q(attempt__gte=1, claimed_at__isnull=False),
                name="vetting_attempt_is_claimed"),
            models.CheckConstraint(condition=~models.Q(state="done") | models.Q(finished_at__isnull=False),
                                   name="vetting_done_has_finished_at"),
        ]
        indexes = [models.Index(fields=["state", "claimed_at"], name="vetting_state_claimed")]

    def __str__(self):
        return f"{self.superevent_id}: {self.state} (attempt {self.attempt})"
