"""Pure formatting for the dashboard: numbers an advocate reads at a glance."""
import math

SECONDS_PER_YEAR = 365.25 * 86400
# (seconds in the unit, singular, plural), largest first.
UNITS = (
    (SECONDS_PER_YEAR, "year", "years"),
    (86400 * 30.4375, "month", "months"),
    (86400 * 7, "week", "weeks"),
    (86400, "day", "days"),
    (3600, "hour", "hours"),
    (60, "minute", "minutes"),
    (1, "second", "seconds"),
)


def _number(value):
    """Two significant figures, no trailing '.0' and thousands separators."""
    if value >= 100:
        return f"{round(value):,}"
    text = f"{value:.2g}" if value < 10 else f"{value:.0f}"
    if "e" in text:
        text = f"{value:.0f}"
    return text


def far_words(far_hz):
    """A false alarm rate in human words: 1e-8 Hz -> 'about one in 3.2 years'.

    The interval is 1/FAR, said in the largest unit it reaches at least once.
    """
    if far_hz is None or (isinstance(far_hz, float) and math.isnan(far_hz)):
        return "unknown"
    if far_hz <= 0:
        return "never (FAR 0)"
    interval = 1.0 / far_hz
    for seconds, singular, plural in UNITS:
        if interval >= seconds:
            count = interval / seconds
            text = _number(count)
            return f"about one in {text} {singular if text == '1' else plural}"
    return f"about {_number(far_hz)} per second"


def age_words(seconds):
    """How long ago, coarsely: '42 s', '5 min', '3 h', '2 d'."""
    if seconds is None:
        return ""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def duration_words(seconds):
    """A step's duration: '0.42 s', '12.3 s', '2 min 5 s'."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest} s"


def largest_class(probabilities):
    """(name, probability) of the most probable class, or None."""
    if not probabilities:
        return None
    name = max(probabilities, key=probabilities.get)
    return name, probabilities[name]
