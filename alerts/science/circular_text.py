"""Wording of numbers and names in GCN Circulars.

Circulars are read by people: times in UTC, rates as recurrences, areas and
distances rounded to what the measurement supports, probabilities as whole
percentages with the extremes written ">99%" and "<1%", pipelines and
detectors by the names the community uses, and the papers that describe
them. The false alarm rate wording itself is
:func:`alerts.science.notices.far_to_human`.

Pure module: plain values in, text out (used by the ``circular_format``
template filters).
"""
from astropy.time import Time

from alerts.science.notices import far_to_human  # noqa: F401  (re-exported for templates)

UTC_DECIMALS = 3

# Display names of the low-latency pipelines (lower-case keys, as stored).
PIPELINE_TITLES = {
    "gstlal": "GstLAL",
    "pycbc": "PyCBC Live",
    "mbta": "MBTA",
    "spiir": "SPIIR",
    "cwb": "cWB",
    "olib": "oLIB",
    "lib": "LIB",
    "mly": "MLy",
}

# The paper describing each pipeline or method, cited in the circular.
REFERENCES = {
    "gstlal": "Messick et al. PRD 95, 042001 (2017)",
    "pycbc": "Nitz et al. PRD 98, 024050 (2018)",
    "mbta": "Aubin et al. CQG 38, 095004 (2021)",
    "spiir": "Chu et al. PRD 105, 024023 (2022)",
    "cwb": "Klimenko et al. PRD 93, 042004 (2016)",
    "olib": "Lynch et al. PRD 95, 104046 (2017)",
    "mly": "Skliris et al. arXiv:2009.14611",
    "bayestar": "Singer & Price PRD 93, 024013 (2016)",
    "p_astro": "Kapadia et al. CQG 37, 045007 (2020)",
}

DETECTOR_TITLES = {
    "H1": "LIGO Hanford Observatory (H1)",
    "L1": "LIGO Livingston Observatory (L1)",
    "V1": "Virgo Observatory (V1)",
    "K1": "KAGRA Observatory (K1)",
}

# Probabilities are quoted as whole percentages between these bounds.
PERCENT_FLOOR = 1
PERCENT_CEILING = 99


def gps_to_utc_text(gps_seconds):
    """'2019-04-25 08:18:05.000 UTC'; astropy applies the leap seconds."""
    return f"{Time(gps_seconds, format='gps', precision=UTC_DECIMALS).utc.iso} UTC"


def percent_text(probability):
    """A probability in [0, 1] as '37%', with '>99%' and '<1%' at the ends."""
    percent = 100 * float(probability)
    if percent > PERCENT_CEILING:
        return f">{PERCENT_CEILING}%"
    if percent < PERCENT_FLOOR:
        return f"<{PERCENT_FLOOR}%"
    return f"{round(percent):d}%"


def ranked(probabilities):
    """(name, probability) pairs, most probable first (ties by name)."""
    return sorted(probabilities.items(), key=lambda item: (-item[1], item[0]))


def join_words(words, conjunction="and"):
    """'A', 'A and B', 'A, B, and C'."""
    words = [str(word) for word in words]
    if len(words) <= 1:
        return "".join(words)
    if len(words) == 2:
        return f"{words[0]} {conjunction} {words[1]}"
    return f"{', '.join(words[:-1])}, {conjunction} {words[-1]}"


def pipeline_title(pipeline):
    return PIPELINE_TITLES.get(pipeline.lower(), pipeline)


def detector_title(detector):
    return DETECTOR_TITLES.get(detector, detector)


def area_text(area_deg2):
    """A sky area rounded to whole square degrees: '1131 deg2'."""
    return f"{round(float(area_deg2)):d} deg2"


def distance_text(mean_mpc, std_mpc):
    """'155 +/- 45 Mpc' (posterior mean and standard deviation)."""
    return f"{round(float(mean_mpc)):d} +/- {round(float(std_mpc)):d} Mpc"
