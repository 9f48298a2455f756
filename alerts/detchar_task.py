"""The detector state-vector check of a superevent (labels DQOK / DQV / INJ).

Runs :func:`alerts.science.detchar.check_vectors` for the active detectors
of the preferred event over the superevent's [t_start, t_end], padded per
group or pipeline (``DETCHAR_PAD_S``), on the GWF frames matched by
``DETCHAR_FRAME_GLOB``. Then, on the superevent: the labels the result asks
for, a log message with the table of good / bad / unknown bits, and the file
``data_quality_report.json`` (tag data_quality).

Missing data is "unknown": logged, never a veto. With no frame glob
configured the check is skipped (unknown) and says so; so is a candidate
whose window ends in the future (an early-warning candidate found before
merger), whose data cannot exist yet.

The DQOK / DQV labels say what the *latest* check found: the clean-up pass
re-checks a new preferred event, and a verdict that changed must not be left
behind (an old DQV would still veto, and DQOK and DQV would stand together).
So each check removes the verdict labels it added earlier and no longer
finds (unknown removes both). Only labels this check added (creator
``DETCHAR_CREATOR``) are removed: a DQV a human applied stays a veto. INJ is
never removed: a hardware injection seen in the superevent's window does not
go away, and an injection must never be published.
"""
import json
import logging

from astropy.time import Time

from alerts.config import policy
from alerts.models import Label
from alerts.science.detchar import LABEL_DQOK, LABEL_DQV, DetcharResult, check_vectors
from alerts.steps import record_step
from alerts.store import add_file, add_label, log, remove_label
from alerts import vocabulary as v

logger = logging.getLogger(__name__)

REPORT_FILENAME = "data_quality_report.json"
REPORT_TAGS = (v.DATA_QUALITY_TAG,)
NO_FRAMES_REASON = "no frame files configured (DETCHAR_FRAME_GLOB is empty): data quality unknown, not a veto"
# Creator of the labels this check adds; only those are ever removed by it.
DETCHAR_CREATOR = "detchar"
# The verdict labels, which follow the latest check (INJ only ever accrues).
VERDICT_LABELS = (LABEL_DQOK, LABEL_DQV)


def padding(event):
    """(before, after) seconds checked around the window for this event."""
    pads = policy()["DETCHAR_PAD_S"]
    before, after = pads.get(event.pipeline.lower(), pads[event.group])
    return float(before), float(after)


def now_gps():
    return float(Time.now().gps)


def run_check(superevent, event):
    """The state-vector result for ``event``'s detectors over ``superevent``'s window."""
    before, after = padding(event)
    frame_glob = policy()["DETCHAR_FRAME_GLOB"]
    if not frame_glob:
        return DetcharResult(instruments=tuple(event.instrument_list),
                             window_start=superevent.t_start - before, window_end=superevent.t_end + after,
                             skipped_reason=NO_FRAMES_REASON)
    return check_vectors(event.instrument_list, superevent.t_start, superevent.t_end, frame_glob,
                         pad_before=before, pad_after=after, now_gps=now_gps())


def report(superevent, event, result):
    """The JSON report: the result plus what was checked and how."""
    before, after = padding(event)
    return {
        "superevent_id": superevent.superevent_id,
        "preferred_event": event.graceid,
        "frame_glob": policy()["DETCHAR_FRAME_GLOB"],
        "padding_s": {"before": before, "after": after},
        **result.as_report_dict(),
    }


def check_superevent(superevent, event=None):
    """Check, label, log and file the state vectors; returns the DetcharResult
    (None if the check itself broke: that is logged as unknown quality, since
    only a bad bit may hold an alert back)."""
    event = event or superevent.preferred_event
    try:
        with record_step("detchar", superevent=superevent):
            result = run_check(superevent, event)
            data = json.dumps(report(superevent, event, result), indent=2).encode()
            add_file(superevent, REPORT_FILENAME, data, tags=REPORT_TAGS,
                     message=f"Data quality of {event.graceid}:\n{result.as_text_table()}")
            apply_labels(superevent, result.labels)
    except Exception as error:  # noqa: BLE001  (recorded as a failed step by record_step)
        log(superevent, f"State-vector check of {event.graceid} failed ({type(error).__name__}: {error}): "
                        f"data quality unknown, not a veto", tags=REPORT_TAGS)
        apply_labels(superevent, ())
        return None
    logger.info("%s: %s", superevent.superevent_id, result.summary())
    return result


def apply_labels(superevent, labels):
    """Add ``labels`` and remove the verdict labels this check added before
    that the latest result no longer gives (see the module docstring)."""
    for label in labels:
        add_label(superevent, label, creator=DETCHAR_CREATOR)
    stale = Label.objects.filter(superevent=superevent, creator=DETCHAR_CREATOR,
                                 name__in=[name for name in VERDICT_LABELS if name not in labels])
    for name in stale.values_list("name", flat=True):
        remove_label(superevent, name)
