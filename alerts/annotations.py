"""CBC annotations: the seed's ``handle_cbc_event``.

Thin tasks that wire the pure science (``alerts.science.localization``,
``em_bright``, ``pastro``, ``plots``) to the store. Each product is a
versioned file with tags, a log entry, a READY label and a step-run record.
The three products are independent tasks, so the source classification and
p_astro never wait for BAYESTAR; plots run after the READY label, off the
alert path.

Triggers:
- sky map: ``psd.xml.gz`` added to a CBC event (or a coinc.xml that already
  carries PSDs); Burst events bring their own ``<pipeline>.multiorder.fits``,
  which is summarised and plotted the same way;
- source classification: the new CBC event (template masses, spins, SNR);
- p_astro: the new CBC event, at once, from what it carries; again (a newer
  version) when ``ranking_data.xml.gz`` is added; a ``<pipeline>.p_astro.json``
  uploaded by the pipeline is validated and used as is.

BAYESTAR runs once per event and input: an automatic trigger whose inputs
(coinc.xml bytes, the participating detectors' spectra compared by value,
low-frequency cutoff, disabled detectors: ``localization.input_fingerprint``)
already gave this event a sky map is skipped, so a psd.xml.gz repeating the
spectra a coinc.xml carried does not redo the map, while one with other
spectra makes a new version. The digest is kept as the ``external_key`` of the
sky map's summary log entry. A re-localization an advocate asks for
(``relocalize``, ``manage.py localize``) always runs.

When the pipeline uploads its own ``<pipeline>.p_astro.json`` it is validated
and used as is: a computed one never replaces it (the computation is skipped
when a valid upload is there, and ``products.p_astro_file`` prefers the
upload, whichever came first); computed files carry the tag ``computed``. An
upload that fails validation fails its step, loses its ``p_astro`` tag and is
never used.

Each product is stored in one transaction (file, summary, flattened map,
label), so a failure leaves no half product and a retry starts at version 1
again; BAYESTAR itself runs outside it. A bad input (PSD, coinc tables,
unusable detector) fails the step with its reason and leaves the event's
other products alone; only transient failures (OSError, MemoryError) are
retried, with a delay, up to ``ANNOTATION_RETRY["max_attempts"]``. Every
failed or skipped step leaves a one-line log entry on the event saying why.
"""
import json
import logging

from django.db import transaction

from alerts import handlers, products, workers
from alerts import vocabulary as v
from alerts.config import policy
from alerts.handlers import handles
from alerts.models import Event, File, Log, SkymapSummary, StepRun
from alerts.science import em_bright, localization, pastro
from alerts.steps import StepSkipped, record_step
from alerts.store import add_file, add_label, latest_file, log

logger = logging.getLogger(__name__)

COINC = v.COINC_FILENAME
PSD = v.PSD_FILENAME
RANKING_DATA = v.RANKING_DATA_FILENAME
EM_BRIGHT = v.EM_BRIGHT_FILENAME
MULTIORDER_SUFFIX = v.MULTIORDER_SUFFIX
SKYMAP_READY, EMBRIGHT_READY, PASTRO_READY = v.READY_LABELS
TRANSIENT_ERRORS = (OSError, MemoryError)
MAX_LOG_REASON_CHARS = 300
# external_key prefix of the log entry that records a BAYESTAR run's inputs.
BAYESTAR_INPUT_KEY = "bayestar-input:"
# BAYESTAR runs as its own task, on the slow queue (settings.SLOW_TASKS);
# uploads queue it "in turn" (preferred events first), advocates directly.
LOCALIZE_TASK = "alerts.annotations.localize_event"
LOCALIZE_IN_TURN_TASK = "alerts.annotations.localize_in_turn"
FLATTEN_TASK = "alerts.annotations.flatten_skymap"


def pastro_filename(pipeline):
    return f"{pipeline}.p_astro.json"


def retry_later(task, args, attempt, error):
    """Re-queue a step (``task``, a function) after a transient failure, up to the configured attempts."""
    retry = policy()["ANNOTATION_RETRY"]
    if attempt >= retry["max_attempts"]:
        return False
    workers.enqueue(task, *args, attempt + 1, delay_s=retry["delay_s"] * attempt)
    logger.warning("%s%s failed (%s); retry %d queued", workers.task_path(task), args, error, attempt + 1)
    return True


def one_line(text):
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_LOG_REASON_CHARS else text[: MAX_LOG_REASON_CHARS - 3] + "..."


