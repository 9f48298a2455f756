"""The gates of a preliminary alert: pure functions, no database.

A :class:`Candidate` (the preferred event's facts and the superevent's
labels) goes in; a decision and, when it stops, a one-line reason come out.
The order is the seed's: a human verdict first (a human wins over the
automation), then offline, FAR thresholds, state-vector veto (DQV) and
hardware injection (INJ), which is never published.
"""
from dataclasses import dataclass, replace

from alerts import superevent_rules as rules
from alerts import vocabulary as v

SIGNIFICANT = "preliminary"
EARLY_WARNING = "earlywarning"
LESS_SIGNIFICANT = "less-significant"
ALERT_TYPES = {SIGNIFICANT: v.PRELIMINARY_ALERT, EARLY_WARNING: v.EARLYWARNING_ALERT,
               LESS_SIGNIFICANT: v.PRELIMINARY_ALERT}
# A clean-up never sends a kind ranked below the first alert's kind.
KIND_RANK = {LESS_SIGNIFICANT: 0, EARLY_WARNING: 1, SIGNIFICANT: 2}
KIND_TITLES = {SIGNIFICANT: "Preliminary", EARLY_WARNING: "EarlyWarning",
               LESS_SIGNIFICANT: "Less-significant preliminary"}

INJECTION_REASON = f"hardware injection ({v.INJ}): injections are never published"


@dataclass(frozen=True)
class Candidate:
    """What the gates look at."""

    graceid: str
    offline: bool
    event: rules.Candidate  # the preferred event's facts (FAR, group, search, labels)
    superevent_labels: frozenset = frozenset()
    retracted: bool = False  # a RETRACTION notice was issued


def significance_kind(event, policy):
    """SIGNIFICANT / EARLY_WARNING / LESS_SIGNIFICANT by FAR alone, or None."""
    if rules.is_significant(event, policy):
        return EARLY_WARNING if event.search == v.EARLY_WARNING else SIGNIFICANT
    if rules.is_less_significant(event, policy):
        return LESS_SIGNIFICANT
    return None


def not_significant_reason(candidate, policy):
    event = candidate.event
    where = f"{event.group} {rules.significance_search(event, policy)}"
    rule = rules.significance_rule(event, policy)
    if rule is None:
        significant = f"no significant-alert threshold is set for {where}"
    else:
        trials, threshold = rule
        significant = (f"trials factor {trials} x FAR {event.far:.3g} Hz = {trials * event.far:.3g} Hz "
                       f"is above the significant threshold {threshold:.3g} Hz of {where}")
    looser = policy["LESS_SIGNIFICANT_FAR"].get((event.group, event.search))
    if looser is None:
        less = f"less-significant alerts are disabled for {event.group} {event.search}"
    else:
        less = f"FAR {event.far:.3g} Hz is above the less-significant threshold {looser:.3g} Hz"
    return f"{candidate.graceid} is not significant: {significant}; {less}"


def verdict_stop(candidate, cleanup=False):
    """Why a human verdict stops the automatic preliminary, or None: ADVNO
    or an issued retraction stop every pass; after ADVOK the clean-up pass
    sends no second preliminary (the advocate has taken over)."""
    if v.ADVNO in candidate.superevent_labels:
        return f"an advocate rejected the candidate ({v.ADVNO})"
    if candidate.retracted:
        return "a Retraction notice was issued"
    if cleanup and v.ADVOK in candidate.superevent_labels:
        return f"an advocate confirmed the candidate ({v.ADVOK}); the next alert is theirs"
    return None


def alert_kind(candidate, policy, cleanup=False):
    """(kind, None) if the gates pass, else (None, why), in the seed's order."""
    why = verdict_stop(candidate, cleanup)
    if why:
        return None, why
    if candidate.offline:
        return None, f"{candidate.graceid} is an offline event"
    kind = significance_kind(candidate.event, policy)
    if kind is None:
        return None, not_significant_reason(candidate, policy)
    if v.DQV in candidate.superevent_labels:
        return None, f"vetoed by the detector state vectors ({v.DQV})"
    if v.INJ in candidate.superevent_labels:
        return None, INJECTION_REASON
    return kind, None


def promotion(candidate, policy, issued):
    """The decision taken again after a change, once the first pass is over.

    ``issued`` is the highest kind already sent (or None). Returns (kind,
    None) when the gates pass for a kind ranked above it (the first alert of
    that kind goes out); (None, why) when only a human verdict keeps one
    from going out (the stop is logged); (None, None) when the change alters
    nothing worth a line in the log (below the threshold, or sent already).
    """
    kind, _ = alert_kind(candidate, policy, cleanup=True)
    if kind is not None:
        return (kind, None) if outranks(kind, issued) else (None, None)
    why = verdict_stop(candidate, cleanup=True)
    if why:
        unstopped = replace(candidate, superevent_labels=candidate.superevent_labels - set(v.VERDICT_LABELS),
                            retracted=False)
        if outranks(alert_kind(unstopped, policy)[0], issued):
            return None, why
    return None, None


def outranks(kind, issued):
    """Whether an alert of ``kind`` would be news after ``issued`` (None: nothing sent)."""
    return kind is not None and (issued is None or KIND_RANK[kind] > KIND_RANK[issued])


def worth_waiting(candidate, policy):
    """Whether annotations matter: the gates known without them pass."""
    return not candidate.offline and significance_kind(candidate.event, policy) is not None \
        and not {v.DQV, v.INJ, v.ADVNO} & candidate.superevent_labels and not candidate.retracted


def missing_annotations(event, policy, expected=None):
    """The annotation labels the event's group needs and it lacks; with
    ``expected`` (those there or on their way, ``annotations.expected_annotations``)
    only those: what nothing announced is not waited for."""
    needed = policy["COMPLETE_ANNOTATIONS"].get(event.group, []) if expected is None else expected
    return [name for name in needed if name not in event.labels]


def annotation_labels(policy):
    return {name for names in policy["COMPLETE_ANNOTATIONS"].values() for name in names}


def cleanup_kind_stop(kind, first_kind, graceid):
    """Why the clean-up sends nothing of ``kind`` after ``first_kind``, or None:
    a lower kind never follows a higher one."""
    if first_kind and KIND_RANK[kind] < KIND_RANK[first_kind]:
        return (f"{graceid} only qualifies for a {KIND_TITLES[kind]} alert, after a "
                f"{KIND_TITLES[first_kind]} alert was sent")
    return None


def highest_kind(reasons):
    """The highest kind among notice reasons such as ``preliminary-1``, or None."""
    kinds = {reason.rsplit("-", 1)[0] for reason in reasons}
    return max(kinds & set(KIND_RANK), key=KIND_RANK.get, default=None)
