"""Probability of astrophysical origin by source class (p_astro).

The numbers come from the ``p_astro`` package (import name ``ligo.p_astro``),
which implements Kapadia et al. 2020, CQG 37, 045007 (arXiv:1903.06881):
with Poisson mean counts Lambda_a of each astrophysical class (BNS, NSBH,
BBH) and Lambda_0 of terrestrial triggers above threshold, and the
candidate's Bayes factors K_a = (f_a / b), the probability of class a is

    p_a = Lambda_a K_a / (Lambda_0 + sum_b Lambda_b K_b),
    p_terr = Lambda_0 / (Lambda_0 + sum_b Lambda_b K_b).

For a pipeline that ships no ranking-statistic densities, the package's
"toy" model estimates the overall Bayes factor from FAR and SNR alone
(``ligo.p_astro.computation.get_f_over_b``): foreground density
3 rho*^3 / rho^4 (sources uniform in volume) over background FAR / FAR*,
after capping the SNR of very loud MBTA/PyCBC events at a per-pipeline
threshold (``choose_snr``). The Bayes factor is split among classes with
"hard cuts" on template component masses: BNS if both <= 3 Msun, BBH if
both > 5 Msun, NSBH if one <= 3 < other (``make_weights_from_hardcuts``).
Templates with a component in 3-5 Msun that is not an NSBH (e.g. 4+4 Msun)
get no astrophysical weight at all, hence p_terr = 1: the package's choice.

Inputs it uses: FAR, SNR, pipeline, instruments and template masses. It does
not read ``ranking_data.xml.gz``. The package's gstlal ranking-data path
(``ligo.p_astro.gstlal_utils._get_ln_f_over_b``) is private and, with
NumPy >= 2, fails (it calls the removed ``numpy.trapz``), so it is not
offered here.

Pipelines may also upload their own ``p_astro.json``; validate it with
:func:`validate_p_astro_json`.
"""

from __future__ import annotations

import json
import math
import numbers
from importlib import resources

from ligo.p_astro import computation as pastro_computation
from ligo.p_astro import data as pastro_data

__all__ = (
    "CATEGORIES",
    "PAstroError",
    "compute_p_astro",
    "p_astro_json",
    "validate_p_astro_json",
)

CATEGORIES = ("BNS", "NSBH", "BBH", "Terrestrial")
"""Keys of a p_astro dictionary, as in GraceDB's p_astro.json."""

SECONDS_PER_DAY = 86400.0

FAR_STAR_HZ = 1.0 / (30.0 * SECONDS_PER_DAY)
"""FAR threshold of the toy model's candidate set (one per 30 days), the
value the p_astro package's own tests use with its shipped mean counts."""

SNR_STAR = 8.5
"""SNR threshold of the toy model's foreground density, as in the package's
tests (the single-detector threshold that defines the detected population)."""

MEAN_COUNTS_FILE = "H1L1V1-mean_counts-1126051217-61603201.json"
"""Package-shipped Poisson mean counts per astrophysical class (O1+O2)."""

SNR_FAR_THRESHOLDS_FILE = "H1L1V1-pipeline-far_snr-thresholds.json"
"""Package-shipped FAR/SNR limits above which a pipeline's SNR is capped."""

LIVETIME_FILE = "p_astro_livetime.json"
"""Package-shipped analysis livetime (s) that goes with the mean counts."""

TERRESTRIAL_COUNTS_KEY = "counts_Terrestrial"

SUM_TOLERANCE = 1e-3
"""How far the sum of an uploaded p_astro may stray from 1 (rounding in
pipelines' JSON writers)."""


class PAstroError(ValueError):
    """p_astro inputs or an uploaded p_astro.json are unusable."""


def _package_json(name: str):
    return json.loads(resources.files(pastro_data).joinpath(name).read_bytes())


def _livetime_seconds() -> float:
    return float(_package_json(LIVETIME_FILE)["p_astro_livetime"])