def reason_of(error):
    """One line saying why: the science modules' ValueErrors speak for
    themselves, anything else (KeyError: 'mass1') is named."""
    return one_line(error if isinstance(error, ValueError) else f"{type(error).__name__}: {error}")


def run_product_step(step, event, task, args, attempt, body):
    """Run ``body`` as a recorded step; transient errors are retried (``task``
    is called with ``*args, attempt + 1``), the rest fail the step. Every
    failure or skip is logged on the event in one line."""
    with record_step(step, event=event, reraise=False) as run:
        run.attempt = attempt
        run.save(update_fields=["attempt"])
        try:
            body()
        except StepSkipped as skipped:
            log(event, f"{step} skipped: {one_line(skipped)}", tags=["annotation"])
            raise
        except TRANSIENT_ERRORS as error:
            if retry_later(task, args, attempt, error):
                raise StepSkipped(f"transient failure, retrying: {error}") from None
            log(event, f"{step} failed after {attempt} attempts: {reason_of(error)}", tags=["annotation"])
            raise
        except Exception as error:
            log(event, f"{step} failed: {reason_of(error)}", tags=["annotation"])
            raise


# --- sky localization ---------------------------------------------------------

@handles(handlers.EVENT_CREATED)
def localize_if_coinc_has_psd(event_pk):
    """A new CBC event whose coinc.xml carries its PSDs is localized at once.

    This handler is itself a slow-queue task (settings.SLOW_TASKS), so that
    BAYESTAR starts without a hop through the main queue, which is busiest
    with the new superevent's own tasks at that moment."""
    event = Event.objects.get(pk=event_pk)
    if event.group == v.CBC and event.extra_attributes.get("has_psd"):
        localize_in_turn(event_pk)


@handles(handlers.EVENT_FILE_ADDED)
def localize_on_psd(event_pk, file_pk):
    """A CBC event's psd.xml.gz starts its BAYESTAR. A slow-queue task itself,
    as ``localize_if_coinc_has_psd`` is, so that BAYESTAR is queued ahead of
    the plots the event's other annotations queue a moment later."""
    if File.objects.filter(pk=file_pk, name=PSD, event__group=v.CBC).exists():
        localize_in_turn(event_pk)


def alert_may_wait_for(event):
    """Whether an alert may be waiting for this event's sky map: it is the
    preferred event of its superevent, or not grouped yet."""
    if not event.grouping_done:
        return True
    return event.superevent is not None and event.superevent.preferred_event_id == event.pk


def localize_in_turn(event_pk, deferred=False):
    """BAYESTAR, preferred events first.

    BAYESTAR takes tens of seconds on a small machine and the slow queue is
    first in, first out, so during a burst an alert could wait behind the
    sky maps of events no alert uses. An event that no alert waits for goes
    once to the back of the queue; the second time it runs regardless.
    """
    event = Event.objects.select_related("superevent").get(pk=event_pk)
    if not deferred and not alert_may_wait_for(event):
        logger.info("sky map of %s queued behind the preferred events'", event.graceid)
        workers.enqueue(localize_in_turn, event_pk, True)
        return
    localize_event(event_pk)


def localize_event(event_pk, disabled_detectors=(), force=False, attempt=1):
    """BAYESTAR for the event's coinc.xml and PSD; stores the sky maps.

    Skipped when the same inputs already gave this event a sky map, unless
    ``force`` (an explicit re-localization), which always makes a new version.
    """
    event = Event.objects.get(pk=event_pk)
    disabled = tuple(sorted(disabled_detectors))

    def body():
        coinc = latest_file(event, COINC)
        if coinc is None:
            raise localization.LocalizationError("the event has no coinc.xml")
        psd = latest_file(event, PSD)
        coinc_xml, psd_xml = coinc.read(), None if psd is None else psd.read()
        inputs = dict(f_low=event.extra_attributes.get("f_low"), default_f_low=policy()["DEFAULT_F_LOW_HZ"],
                      disabled_detectors=disabled)
        key = BAYESTAR_INPUT_KEY + localization.input_fingerprint(coinc_xml, psd_xml, **inputs)
        if not force:
            skip_if_localized(event, key)
        made = localization.localize(coinc_xml, psd_xml, **inputs, objid=event.graceid, url=event_url(event))
        note = f" without {', '.join(disabled)}" if disabled else ""
        source = coinc.filename + (f" and {psd.filename}" if psd else " (PSDs in the coinc)")
        with transaction.atomic():
            Event.objects.select_for_update().filter(pk=event.pk).exists()
            if not force:
                skip_if_localized(event, key)  # another worker stored it meanwhile
            recorded = Log.objects.filter(event=event, external_key=key).exists()
            stored = store_skymap(event, localization.MULTIORDER_FILENAME, made.multiorder_fits,
                                  made.summary, f"BAYESTAR sky map{note} from {source} "
                                  f"({', '.join(made.instruments)}, f_low {made.f_low:g} Hz, "
                                  f"{made.bayestar_seconds:.1f} s)",
                                  external_key="" if recorded else key)
            # Queued before the label, so that inline the flattened map is
            # there before anything SKYMAP_READY wakes looks for it.
            workers.enqueue(flatten_skymap, event_pk, stored.pk)
            add_label(event, SKYMAP_READY)
            workers.enqueue(plot_skymap, event_pk, stored.pk)

    run_product_step("bayestar", event, localize_event, (event_pk, list(disabled), force), attempt, body)


