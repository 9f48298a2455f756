"""Pure superevent rules: IDs, windows, thresholds, preferred-event order."""
import datetime
import math

import pytest
from django.conf import settings

from alerts import superevent_rules as rules

DAY = 86400.0


def policy():
    return settings.ORCHESTRATOR


def candidate(**overrides):
    values = dict(group="CBC", pipeline="gstlal", search="AllSky", gpstime=1e9, far=1e-10, snr=10.0,
                  instruments=("H1", "L1"), labels=frozenset())
    values.update(overrides)
    return rules.Candidate(**values)


@pytest.mark.parametrize("index, suffix", [(0, "a"), (1, "b"), (25, "z"), (26, "aa"), (27, "ab"),
                                           (51, "az"), (52, "ba"), (701, "zz"), (702, "aaa")])
def test_day_suffix_counts_a_to_z_then_aa(index, suffix):
    assert rules.day_suffix(index) == suffix


def test_27th_superevent_of_a_day_is_aa():
    assert rules.superevent_id("production", datetime.date(2019, 4, 25), 26) == "S190425aa"


def test_prefix_per_category():
    date = datetime.date(2019, 4, 25)
    assert rules.superevent_id("production", date, 25) == "S190425z"
    assert rules.superevent_id("mdc", date, 0) == "MS190425a"
    assert rules.superevent_id("test", date, 0) == "TS190425a"


def test_utc_date_uses_leap_seconds():
    # GPS 1240215503 is 2019-04-25 08:18:05 UTC (GW190425); 18 leap seconds
    # separate GPS and UTC then, so GPS 1230336017 is 2018-12-31 23:59:59 UTC
    # and one second later the UTC date is 2019-01-01.
    assert rules.gps_to_utc_date(1240215503) == datetime.date(2019, 4, 25)
    assert rules.gps_to_utc_date(1230336017) == datetime.date(2018, 12, 31)
    assert rules.gps_to_utc_date(1230336018) == datetime.date(2019, 1, 1)


def test_cbc_window_is_one_second_either_side():
    assert rules.event_window(candidate(gpstime=100.0), policy()) == (99.0, 101.0)


def test_burst_window_is_its_own_start_and_duration():
    burst = candidate(group="Burst", pipeline="cwb", gpstime=100.0,
                      extra={"start_time": 99.5, "duration": 3.0})
    assert rules.event_window(burst, policy()) == (99.5, 102.5)


def test_superevent_far_threshold_is_one_per_hour():
    assert rules.forms_superevent(candidate(far=1 / 3600.0), policy())
    assert not rules.forms_superevent(candidate(far=1.01 / 3600.0), policy())


def test_significance_uses_trials_factor_per_search():
    month = 30 * DAY
    # CBC AllSky: trials factor 7.
    assert rules.is_significant(candidate(far=0.99 / (7 * month)), policy())
    assert not rules.is_significant(candidate(far=1.01 / (7 * month)), policy())
    # Burst AllSky: one per year, trials factor 3.
    burst = dict(group="Burst", pipeline="cwb")
    assert rules.is_significant(candidate(far=0.99 / (3 * 365 * DAY), **burst), policy())
    assert not rules.is_significant(candidate(far=1.01 / (3 * 365 * DAY), **burst), policy())
    # A search with no threshold of its own and no alias is never significant.
    assert not rules.is_significant(candidate(search="BBH"), policy())


def test_significance_holds_at_exactly_the_threshold():
    """DESIGN.md section 4: trials_factor * FAR <= threshold. A trials factor
    of 4 makes 4 * (threshold / 4) exactly the threshold in floating point."""
    threshold = 1 / (30 * DAY)
    exact = {**policy(), "SIGNIFICANT": {("CBC", "AllSky"): (4, threshold)}}
    at_threshold = candidate(far=threshold / 4)
    assert 4 * at_threshold.far == threshold
    assert rules.is_significant(at_threshold, exact)
    assert not rules.is_significant(candidate(far=math.nextafter(threshold / 4, 1.0)), exact)


