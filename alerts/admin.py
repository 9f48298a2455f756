"""Django admin: the audit and manual-override console.

What was sent or logged (notices, payloads, deliveries, logs, step runs,
rejections, audit records) is read-only for everyone, superusers included.
Fields the rules own are read-only in forms; they change only through the
override actions, which call alerts.decisions alone (same rules, roles and
audit as the API). Every admin form change is written as an AuditRecord
(who, when, field: [from, to]) and shown on the object's page.
"""
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from alerts import decisions, models, roles
from alerts.config import policy
from alerts.vocabulary import (ADVNO, ADVOK, INITIAL_ALERT, LABELS, RETRACTION_ALERT, SEARCHES, UPDATE_ALERT)

LABEL_BADGES_CSS = "alerts/labels.css"
VIA = "admin"
DECISION_TEMPLATE = "admin/alerts/decision.html"
# A change list whose date hierarchy spans first to last date (no scan of every row).
SPANNED_CHANGE_LIST = "admin/alerts/spanned_change_list.html"
# Rows per page of the event and superevent lists: rendering the rows is most
# of a list's time (README "Dashboard").
LIST_PER_PAGE = 50


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



class KnownValuesFilter(admin.AllValuesFieldListFilter):
    """A filter whose choices are the values the policy or the vocabulary
    knows (``known``), not the database's distinct values: asking for those
    reads every row of the table (README "Dashboard" has the figures)."""

    known = staticmethod(lambda: ())

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lookup_choices = sorted(set(self.known()))  # the distinct-values query is never run


def known_values(values):
    """A KnownValuesFilter listing ``values()``."""
    return type("KnownValues", (KnownValuesFilter,), {"known": staticmethod(values)})


def known_pipelines():
    return [name for names in policy()["PIPELINES"].values() for name in names]


LABEL_FILTER = ("labels__name", known_values(lambda: LABELS))


class StaffReadsMixin:
    """Any active staff user reads every page (a reader's role); changing
    still needs the model permission, acting needs an advocate."""

    def has_module_permission(self, request):
        return _staff_reader(request.user) or super().has_module_permission(request)

    def has_view_permission(self, request, obj=None):
        return _staff_reader(request.user) or super().has_view_permission(request, obj)


def _staff_reader(user):
    return roles.is_reader(user) and user.is_staff


class AppendOnlyMixin(StaffReadsMixin):
    """View only, for everyone: a POST to add, change or delete, or to the
    list (a bulk action), answers 403."""

    def changelist_view(self, request, extra_context=None):
        if request.method == "POST":
            raise PermissionDenied("these records are append-only: nothing is changed or deleted here")
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class OwnsHistoryMixin:
    """Not deleted through the admin, by anyone: deleting an event, a
    superevent or a file would take its logs, labels, notices or sky-map
    summary with it (prune_history removes old records by the policy)."""

    def has_delete_permission(self, request, obj=None):
        return False


class AuditedAdminMixin(StaffReadsMixin):
    """Every admin form change becomes an AuditRecord (who, when, field: [from, to]),
    listed on the object's page in ``audit_trail``."""

    def save_model(self, request, obj, form, change):
        changes = {}
        if change:
            for name in form.changed_data:
                changes[name] = [_plain(form.initial.get(name)), _plain(form.cleaned_data.get(name))]
        super().save_model(request, obj, form, change)
        _record_admin(request.user, "admin change" if change else "admin add", obj, {"changes": changes})

    def delete_model(self, request, obj):
        target = str(obj)
        super().delete_model(request, obj)
        _record_admin(request.user, "admin delete", target, {})

    @admin.display(description="audit trail (acts and admin changes)")
    def audit_trail(self, obj):
        rows = models.AuditRecord.objects.filter(target=str(obj)).order_by("-created", "-id")[:50]
        return format_html_join(
            "", "<div>{} {} via {}: {} {} {} {}</div>",
            ((r.created.strftime("%Y-%m-%d %H:%M:%S"), r.username or "?", r.via, r.action, r.outcome,
              r.request.get("changes") or r.detail,
              f"(reason: {r.request['reason']})" if r.request.get("reason") else "") for r in rows)) or "nothing yet"


def _plain(value):
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def _record_admin(user, action, target, request):
    models.AuditRecord.objects.create(user=user, username=user.get_username(), action=action, target=str(target),
                                      request=request, outcome=models.AuditRecord.Outcome.DONE, via=VIA)