def skip_if_localized(event, key):
    """End the step as skipped if a sky map of ``event`` came from the inputs ``key``."""
    done = Log.objects.filter(event=event, external_key=key).select_related("file").first()
    if done is not None:
        made = done.file.filename if done.file_id else "a sky map"
        raise StepSkipped(f"{made} was already made from the same coinc, PSDs and settings")


def check_detectors(event, disabled_detectors):
    """ValueError unless every detector to disable took part in the event."""
    unknown = sorted(set(disabled_detectors) - set(event.instrument_list))
    if unknown:
        raise ValueError(f"{event.graceid} has no {', '.join(unknown)} trigger "
                         f"(instruments: {', '.join(event.instrument_list)})")


def relocalize(event, disabled_detectors):
    """A new sky map version with chosen detectors left out (an advocate's call)."""
    if not disabled_detectors:
        raise ValueError("name at least one detector to disable")
    check_detectors(event, disabled_detectors)
    log(event, f"Re-localization requested without {', '.join(disabled_detectors)}", tags=[v.SKY_LOC_TAG])
    workers.enqueue(localize_event, event.pk, sorted(disabled_detectors), True)


def store_skymap(event, name, fits_bytes, summary, message, external_key=""):
    """The sky map file, its summary row and a log line with the numbers
    (call inside a transaction, with the rest of the product)."""
    stored = add_file(event, name, fits_bytes, tags=[v.SKY_LOC_TAG, v.PUBLIC_TAG], message=message, announce=False)
    save_summary(stored, summary)
    log(event, summary_message(stored, summary), file=stored, tags=[v.SKY_LOC_TAG], external_key=external_key)
    return stored


def save_summary(stored, summary):
    SkymapSummary.objects.update_or_create(file=stored, defaults=dict(
        area_50_deg2=summary.area_50_deg2, area_90_deg2=summary.area_90_deg2,
        distance_mean_mpc=summary.distance_mean_mpc, distance_std_mpc=summary.distance_std_mpc))


def summary_message(stored, summary):
    distance = ("" if summary.distance_mean_mpc is None else
                f", distance {summary.distance_mean_mpc:.0f} +/- {summary.distance_std_mpc:.0f} Mpc")
    return (f"{stored.filename}: 50% area {summary.area_50_deg2:.0f} deg2, 90% area "
            f"{summary.area_90_deg2:.0f} deg2{distance}")


def flatten_skymap(event_pk, file_pk, attempt=1):
    """The flattened ``bayestar.fits.gz`` for older consumers, after
    SKYMAP_READY (the seed's flattened map; it takes seconds, the alert
    path needs only the multi-order map)."""
    event = Event.objects.get(pk=event_pk)
    skymap = File.objects.get(pk=file_pk)

    def body():
        add_file(event, localization.FLAT_FILENAME, localization.flatten(skymap.read()), tags=[v.SKY_LOC_TAG],
                 message=f"Flattened {skymap.filename}", announce=False)

    run_product_step("skymap_flatten", event, flatten_skymap, (event_pk, file_pk), attempt, body)


def plot_skymap(event_pk, file_pk, attempt=1):
    """All-sky Mollweide PNG with the 90% contour (after SKYMAP_READY)."""
    event = Event.objects.get(pk=event_pk)
    skymap = File.objects.get(pk=file_pk)

    def body():
        png = products.plot(skymap)
        add_file(event, skymap.name.removesuffix(MULTIORDER_SUFFIX) + ".png", png, tags=[v.SKY_LOC_TAG],
                 message=f"Mollweide projection of {skymap.filename}", announce=False)

    run_product_step("skymap_plot", event, plot_skymap, (event_pk, file_pk), attempt, body)


