"""JSON shapes of the API, close to GraceDB's so that existing scripts feel at home."""
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from alerts import products
from alerts.models import Event, File, Log, Superevent
from alerts import vocabulary as v
from alerts.config import policy


class SkymapSummarySerializer(serializers.Serializer):
    """Credible areas (deg2) and distance (Mpc) stored when the sky map was accepted."""

    area_50_deg2 = serializers.FloatField(required=False, allow_null=True)
    area_90_deg2 = serializers.FloatField(required=False, allow_null=True)
    distance_mean_mpc = serializers.FloatField(required=False, allow_null=True)
    distance_std_mpc = serializers.FloatField(required=False, allow_null=True)


class SkymapSerializer(SkymapSummarySerializer):
    """A sky map reference; the summary numbers only where stored."""

    filename = serializers.CharField()
    url = serializers.URLField()


NAMES = serializers.ListField(child=serializers.CharField())


def file_url(file):
    owner = "events" if file.event_id else "superevents"
    return f"{policy()['BASE_URL']}/api/{owner}/{file.owner_id_text}/files/{file.filename}"


def skymap_summary(file):
    """A multi-order sky map's stored summary (50%/90% credible areas in
    deg2, distance mean and standard deviation in Mpc), or None."""
    if not file.name.endswith(products.MULTIORDER_SUFFIX):
        return None
    return products.stored_skymap_summary(file)


def owner_skymap(owner):
    """The owner's sky map (the one notices carry) and its summary, or None."""
    file = products.skymap_file(owner)
    if file is None:
        return None
    return {"filename": file.filename, "url": file_url(file), **(skymap_summary(file) or {})}


class FileSerializer(serializers.ModelSerializer):
    filename = serializers.CharField(read_only=True)
    url = serializers.SerializerMethodField()
    skymap_summary = serializers.SerializerMethodField()

    class Meta:
        model = File
        fields = ["filename", "name", "version", "tags", "size", "sha256", "created", "url", "skymap_summary"]

    def get_url(self, obj) -> str:
        return file_url(obj)

    @extend_schema_field(SkymapSummarySerializer(allow_null=True))
    def get_skymap_summary(self, obj):
        return skymap_summary(obj)


class LogSerializer(serializers.ModelSerializer):
    filename = serializers.SerializerMethodField()

    class Meta:
        model = Log
        fields = ["created", "message", "tags", "filename"]

    def get_filename(self, obj) -> str:
        return obj.file.filename if obj.file_id else ""


class EventSerializer(serializers.ModelSerializer):
    labels = serializers.SerializerMethodField()
    instruments = serializers.SerializerMethodField()
    superevent = serializers.SlugRelatedField(slug_field="superevent_id", read_only=True)
    skymap = serializers.SerializerMethodField(help_text="the event's sky map and its summary numbers")

    class Meta:
        model = Event
        fields = ["graceid", "category", "group", "pipeline", "search", "gpstime", "far", "snr",
                  "instruments", "offline", "superevent", "labels", "extra_attributes", "skymap", "created"]

    @extend_schema_field(SkymapSerializer(allow_null=True))
    def get_skymap(self, obj):
        return owner_skymap(obj)

    @extend_schema_field(NAMES)
    def get_labels(self, obj):
        return sorted(label.name for label in obj.labels.all())

    @extend_schema_field(NAMES)
    def get_instruments(self, obj):
        return obj.instrument_list


class SupereventSerializer(serializers.ModelSerializer):
    preferred_event = serializers.SlugRelatedField(slug_field="graceid", read_only=True)
    gw_events = serializers.SerializerMethodField()
    labels = serializers.SerializerMethodField()
    skymap = serializers.SerializerMethodField(help_text="the sky map copied for the alerts, with its summary")

    class Meta:
        model = Superevent
        fields = ["superevent_id", "category", "t_start", "t_0", "t_end", "far", "preferred_event",
                  "gw_events", "labels", "skymap", "created", "updated"]

    @extend_schema_field(SkymapSerializer(allow_null=True))
    def get_skymap(self, obj):
        return owner_skymap(obj)

    @extend_schema_field(NAMES)
    def get_gw_events(self, obj):
        return sorted(event.graceid for event in obj.events.all())

    @extend_schema_field(NAMES)
    def get_labels(self, obj):
        return sorted(label.name for label in obj.labels.all())


