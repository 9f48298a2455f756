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
"""
import json
import logging

from astropy.time import Time
from django.conf import settings

from alerts.science.detchar import DetcharResult, check_vectors
from alerts.steps import record_step
from alerts.store import add_file, add_label, log

logger = logging.getLogger(__name__)

REPORT_FILENAME = "data_quality_report.json"
REPORT_TAGS = ("data_quality",)
NO_FRAMES_REASON = "no frame files configured (DETCHAR_FRAME_GLOB is empty): data quality unknown, not a veto"


def policy():
    return settings.ORCHESTRATOR


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
            for label in result.labels:
                add_label(superevent, label)
    except Exception as error:  # noqa: BLE001  (recorded as a failed step by record_step)
        log(superevent, f"State-vector check of {event.graceid} failed ({type(error).__name__}: {error}): "
                        f"data quality unknown, not a veto", tags=REPORT_TAGS)
        return None
    logger.info("%s: %s", superevent.superevent_id, result.summary())
    return result