def accept_pipeline_skymap(event, stored, attempt=1):
    """A Burst pipeline's own multi-order sky map: summarise, plot, SKYMAP_READY."""
    def body():
        summary = localization.summarize_skymap(stored.read())
        with transaction.atomic():
            save_summary(stored, summary)
            log(event, summary_message(stored, summary), file=stored, tags=[v.SKY_LOC_TAG])
            if v.SKY_LOC_TAG not in stored.tags:
                stored.tags = sorted(set(stored.tags) | {v.SKY_LOC_TAG, v.PUBLIC_TAG})
                stored.save(update_fields=["tags"])
            add_label(event, SKYMAP_READY)
            workers.enqueue(plot_skymap, event.pk, stored.pk)

    run_product_step("pipeline_skymap", event, accept_pipeline_skymap_task,
                     (event.pk, stored.pk), attempt, body)


def accept_pipeline_skymap_task(event_pk, file_pk, attempt=1):
    accept_pipeline_skymap(Event.objects.get(pk=event_pk), File.objects.get(pk=file_pk), attempt)


# --- source classification -------------------------------------------------------

@handles(handlers.EVENT_CREATED)
def classify_source(event_pk, attempt=1):
    """HasNS / HasRemnant / HasMassGap from the template (em_bright.json)."""
    event = Event.objects.get(pk=event_pk)
    if event.group != v.CBC:
        return

    def body():
        template = template_of(event)
        data = em_bright.em_bright_json(template["mass1"], template["mass2"], template["spin1z"],
                                        template["spin2z"], event.snr)
        with transaction.atomic():
            stored = add_file(event, EM_BRIGHT, data, tags=[v.EM_BRIGHT_TAG, v.PUBLIC_TAG],
                              message=f"Source properties: {format_probabilities(json.loads(data))}",
                              announce=False)
            add_label(event, EMBRIGHT_READY)
            workers.enqueue(plot_probabilities, event_pk, stored.pk, "Source properties")

    run_product_step("em_bright", event, classify_source, (event_pk,), attempt, body)


def template_of(event):
    extra = event.extra_attributes
    missing = [key for key in ("mass1", "mass2") if extra.get(key) is None]
    if missing or event.snr is None:
        raise ValueError(f"{event.graceid} lacks template {', '.join(missing) or 'SNR'}")
    return {"mass1": extra["mass1"], "mass2": extra["mass2"],
            "spin1z": extra.get("spin1z") or 0.0, "spin2z": extra.get("spin2z") or 0.0}


# --- p_astro -------------------------------------------------------------------------

@handles(handlers.EVENT_CREATED)
def pastro_for_new_event(event_pk):
    """Every CBC event gets a p_astro at once from what it carries (FAR, SNR,
    template), so no alert waits for a ranking_data.xml.gz or a p_astro.json
    that may never come. A later one replaces it: the ranking-data one as a
    newer computed version, the pipeline's own upload by precedence
    (``products.p_astro_file``)."""
    event = Event.objects.get(pk=event_pk)
    if event.group != v.CBC:
        return
    compute_pastro(event_pk)


def expected_annotations(event):
    """READY labels of ``event`` that an alert may wait for: those already
    there, and those whose input is there or on its way. A sky map is on its
    way when the coinc.xml carries PSDs, a psd.xml.gz (or, for Burst, the
    pipeline's sky map) is stored or being downloaded from GraceDB (announced
    by a message: ``alerts.gracedb_source``), or a BAYESTAR step is running;
    p_astro and source classification are computed at once for every CBC
    event. What is neither there nor announced is not waited for."""
    needed = policy()["COMPLETE_ANNOTATIONS"].get(event.group, [])
    labels = event.label_names()
    expected = []
    for name in needed:
        if name in labels or name != SKYMAP_READY or skymap_on_its_way(event):
            expected.append(name)
    return expected


def skymap_on_its_way(event):
    if event.group == v.CBC and event.extra_attributes.get("has_psd"):
        return True
    names = set(event.files.values_list("name", flat=True))
    if skymap_input(names):
        return True
    running = event.step_runs.filter(status=StepRun.Status.RUNNING)
    if running.filter(step="bayestar").exists():
        return True
    return skymap_input(set(running.filter(step=v.DOWNLOAD_STEP).values_list("subject", flat=True)))


