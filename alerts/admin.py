"""Django admin for operators and auditors: every model, searchable and filterable."""
from django.contrib import admin
from django.utils.html import format_html_join

from alerts import models

LABEL_BADGES_CSS = "alerts/labels.css"


class LabelBadgesMixin:
    """A ``label_list`` column of coloured badges (static/alerts/labels.css)
    and a filter by label, for the event and superevent lists."""

    class Media:
        css = {"all": [LABEL_BADGES_CSS]}

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("labels")

    @admin.display(description="labels")
    def label_list(self, obj):
        names = sorted(label.name for label in obj.labels.all())
        return format_html_join("", '<span class="gw-label gw-label-{}">{}</span>', ((name, name) for name in names))


class LabelInline(admin.TabularInline):
    model = models.Label
    extra = 0
    fields = ["name", "creator", "created"]
    readonly_fields = ["created"]


class LogInline(admin.TabularInline):
    model = models.Log
    extra = 0
    fields = ["created", "message", "file"]
    readonly_fields = ["created", "message", "file"]
    can_delete = False


class FileInline(admin.TabularInline):
    model = models.File
    extra = 0
    fields = ["name", "version", "tags", "size", "content", "created"]
    readonly_fields = fields
    can_delete = False


@admin.register(models.Event)
class EventAdmin(LabelBadgesMixin, admin.ModelAdmin):
    list_display = ["graceid", "group", "pipeline", "search", "gpstime", "far", "snr", "instruments",
                    "offline", "superevent", "label_list", "created"]
    list_filter = ["category", "group", "pipeline", "search", "offline", "labels__name"]
    search_fields = ["graceid", "superevent__superevent_id", "instruments"]
    raw_id_fields = ["superevent"]
    list_select_related = ["superevent"]
    inlines = [LabelInline, FileInline, LogInline]


@admin.register(models.Superevent)
class SupereventAdmin(LabelBadgesMixin, admin.ModelAdmin):
    list_display = ["superevent_id", "category", "t_0", "t_start", "t_end", "preferred_event", "far", "label_list",
                    "created"]
    list_filter = ["category", "date", "labels__name"]
    search_fields = ["superevent_id", "preferred_event__graceid", "labels__name"]
    raw_id_fields = ["preferred_event"]
    list_select_related = ["preferred_event"]
    inlines = [LabelInline, FileInline, LogInline]


@admin.register(models.SkymapSummary)
class SkymapSummaryAdmin(admin.ModelAdmin):
    list_display = ["file", "area_50_deg2", "area_90_deg2", "distance_mean_mpc", "distance_std_mpc"]
    list_filter = ["file__name", "file__event__group", "file__event__pipeline"]
    search_fields = ["file__event__graceid", "file__superevent__superevent_id"]
    raw_id_fields = ["file"]


@admin.register(models.Label)
class LabelAdmin(admin.ModelAdmin):
    list_display = ["name", "event", "superevent", "creator", "created"]
    list_filter = ["name", "creator"]
    search_fields = ["name", "event__graceid", "superevent__superevent_id"]
    raw_id_fields = ["event", "superevent"]


@admin.register(models.Log)
class LogAdmin(admin.ModelAdmin):
    list_display = ["created", "event", "superevent", "message", "file"]
    search_fields = ["message", "event__graceid", "superevent__superevent_id"]
    list_filter = ["created"]
    raw_id_fields = ["event", "superevent", "file"]


@admin.register(models.File)
class FileAdmin(admin.ModelAdmin):
    list_display = ["__str__", "name", "version", "size", "tags", "created"]
    list_filter = ["name"]
    search_fields = ["name", "sha256", "event__graceid", "superevent__superevent_id"]
    raw_id_fields = ["event", "superevent"]


class NoticePayloadInline(admin.TabularInline):
    model = models.NoticePayload
    extra = 0
    fields = ["format", "sha256"]
    readonly_fields = fields


class NoticeDeliveryInline(admin.TabularInline):
    model = models.NoticeDelivery
    extra = 0
    fields = ["destination", "format", "status", "attempts", "last_error", "claimed_at", "sent_at"]
    readonly_fields = fields


@admin.register(models.Notice)
class NoticeAdmin(admin.ModelAdmin):
    list_display = ["identity", "superevent", "alert_type", "serial", "reason", "role", "significant", "created"]
    list_filter = ["alert_type", "role", "significant"]
    search_fields = ["identity", "superevent__superevent_id"]
    inlines = [NoticePayloadInline, NoticeDeliveryInline]


@admin.register(models.NoticePayload)
class NoticePayloadAdmin(admin.ModelAdmin):
    list_display = ["notice", "format", "sha256"]
    list_filter = ["format"]
    search_fields = ["notice__identity", "sha256"]
    exclude = ["content"]


@admin.register(models.NoticeDelivery)
class NoticeDeliveryAdmin(admin.ModelAdmin):
    list_display = ["notice", "destination", "format", "status", "attempts", "claimed_at", "sent_at"]
    list_filter = ["status", "destination", "format"]
    search_fields = ["notice__identity", "last_error"]


@admin.register(models.StepRun)
class StepRunAdmin(admin.ModelAdmin):
    list_display = ["step", "event", "superevent", "status", "started", "duration_s", "attempt", "worker"]
    list_filter = ["step", "status"]
    search_fields = ["step", "error", "event__graceid", "superevent__superevent_id"]
    raw_id_fields = ["event", "superevent"]


@admin.register(models.DelayedTask)
class DelayedTaskAdmin(admin.ModelAdmin):
    list_display = ["func", "args", "due", "fired", "created"]
    list_filter = ["fired"]
    search_fields = ["func"]


@admin.register(models.Rejection)
class RejectionAdmin(admin.ModelAdmin):
    list_display = ["created", "source", "reason"]
    list_filter = ["source"]
    search_fields = ["reason", "excerpt"]


@admin.register(models.SupereventDayCounter)
class SupereventDayCounterAdmin(admin.ModelAdmin):
    list_display = ["category", "date", "next_index"]
    list_filter = ["category"]
    search_fields = ["date"]


@admin.register(models.AuditRecord)
class AuditRecordAdmin(admin.ModelAdmin):
    """Read-only: the audit trail is written by alerts.decisions only."""

    list_display = ["created", "username", "action", "target", "outcome", "via"]
    list_filter = ["outcome", "via", "action"]
    search_fields = ["username", "target", "detail"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Workflow records kept by the services: shown, never edited here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(models.Vetting)
class VettingAdmin(ReadOnlyAdmin):
    list_display = ["superevent", "state", "attempt", "claimed_at", "finished_at", "outcome"]
    list_filter = ["state"]
    list_select_related = ["superevent"]
    search_fields = ["superevent__superevent_id"]


@admin.register(models.WriteBack)
class WriteBackAdmin(ReadOnlyAdmin):
    list_display = ["key", "target", "state", "attempts", "created", "done_at"]
    list_filter = ["state"]
    search_fields = ["key", "target"]


@admin.register(models.RunningTask)
class RunningTaskAdmin(ReadOnlyAdmin):
    list_display = ["func", "args", "started"]
    list_filter = ["func"]
    search_fields = ["func"]
