"""p_astro from the p_astro package, and validation of uploaded p_astro.json."""

import json
from importlib import resources

import pytest
from ligo.p_astro import computation as package
from ligo.p_astro import data as package_data

from alerts.science.pastro import (
    CATEGORIES,
    PAstroError,
    compute_p_astro,
    p_astro_json,
    validate_p_astro_json,
)

DAY_S = 86400.0


def _package_file(name):
    return json.loads(resources.files(package_data).joinpath(name).read_bytes())


def package_p_astro(far, snr, pipeline, instruments, mass1, mass2):
    """The package called directly, the way its own tests call it."""
    far_star = 1 / (30 * DAY_S)
    snr_star = 8.5
    livetime = _package_file("p_astro_livetime.json")["p_astro_livetime"]
    thresholds = _package_file("H1L1V1-pipeline-far_snr-thresholds.json")
    mean_values = _package_file("H1L1V1-mean_counts-1126051217-61603201.json")
    mean_values["counts_Terrestrial"] = far_star * livetime
    snr_choice = package.choose_snr(far, snr, pipeline, instruments, thresholds)
    bayes_factor = package.get_f_over_b(far, snr_choice, far_star, snr_star)
    return package.evaluate_p_astro_from_bayesfac(
        bayes_factor, mean_values, mass1, mass2
    )


@pytest.mark.parametrize(
    "far, snr, pipeline, instruments, mass1, mass2",
    [
        (1e-10, 20.0, "pycbc", {"H1", "L1"}, 1.4, 1.3),
        (2e-10, 50.0, "pycbc", {"H1", "L1"}, 1.4, 1.3),  # SNR capped at 10
        (1e-15, 50.0, "mbta", {"H1", "L1", "V1"}, 8.0, 1.4),  # capped at 12
        (1e-8, 12.0, "mbta", {"L1", "V1"}, 8.0, 1.4),
        (1e-6, 10.0, "gstlal", {"H1", "L1"}, 30.0, 25.0),
        (3e-4, 9.0, "spiir", {"H1", "L1", "V1"}, 1.4, 1.3),
        (1e-7, 11.0, "gstlal", {"H1", "L1"}, 4.0, 4.0),  # mass gap
    ],
)
def test_equals_direct_package_call(far, snr, pipeline, instruments, mass1, mass2):
    ours = compute_p_astro(far, snr, pipeline, instruments, mass1, mass2)
    theirs = package_p_astro(far, snr, pipeline, instruments, mass1, mass2)
    assert set(ours) == set(CATEGORIES)
    for category in CATEGORIES:
        assert ours[category] == pytest.approx(theirs[category], rel=1e-12, abs=0)
    assert sum(ours.values()) == pytest.approx(1)


def test_equals_direct_package_call_for_mock_events(mock_events):
    for event in mock_events:
        args = (
            event.far,
            event.snr,
            event.pipeline,
            set(event.instruments),
            event.source.mass1,
            event.source.mass2,
        )
        ours = compute_p_astro(*args)
        theirs = package_p_astro(*args)
        assert ours == pytest.approx({key: theirs[key] for key in CATEGORIES})


def test_loud_bns_is_astrophysical_and_quiet_one_terrestrial():
    loud = compute_p_astro(1e-12, 25.0, "pycbc", {"H1", "L1"}, 1.4, 1.3)
    quiet = compute_p_astro(1e-3, 8.0, "pycbc", {"H1", "L1"}, 1.4, 1.3)
    assert loud["BNS"] > 0.99
    assert quiet["Terrestrial"] > 0.99


def test_mass_split_follows_hard_cuts():
    far, snr = 1e-9, 15.0
    assert compute_p_astro(far, snr, "gstlal", {"H1", "L1"}, 1.5, 1.2)["NSBH"] == 0
    nsbh = compute_p_astro(far, snr, "gstlal", {"H1", "L1"}, 9.0, 1.4)
    assert nsbh["NSBH"] > 0.5 and nsbh["BNS"] == 0 and nsbh["BBH"] == 0
    # The package gives templates in the 3-5 Msun gap no astrophysical class.
    gap = compute_p_astro(far, snr, "gstlal", {"H1", "L1"}, 4.0, 4.0)
    assert gap["Terrestrial"] == 1.0


def test_network_without_threshold_entry_is_not_capped():
    """KAGRA networks are not in the package's threshold file; the SNR is
    used as reported rather than failing."""
    far, snr = 1e-12, 40.0
    result = compute_p_astro(far, snr, "mbta", {"H1", "K1"}, 1.4, 1.3)
    uncapped = package_p_astro(far, snr, "gstlal", {"H1", "K1"}, 1.4, 1.3)
    assert result == pytest.approx({key: uncapped[key] for key in CATEGORIES})


@pytest.mark.parametrize("far, snr", [(0.0, 10.0), (-1e-9, 10.0), (1e-9, 0.0),
                                      (float("nan"), 10.0)])
def test_invalid_far_or_snr(far, snr):
    with pytest.raises(PAstroError):
        compute_p_astro(far, snr, "pycbc", {"H1", "L1"}, 1.4, 1.3)


def test_json_round_trip():
    probabilities = compute_p_astro(1e-9, 12.0, "pycbc", {"H1", "L1"}, 9.0, 1.4)
    assert validate_p_astro_json(p_astro_json(probabilities)) == probabilities


def test_valid_upload_is_returned_as_floats():
    data = b'{"BNS": 0, "NSBH": 0.25, "BBH": 0.5, "Terrestrial": 0.25}'
    result = validate_p_astro_json(data)
    assert result == {"BNS": 0.0, "NSBH": 0.25, "BBH": 0.5, "Terrestrial": 0.25}
    assert all(isinstance(value, float) for value in result.values())


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"not json", "not JSON"),
        (b"[0.1, 0.9]", "object"),
        (b'{"BNS": 0.5, "NSBH": 0.5, "BBH": 0}', "missing"),
        (b'{"BNS": 0.5, "NSBH": 0.5, "BBH": 0, "Terrestrial": 0, "MassGap": 0}',
         "unexpected"),
        (b'{"BNS": 1.5, "NSBH": -0.5, "BBH": 0, "Terrestrial": 0}', "outside"),
        (b'{"BNS": "0.5", "NSBH": 0.5, "BBH": 0, "Terrestrial": 0}', "not a number"),
        (b'{"BNS": true, "NSBH": 0, "BBH": 0, "Terrestrial": 0}', "not a number"),
        (b'{"BNS": 0.5, "NSBH": 0.4, "BBH": 0, "Terrestrial": 0}', "sum"),
        (b'{"BNS": NaN, "NSBH": 0.4, "BBH": 0, "Terrestrial": 0.6}', "outside"),
    ],
)
def test_invalid_upload_is_rejected(content, reason):
    with pytest.raises(PAstroError, match=reason):
        validate_p_astro_json(content)