class OwnedInline(admin.TabularInline):
    """Rows of an event or superevent, their owner (and file) fetched with
    them: the row's text names its owner, one query per row otherwise."""
    related = ["event", "superevent"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related(*self.related)


class LabelInline(OwnedInline):
    """Labels shown, not edited: they change only through the label actions."""
    model = models.Label
    extra = 0
    fields = ["name", "creator", "created"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class LogInline(OwnedInline):
    model = models.Log
    related = ["event", "superevent", "file__event", "file__superevent"]
    extra = 0
    fields = ["created", "message", "file"]
    readonly_fields = ["created", "message", "file"]
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class FileInline(OwnedInline):
    model = models.File
    extra = 0
    fields = ["name", "version", "tags", "size", "content", "created"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


# --- the decision pages: forms, previews and the service call ---------------


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), help_text="why; kept in the audit record")


class UpdateForm(ReasonForm):
    files = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple,
                                      help_text="file versions to announce (none: the latest)")


class PreferredForm(ReasonForm):
    event = forms.ChoiceField(widget=forms.RadioSelect)


class RelocalizeForm(ReasonForm):
    disabled = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple, label="detectors to disable")


class RetryForm(ReasonForm):
    notice = forms.ChoiceField()


class LabelForm(ReasonForm):
    name = forms.ChoiceField(choices=[(name, name) for name in LABELS])
    operation = forms.ChoiceField(choices=[("add", "add"), ("remove", "remove")])


def _require_advocate_page(request, target, what, back):
    """None when the user is an advocate. Else a GET gets a message and a
    redirect, and a POST (a forged one: the page offers no form) a 403,
    recorded as a refused act; nothing is called."""
    if roles.is_advocate(request.user):
        return None
    if request.method == "POST":
        models.AuditRecord.objects.create(
            user=request.user if request.user.is_authenticated else None, username=request.user.get_username(),
            action=f"admin {what}", target=str(target), request={"reason": request.POST.get("reason", "")},
            outcome=models.AuditRecord.Outcome.REFUSED, detail="only advocates may do this", via=VIA)
        raise PermissionDenied("only advocates may do this")
    messages.error(request, "Refused: only advocates may do this.")
    return redirect(back)


def _run(model_admin, request, obj, what, reason, act, back):
    """Call the service; its result or refusal becomes the admin message, and
    a success an entry of the object's admin history (who, what, why)."""
    try:
        result = act()
    except decisions.Refused as refusal:
        messages.error(request, f"Refused: {refusal}")
        if isinstance(refusal, decisions.NotAllowed):
            raise PermissionDenied(str(refusal))
        return redirect(back)
    if isinstance(result, models.Notice):
        done = f"Sent notice {result.identity}."
    else:
        done = f"Done{': ' + str(result) if result else '.'}"
    messages.success(request, done)
    model_admin.log_change(request, obj, f"{what} via the admin: {done} Reason: {reason}")
    return redirect(back)


ALERT_ACTIONS = {"initial": INITIAL_ALERT, "update": UPDATE_ALERT, "retraction": RETRACTION_ALERT}
VERDICT_ACTIONS = {"advok": ADVOK, "advno": ADVNO}


