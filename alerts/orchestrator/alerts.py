"""Building and sending notices: copy the preferred event's products, build
the notice content, issue and deliver it, freeze the preferred event.

Shared by the automatic flow (:mod:`alerts.orchestrator.flow`) and the
advocates' decisions.
"""
import logging

from django.db import transaction
from django.utils import timezone

from alerts import circulars, delivery, handlers, products, workers
from alerts import vocabulary as v
from alerts.config import policy
from alerts.models import Category, Notice, Superevent
from alerts.orchestrator import gates
from alerts.orchestrator.vetting import LOG_TAGS
from alerts.science.notices import NoticeContent, notice_role
from alerts.store import add_file, add_label, latest_file, log
from alerts.superevents import candidate_of, reselect_preferred

logger = logging.getLogger(__name__)

def preliminary_sources(event):
    """The event's files a preliminary alert may copy: the newest version of
    each, except p_astro, where the version notices quote is taken
    (``products.p_astro_file``), so an invalid upload newer than a valid
    p_astro never hides it."""
    sources = [f for f in products.latest_files(event) if not f.name.endswith(products.P_ASTRO_SUFFIX)]
    chosen = products.p_astro_file(event)
    return sources + ([chosen] if chosen is not None else [])


def copy_products(superevent, event):
    """Copy the event's products (tags PRELIMINARY_PRODUCT_TAGS, newest
    versions) to the superevent as new versions with their tags; a file whose
    newest superevent version has the same bytes is skipped. Returns the new
    superevent files."""
    wanted = set(policy()["PRELIMINARY_PRODUCT_TAGS"])
    copied = []
    for source in preliminary_sources(event):
        if not wanted & set(source.tags):
            continue
        current = latest_file(superevent, source.name)
        if current is not None and current.sha256 == source.sha256:
            continue
        copied.append(add_file(superevent, source.name, source.read(), tags=source.tags,
                               message=f"Copied {source.filename} from {event.graceid}"))
    return copied


def make_plots(superevent, copied):
    """Plots for the newly copied products that came without their own."""
    copied_names = {file.name for file in copied}
    made = []
    for file in copied:
        target = products.plot_name(file.name)
        if file.name.endswith(products.PNG_SUFFIX) or file.name.endswith(products.FLAT_SUFFIX) \
                or target is None or target in copied_names:
            continue
        try:
            png = products.plot(file)
        except Exception as error:  # a figure must never hold up an alert
            logger.exception("cannot plot %s", file)
            log(superevent, f"Could not plot {file.filename}: {type(error).__name__}: {error}", tags=LOG_TAGS)
            continue
        if png:
            made.append(add_file(superevent, target, png, tags=file.tags, message=f"Plot of {file.filename}"))
    return made


def _copy_on_superevent(superevent, source):
    """The superevent's version of an event file (same name and bytes)."""
    if source is None:
        return None
    current = latest_file(superevent, source.name)
    return current if current is not None and current.sha256 == source.sha256 else None


def notice_content(superevent, event, alert_type, serial, significant=True, skymap_file=None):
    """The NoticeContent of an alert of ``alert_type`` (a vocabulary alert
    type) about ``event``: its facts and the sky map ``skymap_file`` (by
    default the superevent's copy of the event's sky map)."""
    skymap = skymap_file if skymap_file is not None else \
        _copy_on_superevent(superevent, products.skymap_file(event))
    injection = v.INJ in superevent.label_names()
    role = notice_role(superevent.superevent_id, injection)
    if superevent.category != Category.PRODUCTION:
        role = v.ROLE_TEST
    extra = event.extra_attributes or {}
    is_burst = event.group == v.BURST
    return NoticeContent(
        alert_type=alert_type,
        superevent_id=superevent.superevent_id,
        serial=serial,
        time_created=timezone.now(),
        event_time_gps=event.gpstime,
        far=event.far,
        significant=significant,
        instruments=tuple(event.instrument_list),
        group=event.group,
        pipeline=event.pipeline,
        search=event.search,
        properties=products.properties(event),
        classification=products.classification(event) if event.group == v.CBC else None,
        skymap=skymap.read() if skymap else None,
        skymap_filename=skymap.filename if skymap else None,
        skymap_url=products.file_url(skymap) if skymap else None,
        duration=extra.get("duration") if is_burst else None,
        central_frequency=extra.get("central_frequency", extra.get("central_freq")) if is_burst else None,
        urls={"gracedb": products.superevent_url(superevent)},
        role=role,
        hardware_injection=injection,
    )