def test_mdc_events_are_judged_as_the_search_they_replay():
    """SIGNIFICANT_SEARCH_ALIASES (MDC -> AllSky) holds for the manager as for
    the orchestrator: the same trials factor and threshold as AllSky."""
    month = 30 * DAY
    assert rules.is_significant(candidate(search="MDC", far=0.99 / (7 * month)), policy())
    assert not rules.is_significant(candidate(search="MDC", far=1.01 / (7 * month)), policy())
    no_alias = {**policy(), "SIGNIFICANT_SEARCH_ALIASES": {}}
    assert not rules.is_significant(candidate(search="MDC", far=1e-20), no_alias)


def test_less_significant_threshold_and_disabled_searches():
    assert rules.is_less_significant(candidate(far=2 / DAY), policy())
    assert not rules.is_less_significant(candidate(far=2.01 / DAY), policy())
    assert not rules.is_less_significant(candidate(far=1e-20, search="EarlyWarning"), policy())
    assert not rules.is_less_significant(candidate(far=1e-20, search="SSM"), policy())


def order(*candidates):
    return rules.choose_preferred(list(candidates), policy())


def test_complete_annotations_beat_everything_else():
    complete = candidate(snr=8, far=1e-3, labels=frozenset({"SKYMAP_READY", "EMBRIGHT_READY", "PASTRO_READY"}))
    louder = candidate(snr=30, far=1e-12, instruments=("H1", "L1", "V1"))
    assert order(louder, complete) == 1


def test_significant_beats_less_significant_beats_neither():
    significant = candidate(far=1e-12, snr=8)
    less = candidate(far=1e-6, snr=20)
    neither = candidate(far=1e-3, snr=30)
    assert order(neither, less, significant) == 2
    assert order(neither, less) == 1


def test_cbc_over_burst_then_detectors_then_snr():
    cbc = candidate(far=1e-12, snr=8)
    burst = candidate(group="Burst", pipeline="cwb", far=1e-14, snr=None, instruments=("H1", "L1", "V1"))
    assert order(burst, cbc) == 1
    three = candidate(far=1e-12, snr=8, instruments=("H1", "L1", "V1"))
    assert order(cbc, three) == 1
    loud = candidate(far=1e-12, snr=12)
    assert order(cbc, loud) == 1


def test_burst_prefers_lower_far_and_ties_keep_the_current():
    burst = dict(group="Burst", pipeline="cwb", snr=None)
    assert order(candidate(far=1e-9, **burst), candidate(far=1e-10, **burst)) == 1
    assert order(candidate(), candidate()) == 0


def test_locks_freeze_the_preferred_event():
    significant = candidate(far=1e-12)
    insignificant = candidate(far=1e-5)
    assert not rules.may_replace_preferred({"SIGNIF_LOCKED"}, significant, policy())
    assert rules.may_replace_preferred({"LOW_SIGNIF_LOCKED"}, significant, policy())
    assert not rules.may_replace_preferred({"LOW_SIGNIF_LOCKED"}, insignificant, policy())
    assert rules.may_replace_preferred(set(), insignificant, policy())


def test_a_significant_mdc_event_is_preferred_and_breaks_a_low_significance_lock():
    """Replayed MDC events count as significant (AllSky's threshold) in the
    preferred-event order and against LOW_SIGNIF_LOCKED."""
    mdc = dict(search="MDC")
    significant = candidate(far=1e-12, snr=8, **mdc)
    less = candidate(far=1e-6, snr=20, **mdc)
    assert order(less, significant) == 1
    assert rules.preference_key(significant, policy())[1] is True
    assert rules.may_replace_preferred({"LOW_SIGNIF_LOCKED"}, significant, policy())
    assert not rules.may_replace_preferred({"LOW_SIGNIF_LOCKED"}, less, policy())