def skymap_input(names):
    """Whether files of these names give an event a sky map: a psd.xml.gz
    (its coinc.xml is fetched before it), or a pipeline's multi-order sky map."""
    return PSD in names or any(name.endswith(MULTIORDER_SUFFIX) for name in names)


def compute_pastro(event_pk, attempt=1):
    """p_astro from FAR, SNR and template, unless the pipeline's own is there."""
    event = Event.objects.get(pk=event_pk)

    def body():
        template = template_of(event)
        probabilities = pastro.compute_p_astro(event.far, event.snr, event.pipeline, event.instrument_list,
                                               template["mass1"], template["mass2"])
        name = pastro_filename(event.pipeline)
        with transaction.atomic():
            # Under the event's lock, so that an upload is either seen here
            # or stored after (a newer version): never overridden either way.
            Event.objects.select_for_update().filter(pk=event.pk).exists()
            own = products.uploaded_p_astro_file(event, accepted_only=False)
            if own is not None:
                raise StepSkipped(f"{own.filename} uploaded by {event.pipeline} is used as is")
            stored = add_file(event, name, json.dumps(probabilities, sort_keys=True).encode(),
                              tags=[products.P_ASTRO_TAG, v.PUBLIC_TAG, products.COMPUTED_TAG],
                              message=f"p_astro: {format_probabilities(probabilities)}", announce=False)
            add_label(event, PASTRO_READY)
            workers.enqueue(plot_probabilities, event_pk, stored.pk, "p_astro")

    run_product_step("p_astro", event, compute_pastro, (event_pk,), attempt, body)


def accept_pipeline_pastro(event, stored, attempt=1):
    """A pipeline's own p_astro.json: validated, then used as is; an invalid
    one loses any p_astro tag (so it is never used) and fails the step."""
    def body():
        try:
            probabilities = pastro.validate_p_astro_json(stored.read())
        except pastro.PAstroError:
            if products.P_ASTRO_TAG in stored.tags:
                stored.tags = [tag for tag in stored.tags if tag != products.P_ASTRO_TAG]
                stored.save(update_fields=["tags"])
            raise
        with transaction.atomic():
            stored.tags = sorted(set(stored.tags) | {products.P_ASTRO_TAG, v.PUBLIC_TAG})
            stored.save(update_fields=["tags"])
            log(event, f"{stored.filename} from {event.pipeline} validated, used as is: "
                       f"{format_probabilities(probabilities)}", file=stored, tags=[v.P_ASTRO_TAG])
            add_label(event, PASTRO_READY)
            workers.enqueue(plot_probabilities, event.pk, stored.pk, "p_astro")

    run_product_step("pipeline_p_astro", event, accept_pipeline_pastro_task,
                     (event.pk, stored.pk), attempt, body)


def accept_pipeline_pastro_task(event_pk, file_pk, attempt=1):
    accept_pipeline_pastro(Event.objects.get(pk=event_pk), File.objects.get(pk=file_pk), attempt)


def plot_probabilities(event_pk, file_pk, title, attempt=1):
    """Bar chart PNG of a probabilities JSON file, next to it."""
    event = Event.objects.get(pk=event_pk)
    source = File.objects.get(pk=file_pk)

    def body():
        png = products.plot(source, title)
        if png is None:
            raise StepSkipped(f"{source.filename} holds no known probabilities")
        add_file(event, source.name.removesuffix(".json") + ".png", png, tags=source.tags,
                 message=f"Bar chart of {source.filename}", announce=False)

    run_product_step("probability_plot", event, plot_probabilities,
                     (event_pk, file_pk, title), attempt, body)


def format_probabilities(probabilities):
    return ", ".join(f"{key} {value:.0%}" for key, value in probabilities.items())


# --- uploads ---------------------------------------------------------------------------

@handles(handlers.EVENT_FILE_ADDED)
def on_event_file(event_pk, file_pk):
    """Which annotation a pipeline's upload triggers, by file name."""
    event = Event.objects.get(pk=event_pk)
    stored = File.objects.get(pk=file_pk)
    if event.group == v.CBC and stored.name == RANKING_DATA:
        compute_pastro(event_pk)
    elif stored.name.endswith(".p_astro.json"):
        accept_pipeline_pastro(event, stored)
    elif stored.name.endswith(MULTIORDER_SUFFIX) and event.group == v.BURST:
        accept_pipeline_skymap(event, stored)


def event_url(event):
    return f"{policy()['BASE_URL']}/api/events/{event.graceid}/"