def send_preliminary(superevent, event, kind, number, copied=None, lock=False):
    """Copy products, issue and deliver the notice, then make plots, write the
    circular and label; with ``lock``, freeze the preferred event as soon as
    the notice is issued.

    The notice needs only the copied products (the sky map it carries), so it
    goes out before the plots and the circular, which take longer. This task
    writes it to the local destinations at once (the outbox: a disk write);
    the deliver task that ``issue_notice`` queues sends it over the network
    (Kafka, which may wait seconds for a broker) and picks up whatever this
    run could not write, as claims keep each delivery to one sender. So the
    circular draft and the labels never wait for a slow broker.
    """
    if copied is None:
        copied = copy_products(superevent, event)
    reason = f"{kind}-{number}"
    significant = kind != gates.LESS_SIGNIFICANT
    alert_type = gates.ALERT_TYPES[kind]
    notice = delivery.issue_notice(
        superevent, reason,
        lambda serial: notice_content(superevent, event, alert_type, serial, significant=significant))
    if not workers.run_inline():  # inline, issue_notice delivered it already
        try:
            delivery.deliver(notice.pk, local_only=True)
        except Exception:  # the queued deliver task will send it
            logger.exception("could not deliver %s from the vetting task", notice.identity)
    if lock:
        freeze_now(superevent.pk, event)
    make_plots(superevent, copied)
    if significant:
        circulars.write_circular(superevent, alert_type, event=event)
    add_label(superevent, v.GCN_PRELIM_SENT)
    if significant:
        add_label(superevent, v.ADVREQ)
    log(superevent, f"{gates.KIND_TITLES[kind]} alert {notice.identity} ({reason}) for preferred event "
                    f"{event.graceid} (role {notice.role})", tags=LOG_TAGS)
    return notice


def issued_kind(superevent):
    """The highest kind of preliminary alert issued so far, or None."""
    return gates.highest_kind(Notice.objects.filter(superevent=superevent).values_list("reason", flat=True))


def freeze_now(superevent_pk, event):
    """Freeze the preferred event under the superevent lock (the first
    alert, when no clean-up pass will follow to do it)."""
    with transaction.atomic():
        freeze(Superevent.objects.select_for_update().get(pk=superevent_pk), event)


def freeze(superevent, event):
    """Lock the preferred event: SIGNIF_LOCKED for a significant candidate,
    LOW_SIGNIF_LOCKED for a less-significant one (idempotent)."""
    kind = gates.significance_kind(candidate_of(event), policy())
    locks = policy()["LOCK_LABELS"]
    if kind in (gates.SIGNIFICANT, gates.EARLY_WARNING):
        add_label(superevent, locks["significant"])
    elif kind == gates.LESS_SIGNIFICANT:
        add_label(superevent, locks["less_significant"])


def reselect_and_lock(superevent_pk, lock=True):
    """Apply the preferred-event order under the superevent lock and, with
    ``lock``, freeze the result in the same transaction."""
    with transaction.atomic():
        superevent = Superevent.objects.select_for_update().get(pk=superevent_pk)
        previous = superevent.preferred_event
        changed = reselect_preferred(superevent)
        if changed:
            superevent.save()
        event = superevent.preferred_event
        if event is not None:
            if lock:
                freeze(superevent, event)
            log(superevent, "Superevent cleaned up: preferred event "
                            + (f"changed from {previous.graceid if previous else 'none'} to {event.graceid}"
                               if changed else f"is still {event.graceid}"), tags=LOG_TAGS)
    if changed:
        handlers.dispatch(handlers.SUPEREVENT_PREFERRED_CHANGED, superevent.pk, superevent.preferred_event_id)
    return superevent, event, changed
