"""JSON shapes of the API, close to GraceDB's so that existing scripts feel at home."""
from django.conf import settings
from rest_framework import serializers

from alerts import products
from alerts.models import Event, File, Log, Superevent
from alerts import vocabulary as v


def file_url(file):
    owner = "events" if file.event_id else "superevents"
    return f"{settings.ORCHESTRATOR['BASE_URL']}/api/{owner}/{file.owner_id_text}/files/{file.filename}"


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

    def get_url(self, obj):
        return file_url(obj)

    def get_skymap_summary(self, obj):
        return skymap_summary(obj)


class LogSerializer(serializers.ModelSerializer):
    filename = serializers.SerializerMethodField()

    class Meta:
        model = Log
        fields = ["created", "message", "tags", "filename"]

    def get_filename(self, obj):
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

    def get_skymap(self, obj):
        return owner_skymap(obj)

    def get_labels(self, obj):
        return sorted(label.name for label in obj.labels.all())

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

    def get_skymap(self, obj):
        return owner_skymap(obj)

    def get_gw_events(self, obj):
        return sorted(event.graceid for event in obj.events.all())

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


class ErrorSerializer(serializers.Serializer):
    """Every refused or bad request answers this."""

    error = serializers.CharField(help_text="what is wrong, in one line")


EVENT_BRIEF_FIELDS = ("graceid", "group", "pipeline", "search", "gpstime", "far", "snr", "instruments")


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

    def get_skymap(self, obj):
        newest = obj.skymap_file
        return {"filename": newest.filename, "url": file_url(newest)} if newest else None

    def get_gw_events(self, obj):
        return obj.member_graceids

    def get_labels(self, obj):
        return obj.label_names_sorted

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

    def get_preferred_event_data(self, obj):
        return _event_brief(obj.preferred_event)

    def get_files(self, obj):
        return [{"filename": f.filename, "name": f.name, "version": f.version, "tags": f.tags,
                 "created": f.created, "url": file_url(f)} for f in obj.files.all()]

    def get_logs(self, obj):
        return [{"created": entry.created, "message": entry.message, "tags": entry.tags}
                for entry in obj.logs.all()]

    def get_notices(self, obj):
        return [{"identity": n.identity, "alert_type": n.alert_type, "serial": n.serial, "reason": n.reason,
                 "role": n.role, "created": n.created,
                 "deliveries": [{"destination": d.destination, "format": d.format, "status": d.status,
                                 "attempts": d.attempts, "sent_at": d.sent_at} for d in n.deliveries.all()]}
                for n in obj.notices.all()]

    def get_steps(self, obj):
        return [{"step": run.step, "status": run.status, "duration_s": run.duration_s}
                for run in obj.step_runs.all()]