class EventUploadSerializer(serializers.Serializer):
    group = serializers.CharField()
    pipeline = serializers.CharField()
    search = serializers.CharField(default=v.ALLSKY)
    offline = serializers.BooleanField(default=False)
    category = serializers.CharField(required=False, allow_blank=True)
    coinc = serializers.FileField(required=False, help_text="coinc.xml (CBC)")
    psd = serializers.FileField(required=False, help_text="psd.xml.gz")
    ranking_data = serializers.FileField(required=False, help_text="ranking_data.xml.gz")
    gpstime = serializers.FloatField(required=False)
    far = serializers.FloatField(required=False)
    snr = serializers.FloatField(required=False)
    instruments = serializers.CharField(required=False, help_text="H1,L1,V1 (events without coinc.xml)")


class FileUploadSerializer(serializers.Serializer):
    file = serializers.FileField()
    filename = serializers.CharField(required=False, help_text="defaults to the uploaded file's name")
    tags = serializers.CharField(required=False, allow_blank=True, help_text="comma-separated")
    comment = serializers.CharField(required=False, allow_blank=True)


class LabelSerializer(serializers.Serializer):
    name = serializers.RegexField(r"^[A-Za-z0-9_]{1,32}\Z")


EVENT_BRIEF_FIELDS = ("graceid", "group", "pipeline", "search", "gpstime", "far", "snr", "instruments")


class EventBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Event
        fields = list(EVENT_BRIEF_FIELDS)


class DeliverySerializer(serializers.Serializer):
    destination = serializers.CharField()
    format = serializers.CharField()
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    sent_at = serializers.DateTimeField(required=False, allow_null=True)


class NoticeStateSerializer(serializers.Serializer):
    """A notice's identity and the state of each of its deliveries."""

    identity = serializers.CharField()
    alert_type = serializers.CharField()
    serial = serializers.IntegerField()
    reason = serializers.CharField()
    role = serializers.CharField()
    created = serializers.DateTimeField(required=False)
    deliveries = DeliverySerializer(many=True)


class FileVersionSerializer(serializers.Serializer):
    filename = serializers.CharField()
    name = serializers.CharField()
    version = serializers.IntegerField()
    tags = serializers.JSONField()
    created = serializers.DateTimeField()
    url = serializers.URLField()


class LogEntrySerializer(serializers.Serializer):
    created = serializers.DateTimeField()
    message = serializers.CharField(allow_blank=True)
    tags = serializers.JSONField()


class StepSerializer(serializers.Serializer):
    step = serializers.CharField()
    status = serializers.CharField()
    duration_s = serializers.FloatField(allow_null=True)


def _event_brief(event):
    if event is None:
        return None
    return {name: getattr(event, name) for name in EVENT_BRIEF_FIELDS}


class SupereventRowSerializer(SupereventSerializer):
    """A row of the superevent list, from the values the list view attached
    to its page (alerts.api.views.decorate_rows; no query per row); the sky
    map without its summary."""

    preferred_event_data = serializers.SerializerMethodField()
    alert_sent = serializers.BooleanField(read_only=True, help_text="a notice was issued")

    class Meta(SupereventSerializer.Meta):
        fields = SupereventSerializer.Meta.fields + ["preferred_event_data", "alert_sent"]

    @extend_schema_field(SkymapSerializer(allow_null=True))
    def get_skymap(self, obj):
        newest = obj.skymap_file
        return {"filename": newest.filename, "url": file_url(newest)} if newest else None

    @extend_schema_field(NAMES)
    def get_gw_events(self, obj):
        return obj.member_graceids

    @extend_schema_field(NAMES)
    def get_labels(self, obj):
        return obj.label_names_sorted

    @extend_schema_field(EventBriefSerializer(allow_null=True))
    def get_preferred_event_data(self, obj):
        return _event_brief(obj.preferred_event)