def compute_p_astro(
    far: float,
    snr: float,
    pipeline: str,
    instruments,
    mass1: float,
    mass2: float,
    far_star: float = FAR_STAR_HZ,
    snr_star: float = SNR_STAR,
    livetime: float | None = None,
) -> dict:
    """p_astro by class from FAR (Hz), network SNR and template masses.

    ``instruments`` are the detectors that took part (e.g. {"H1", "L1"});
    they select the pipeline's SNR cap. ``livetime`` (s) defaults to the one
    shipped with the package's mean counts; the terrestrial mean count is
    ``far_star * livetime`` as in the package's tests. Returns
    {'BNS', 'NSBH', 'BBH', 'Terrestrial'} -> float, summing to 1.
    """
    for name, value in (("FAR", far), ("SNR", snr)):
        if not (
            isinstance(value, numbers.Real) and math.isfinite(value) and value > 0
        ):
            raise PAstroError(f"{name} must be a positive number, got {value!r}")
    if not (mass1 > 0 and mass2 > 0):
        raise PAstroError(f"masses must be positive, got {mass1!r}, {mass2!r}")
    pipeline = pipeline.lower()
    instruments = set(instruments)

    thresholds = _package_json(SNR_FAR_THRESHOLDS_FILE)
    mean_counts = _package_json(MEAN_COUNTS_FILE)
    mean_counts[TERRESTRIAL_COUNTS_KEY] = far_star * (
        _livetime_seconds() if livetime is None else livetime
    )

    if _has_snr_cap(thresholds, pipeline, instruments):
        snr_choice = pastro_computation.choose_snr(
            far, snr, pipeline, instruments, thresholds
        )
    else:
        # Pipelines or networks the package has no entry for get no cap,
        # which is what its "far": 0 entries mean.
        snr_choice = snr
    bayes_factor = pastro_computation.get_f_over_b(far, snr_choice, far_star, snr_star)
    probabilities = pastro_computation.evaluate_p_astro_from_bayesfac(
        bayes_factor, mean_counts, mass1, mass2
    )
    return {category: float(probabilities[category]) for category in CATEGORIES}


def _has_snr_cap(thresholds: dict, pipeline: str, instruments: set) -> bool:
    key = ",".join(sorted(instruments))
    return pipeline in thresholds and key in thresholds[pipeline]


def p_astro_json(probabilities: dict) -> bytes:
    """Serialize p_astro as GraceDB's ``p_astro.json``."""
    return json.dumps({key: probabilities[key] for key in CATEGORIES}).encode()


def validate_p_astro_json(data: bytes) -> dict:
    """Check a pipeline-uploaded ``p_astro.json`` and return it as floats.

    Requires exactly the keys BNS, NSBH, BBH, Terrestrial, each a number in
    [0, 1], summing to 1 within `SUM_TOLERANCE`.
    """
    try:
        content = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PAstroError(f"p_astro.json is not JSON: {exc}") from exc
    if not isinstance(content, dict):
        raise PAstroError("p_astro.json must hold a JSON object")
    missing = sorted(set(CATEGORIES) - set(content))
    extra = sorted(set(content) - set(CATEGORIES))
    if missing or extra:
        raise PAstroError(
            f"p_astro.json keys must be {', '.join(CATEGORIES)}"
            f" (missing: {missing or 'none'}, unexpected: {extra or 'none'})"
        )
    probabilities = {}
    for key in CATEGORIES:
        value = content[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise PAstroError(f"p_astro.json {key} is not a number: {value!r}")
        if not 0.0 <= value <= 1.0:
            raise PAstroError(f"p_astro.json {key} = {value} is outside [0, 1]")
        probabilities[key] = float(value)
    total = sum(probabilities.values())
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise PAstroError(f"p_astro.json probabilities sum to {total:.6g}, not 1")
    return probabilities
