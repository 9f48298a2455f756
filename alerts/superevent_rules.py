"""Pure rules of the superevent manager: IDs, windows, significance, and the
preferred-event order of DESIGN.md section 4.

Nothing here touches the database; the manager in ``alerts.superevents``
applies these rules under a lock.
"""
import datetime
import string
from dataclasses import dataclass

import lal

from alerts import vocabulary

ID_PREFIX = {"production": "S", "mdc": "MS", "test": "TS"}
SUFFIX_ALPHABET = string.ascii_lowercase


def gps_to_utc_date(gpstime):
    """UTC calendar date of a GPS time; lal applies the leap seconds."""
    year, month, day = lal.GPSToUTC(int(gpstime // 1))[:3]
    return datetime.date(year, month, day)


def day_suffix(index):
    """Suffix for the ``index``-th (0-based) superevent of a day.

    Bijective base 26: 0 -> 'a', 25 -> 'z', 26 -> 'aa', 701 -> 'zz',
    702 -> 'aaa', so the suffixes sort by creation within a length.
    """
    if index < 0:
        raise ValueError(f"superevent index must be >= 0, got {index}")
    letters = []
    number = index + 1
    while number:
        number, remainder = divmod(number - 1, len(SUFFIX_ALPHABET))
        letters.append(SUFFIX_ALPHABET[remainder])
    return "".join(reversed(letters))


def superevent_id(category, date, index):
    """``S190425z``: prefix for the category, UTC date YYMMDD, day suffix."""
    return f"{ID_PREFIX[category]}{date:%y%m%d}{day_suffix(index)}"


@dataclass(frozen=True)
class Candidate:
    """What the rules need to know of an event."""

    group: str
    pipeline: str
    search: str
    gpstime: float
    far: float
    snr: float | None
    instruments: tuple
    labels: frozenset = frozenset()
    extra: dict | None = None


def event_window(candidate, policy):
    """Time window [t_start, t_end] that an event claims (seconds, GPS).

    CBC: a fixed half-width per pipeline around the event time. Burst: the
    event's own start time and duration when it has them, padded.
    """
    extra = candidate.extra or {}
    if candidate.group == vocabulary.BURST and extra.get("duration"):
        start = extra.get("start_time", candidate.gpstime - extra["duration"] / 2)
        pad = policy["BURST_WINDOW_PAD_S"]
        return start - pad, start + extra["duration"] + pad
    windows = policy["SUPEREVENT_WINDOW_S"]
    half_width = windows.get(candidate.pipeline.lower(), windows["default"])
    return candidate.gpstime - half_width, candidate.gpstime + half_width


def forms_superevent(candidate, policy):
    """Events above the superevent FAR threshold are kept but not grouped."""
    return candidate.far <= policy["SUPEREVENT_FAR_THRESHOLD"]


def significance_search(candidate, policy):
    """The search whose significant threshold applies to the candidate:
    its own, or the one it replays (``SIGNIFICANT_SEARCH_ALIASES``: MDC
    events are judged as AllSky ones)."""
    return policy.get("SIGNIFICANT_SEARCH_ALIASES", {}).get(candidate.search, candidate.search)


def significance_rule(candidate, policy):
    """(trials factor, FAR threshold in Hz) for the candidate, or None."""
    return policy["SIGNIFICANT"].get((candidate.group, significance_search(candidate, policy)))


def is_significant(candidate, policy):
    """``trials_factor * FAR <= threshold`` (DESIGN.md section 4) for its
    group and search, aliases applied: the one definition of a significant
    candidate, for the preferred-event order, the locks and the orchestrator."""
    rule = significance_rule(candidate, policy)
    if rule is None:
        return False
    trials_factor, threshold = rule
    return trials_factor * candidate.far <= threshold


def is_less_significant(candidate, policy):
    """Passes the looser threshold (disabled for some searches)."""
    threshold = policy["LESS_SIGNIFICANT_FAR"].get((candidate.group, candidate.search))
    return threshold is not None and candidate.far <= threshold


def annotations_complete(candidate, policy):
    needed = policy["COMPLETE_ANNOTATIONS"].get(candidate.group, [])
    return set(needed) <= set(candidate.labels)


def preference_key(candidate, policy):
    """Sort key: the preferred event is the one with the largest key.

    In order: complete annotations, significant (as the orchestrator judges
    it, so a replayed MDC event counts), less-significant, CBC over Burst,
    more detectors, then higher SNR (CBC) or lower FAR (Burst).
    """
    is_cbc = candidate.group == vocabulary.CBC
    if is_cbc:
        strength = candidate.snr or 0.0
    else:
        strength = -candidate.far
    return (
        annotations_complete(candidate, policy),
        is_significant(candidate, policy),
        is_less_significant(candidate, policy),
        is_cbc,
        len(candidate.instruments),
        strength,
    )


def choose_preferred(candidates, policy):
    """Index of the preferred candidate in a non-empty sequence.

    Ties keep the earliest candidate (the current preferred one is passed
    first by the manager), so the choice does not flap.
    """
    best_index = 0
    best_key = preference_key(candidates[0], policy)
    for index, candidate in enumerate(candidates[1:], start=1):
        key = preference_key(candidate, policy)
        if key > best_key:
            best_index, best_key = index, key
    return best_index


def may_replace_preferred(superevent_labels, challenger, policy):
    """Whether a locked superevent may still change its preferred event.

    SIGNIF_LOCKED freezes it; LOW_SIGNIF_LOCKED freezes it except for a
    significant challenger (a significant alert must still be possible;
    significant as ``is_significant`` says, aliases included).
    """
    locks = policy["LOCK_LABELS"]
    if locks["significant"] in superevent_labels:
        return False
    if locks["less_significant"] in superevent_labels:
        return is_significant(challenger, policy)
    return True