class SupereventDetailSerializer(SupereventSerializer):
    """One superevent with its preferred event, files with versions, logs,
    notices with delivery state and step runs with durations."""

    preferred_event_data = serializers.SerializerMethodField()
    files = serializers.SerializerMethodField()
    logs = serializers.SerializerMethodField()
    notices = serializers.SerializerMethodField()
    steps = serializers.SerializerMethodField()

    class Meta(SupereventSerializer.Meta):
        fields = SupereventSerializer.Meta.fields + ["preferred_event_data", "files", "logs", "notices", "steps"]

    @extend_schema_field(EventBriefSerializer(allow_null=True))
    def get_preferred_event_data(self, obj):
        return _event_brief(obj.preferred_event)

    @extend_schema_field(FileVersionSerializer(many=True))
    def get_files(self, obj):
        return [{"filename": f.filename, "name": f.name, "version": f.version, "tags": f.tags,
                 "created": f.created, "url": file_url(f)} for f in obj.files.all()]

    @extend_schema_field(LogEntrySerializer(many=True))
    def get_logs(self, obj):
        return [{"created": entry.created, "message": entry.message, "tags": entry.tags}
                for entry in obj.logs.all()]

    @extend_schema_field(NoticeStateSerializer(many=True))
    def get_notices(self, obj):
        return [{"identity": n.identity, "alert_type": n.alert_type, "serial": n.serial, "reason": n.reason,
                 "role": n.role, "created": n.created,
                 "deliveries": [{"destination": d.destination, "format": d.format, "status": d.status,
                                 "attempts": d.attempts, "sent_at": d.sent_at} for d in n.deliveries.all()]}
                for n in obj.notices.all()]

    @extend_schema_field(StepSerializer(many=True))
    def get_steps(self, obj):
        return [{"step": run.step, "status": run.status, "duration_s": run.duration_s}
                for run in obj.step_runs.all()]


# --- the decision endpoints' bodies and answers (alerts.api.decision_views) ---


def names(help_text=""):
    return serializers.ListField(child=serializers.CharField(), help_text=help_text)


class AlertRequestSerializer(serializers.Serializer):
    alert_type = serializers.CharField(help_text="initial, update or retraction (any case)")
    files = serializers.ListField(child=serializers.CharField(), required=False,
                                  help_text="'name,version' of each file the alert carries; default: the "
                                            "latest sky map, source properties and p_astro")
    dry_run = serializers.BooleanField(default=False, help_text="answer the previews; record and send nothing")
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class PreviewSerializer(serializers.Serializer):
    """What a send would produce now, built by the same code."""

    alert_type = serializers.CharField()
    serial = serializers.IntegerField()
    files = names("'name,version' of the files carried")
    notice = serializers.JSONField(help_text="the JSON notice (igwn-gwalert-schema), sky map in base64")
    avro = serializers.CharField(help_text="the Avro notice, base64")
    voevent = serializers.CharField(help_text="the VOEvent XML")
    circular = serializers.CharField(help_text="the circular draft")


class PreferredEventRequestSerializer(serializers.Serializer):
    event = serializers.CharField(help_text="graceid of the new preferred event")
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class PreferredEventSerializer(serializers.Serializer):
    superevent_id = serializers.CharField()
    preferred_event = serializers.CharField()


class LabelAddedSerializer(serializers.Serializer):
    name = serializers.CharField()
    created = serializers.BooleanField(help_text="false when the label was already there")


class CommentRequestSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, help_text="the text to log")
    message = serializers.CharField(required=False, allow_blank=True, help_text="same as comment (GraceDB's name)")


class LocalizeRequestSerializer(serializers.Serializer):
    disabled_detectors = names("detectors left out of the new sky map, e.g. ['V1']")
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class LocalizeSerializer(serializers.Serializer):
    graceid = serializers.CharField()
    disabled_detectors = names()