@admin.register(models.Event)
class EventAdmin(OwnsHistoryMixin, AuditedAdminMixin, LabelBadgesMixin, admin.ModelAdmin):
    list_display = ["graceid", "group", "pipeline", "search", "gpstime", "far", "snr", "instruments",
                    "offline", "superevent", "label_list", "created"]
    list_filter = ["category", "group", ("pipeline", known_values(known_pipelines)),
                   ("search", known_values(lambda: SEARCHES)), "offline", LABEL_FILTER]
    search_fields = ["graceid", "superevent__superevent_id"]
    raw_id_fields = ["superevent"]
    list_select_related = ["superevent"]
    show_full_result_count = False
    date_hierarchy = "created"
    change_list_template = SPANNED_CHANGE_LIST
    list_per_page = LIST_PER_PAGE
    readonly_fields = ["graceid", "category", "far", "superevent", "grouping_done", "event_actions", "audit_trail"]
    inlines = [LabelInline, FileInline, LogInline]
    actions = ["labels_action"]

    def get_urls(self):
        return [path("<int:pk>/labels/", self.admin_site.admin_view(self.labels_view),
                     name="alerts_event_labels")] + super().get_urls()

    @admin.display(description="actions")
    def event_actions(self, obj):
        if obj is None or obj.pk is None:
            return ""
        return format_html('<a href="{}">add or remove a label</a>', reverse("admin:alerts_event_labels", args=[obj.pk]))

    @admin.action(description="Add or remove a label (one event)")
    def labels_action(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one event.", messages.ERROR)
            return None
        return redirect("admin:alerts_event_labels", queryset.get().pk)

    def labels_view(self, request, pk):
        event = get_object_or_404(models.Event, pk=pk)
        back = reverse("admin:alerts_event_change", args=[pk])
        refused = _require_advocate_page(request, event, "labels", back)
        if refused:
            return refused
        form = LabelForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            operation, name, reason = (form.cleaned_data[key] for key in ("operation", "name", "reason"))
            call = decisions.add_label if operation == "add" else decisions.remove_label
            return _run(self, request, event, f"{operation} label {name}", reason,
                        lambda: call(event, name, user=request.user, reason=reason, via=VIA), back)
        return TemplateResponse(request, DECISION_TEMPLATE, {
            **self.admin_site.each_context(request), "title": "Add or remove a label", "obj": event,
            "form": form, "submit_label": "Apply"})


@admin.register(models.Superevent)
class SupereventAdmin(OwnsHistoryMixin, AuditedAdminMixin, LabelBadgesMixin, admin.ModelAdmin):
    list_display = ["superevent_id", "category", "t_0", "t_start", "t_end", "preferred_event", "far", "label_list",
                    "created"]
    list_filter = ["category", LABEL_FILTER]
    search_fields = ["superevent_id", "preferred_event__graceid"]
    list_select_related = ["preferred_event"]
    show_full_result_count = False
    # Newest first by creation (the primary key's index); by t_0, which has no
    # index, the first page cost a sort of every superevent joined to its
    # preferred event. Clicking the t_0 column still sorts by it.
    ordering = ["-id"]
    date_hierarchy = "date"  # the UTC day of t_0, the day in the superevent's ID
    change_list_template = SPANNED_CHANGE_LIST
    list_per_page = LIST_PER_PAGE
    readonly_fields = ["superevent_id", "category", "t_start", "t_0", "t_end", "preferred_event", "far", "date",
                       "day_index", "superevent_actions", "audit_trail"]
    inlines = [LabelInline, FileInline, LogInline]
    actions = ["send_initial", "send_update", "send_retraction", "apply_advok", "apply_advno",
               "choose_preferred_event", "relocalize_preferred", "retry_failed_delivery"]

    def get_urls(self):
        view = self.admin_site.admin_view
        return [path("<int:pk>/decide/<str:kind>/", view(self.decision_view), name="alerts_superevent_decide")
                ] + super().get_urls()

    @admin.display(description="actions")
    def superevent_actions(self, obj):
        if obj is None or obj.pk is None:
            return ""
        kinds = list(ALERT_ACTIONS) + list(VERDICT_ACTIONS) + ["preferred", "relocalize", "retry"]
        return format_html_join(" | ", '<a href="{}">{}</a>', (
            (reverse("admin:alerts_superevent_decide", args=[obj.pk, kind]), kind) for kind in kinds))

    def _one(self, request, queryset, kind):
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one superevent.", messages.ERROR)
            return None
        if not roles.is_advocate(request.user):
            self.message_user(request, "Refused: only advocates may do this.", messages.ERROR)
            return None
        return redirect("admin:alerts_superevent_decide", queryset.get().pk, kind)

    @admin.action(description="Send an Initial (preview first)")
    def send_initial(self, request, queryset):
        return self._one(request, queryset, "initial")

    @admin.action(description="Send an Update (choose files, preview first)")
    def send_update(self, request, queryset):
        return self._one(request, queryset, "update")

    @admin.action(description="Send a Retraction (preview first)")
    def send_retraction(self, request, queryset):
        return self._one(request, queryset, "retraction")

    @admin.action(description="Apply ADVOK (sends the Initial)")
    def apply_advok(self, request, queryset):
        return self._one(request, queryset, "advok")

    @admin.action(description="Apply ADVNO (sends the Retraction)")
    def apply_advno(self, request, queryset):
        return self._one(request, queryset, "advno")

    @admin.action(description="Set the preferred event")
    def choose_preferred_event(self, request, queryset):
        return self._one(request, queryset, "preferred")

    @admin.action(description="Re-localize the preferred event with detectors disabled")
    def relocalize_preferred(self, request, queryset):
        return self._one(request, queryset, "relocalize")

    @admin.action(description="Retry a failed notice delivery")
    def retry_failed_delivery(self, request, queryset):
        return self._one(request, queryset, "retry")

    def decision_view(self, request, pk, kind):
        superevent = get_object_or_404(models.Superevent.objects.select_related("preferred_event"), pk=pk)
        back = reverse("admin:alerts_superevent_change", args=[pk])
        refused = _require_advocate_page(request, superevent, kind, back)
        if refused:
            return refused
        data = request.POST or None
        user = request.user
        context = {**self.admin_site.each_context(request), "obj": superevent, "submit_label": "Confirm"}
        if kind in ALERT_ACTIONS or kind in VERDICT_ACTIONS:
            alert_type = ALERT_ACTIONS.get(kind) or decisions.VERDICT_SENDS[VERDICT_ACTIONS[kind]]
            form = UpdateForm(data) if kind == "update" else ReasonForm(data)
            if kind == "update":
                form.fields["files"].choices = [
                    (f"{f.name},{f.version}", f"{f.name},{f.version}")
                    for f in superevent.files.order_by("name", "version")]
            if data is not None and form.is_valid():
                reason = form.cleaned_data["reason"]
                if kind in VERDICT_ACTIONS:
                    return _run(self, request, superevent, kind, reason, lambda: decisions.apply_verdict(
                        superevent, VERDICT_ACTIONS[kind], user=user, reason=reason, via=VIA), back)
                files = form.cleaned_data.get("files") or None
                return _run(self, request, superevent, kind, reason, lambda: decisions.send(
                    superevent, alert_type, files, user=user, reason=reason, via=VIA), back)
            files = (form.data.getlist("files") if data is not None else None) if kind == "update" else None
            try:
                preview = decisions.preview(superevent, alert_type, files or None)
                context.update(preview=preview, notice_fields=sorted(
                    (k, v) for k, v in preview.notice.items() if not isinstance(v, dict)))
            except decisions.Refused as refusal:
                context["refusal"] = str(refusal)
            context.update(title=f"{kind}: {alert_type.title()} for {superevent}", form=form)
            return TemplateResponse(request, DECISION_TEMPLATE, context)
        if kind == "preferred":
            form = PreferredForm(data)
            form.fields["event"].choices = [
                (str(e.pk), f"{e.graceid} {e.pipeline} FAR={e.far:.3g} SNR={e.snr} {e.instruments}")
                for e in superevent.events.order_by("far")]
            if data is not None and form.is_valid():
                event, reason = superevent.events.get(pk=form.cleaned_data["event"]), form.cleaned_data["reason"]
                return _run(self, request, superevent, f"set preferred event {event.graceid}", reason,
                            lambda: decisions.set_preferred_event(superevent, event, user=user, reason=reason,
                                                                  via=VIA), back)
        elif kind == "relocalize":
            form = RelocalizeForm(data)
            event = superevent.preferred_event
            detectors = event.instrument_list if event is not None else []
            form.fields["disabled"].choices = [(d, d) for d in detectors]
            if data is not None and form.is_valid():
                disabled, reason = form.cleaned_data["disabled"], form.cleaned_data["reason"]
                return _run(self, request, superevent, f"re-localize {event} without {', '.join(disabled)}", reason,
                            lambda: decisions.relocalize(event, disabled, user=user, reason=reason, via=VIA), back)
        elif kind == "retry":
            form = RetryForm(data)
            failed = superevent.notices.filter(deliveries__status=models.NoticeDelivery.Status.FAILED).distinct()
            form.fields["notice"].choices = [(str(n.pk), n.identity) for n in failed]
            if data is not None and form.is_valid():
                notice, reason = failed.get(pk=form.cleaned_data["notice"]), form.cleaned_data["reason"]
                return _run(self, request, superevent, f"retry delivery of {notice.identity}", reason,
                            lambda: decisions.retry_delivery(notice, user=user, reason=reason, via=VIA), back)
        else:
            return redirect(back)
        context.update(title=f"{kind}: {superevent}", form=form)
        return TemplateResponse(request, DECISION_TEMPLATE, context)


@admin.register(models.SkymapSummary)
class SkymapSummaryAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["file", "area_50_deg2", "area_90_deg2", "distance_mean_mpc", "distance_std_mpc"]
    list_filter = ["file__name", "file__event__group", "file__event__pipeline"]
    search_fields = ["file__event__graceid", "file__superevent__superevent_id"]
    raw_id_fields = ["file"]
    list_select_related = ["file__event", "file__superevent"]


@admin.register(models.Label)
class LabelAdmin(AppendOnlyMixin, admin.ModelAdmin):
    """Labels change only through the label actions (the service's label path)."""
    list_display = ["name", "event", "superevent", "creator", "created"]
    list_filter = ["name"]
    search_fields = ["name", "event__graceid", "superevent__superevent_id"]
    list_select_related = ["event", "superevent"]
    show_full_result_count = False


@admin.register(models.Log)
class LogAdmin(AppendOnlyMixin, admin.ModelAdmin):
    list_display = ["created", "event", "superevent", "message", "file"]
    search_fields = ["message", "event__graceid", "superevent__superevent_id"]
    list_filter = ["created"]
    date_hierarchy = "created"
    list_select_related = ["event", "superevent", "file"]
    show_full_result_count = False


@admin.register(models.File)
class FileAdmin(OwnsHistoryMixin, AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["__str__", "name", "version", "size", "tags", "created"]
    list_filter = ["name"]
    search_fields = ["name", "sha256", "event__graceid", "superevent__superevent_id"]
    raw_id_fields = ["event", "superevent"]
    list_select_related = ["event", "superevent"]
    show_full_result_count = False


class NoticePayloadInline(admin.TabularInline):
    model = models.NoticePayload
    extra = 0
    fields = ["format", "sha256"]
    readonly_fields = fields
    can_delete = False


class NoticeDeliveryInline(admin.TabularInline):
    model = models.NoticeDelivery
    extra = 0
    fields = ["destination", "format", "status", "attempts", "last_error", "claimed_at", "sent_at"]
    readonly_fields = fields
    can_delete = False


@admin.register(models.Notice)
class NoticeAdmin(AppendOnlyMixin, admin.ModelAdmin):
    list_display = ["identity", "superevent", "alert_type", "serial", "reason", "role", "significant", "created"]
    list_filter = ["alert_type", "role", "significant"]
    search_fields = ["identity", "superevent__superevent_id"]
    list_select_related = ["superevent"]
    show_full_result_count = False
    inlines = [NoticePayloadInline, NoticeDeliveryInline]


@admin.register(models.NoticePayload)
class NoticePayloadAdmin(AppendOnlyMixin, admin.ModelAdmin):
    list_display = ["notice", "format", "sha256"]
    list_filter = ["format"]
    search_fields = ["notice__identity", "sha256"]
    list_select_related = ["notice"]
    exclude = ["content"]


@admin.register(models.NoticeDelivery)
class NoticeDeliveryAdmin(AppendOnlyMixin, admin.ModelAdmin):
    list_display = ["notice", "destination", "format", "status", "attempts", "claimed_at", "sent_at"]
    list_filter = ["status", "destination", "format"]
    search_fields = ["notice__identity", "last_error"]
    list_select_related = ["notice"]


@admin.register(models.StepRun)
class StepRunAdmin(AppendOnlyMixin, admin.ModelAdmin):
    list_display = ["step", "event", "superevent", "status", "started", "duration_s", "attempt", "worker"]
    list_filter = ["step", "status"]
    search_fields = ["step", "error", "event__graceid", "superevent__superevent_id"]
    list_select_related = ["event", "superevent"]
    show_full_result_count = False


@admin.register(models.DelayedTask)
class DelayedTaskAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["func", "args", "due", "fired", "created"]
    list_filter = ["fired"]
    search_fields = ["func"]


@admin.register(models.Rejection)
class RejectionAdmin(AppendOnlyMixin, admin.ModelAdmin):
    list_display = ["created", "source", "reason"]
    list_filter = ["source"]
    search_fields = ["reason", "excerpt"]
    show_full_result_count = False


@admin.register(models.AuditRecord)
class AuditRecordAdmin(AppendOnlyMixin, admin.ModelAdmin):
    list_display = ["created", "username", "action", "target", "outcome", "via", "detail"]
    list_filter = ["outcome", "via"]
    search_fields = ["target", "username", "action"]
    date_hierarchy = "created"
    show_full_result_count = False


@admin.register(models.SupereventDayCounter)
class SupereventDayCounterAdmin(AppendOnlyMixin, admin.ModelAdmin):
    """Counters the superevent manager owns: view only."""
    list_display = ["category", "date", "next_index"]
    list_filter = ["category"]
    search_fields = ["date"]


@admin.register(models.Vetting)
class VettingAdmin(AppendOnlyMixin, admin.ModelAdmin):
    list_display = ["superevent", "state", "attempt", "claimed_at", "finished_at", "outcome"]
    list_filter = ["state"]
    list_select_related = ["superevent"]
    search_fields = ["superevent__superevent_id"]


@admin.register(models.WriteBack)
class WriteBackAdmin(AppendOnlyMixin, admin.ModelAdmin):
    list_display = ["key", "target", "state", "attempts", "created", "done_at"]
    list_filter = ["state"]
    search_fields = ["key", "target"]


@admin.register(models.RunningTask)
class RunningTaskAdmin(AppendOnlyMixin, admin.ModelAdmin):
    list_display = ["func", "args", "started"]
    list_filter = ["func"]
    search_fields = ["func"]
