"""Source classification from template masses and spins."""

import json

import numpy as np
import pytest

from alerts.science import em_bright
from alerts.science.em_bright import (
    PROPERTIES,
    classify,
    em_bright_json,
    isco_radius,
    remnant_mass_fraction,
)

SNR = 10.0


def test_light_binary_has_ns_and_remnant_and_no_gap():
    result = classify(2.0, 1.0, 0.0, 0.0, SNR)
    assert result["HasNS"] > 0.9
    assert result["HasRemnant"] > 0.9
    assert result["HasMassGap"] < 0.1


def test_heavy_binary_black_hole_has_nothing():
    result = classify(30.0, 25.0, 0.0, 0.0, SNR)
    assert result["HasNS"] < 0.1
    assert result["HasRemnant"] < 0.1
    assert result["HasMassGap"] < 0.1


def test_four_solar_mass_primary_is_in_the_gap():
    result = classify(4.0, 1.4, 0.0, 0.0, SNR)
    assert result["HasMassGap"] > 0.8
    assert result["HasNS"] > 0.9


def test_prograde_black_hole_spin_disrupts_the_star():
    """A rapidly co-rotating BH has a small ISCO, so the NS is torn apart
    outside it; a non-spinning 8 Msun BH swallows the star whole."""
    plunge = classify(8.0, 1.4, 0.0, 0.0, SNR)["HasRemnant"]
    disrupt = classify(8.0, 1.4, 0.9, 0.0, SNR)["HasRemnant"]
    assert plunge < 0.1
    assert disrupt > 0.9


def test_order_of_components_does_not_matter():
    assert classify(1.4, 8.0, 0.0, 0.9, SNR) == classify(8.0, 1.4, 0.9, 0.0, SNR)


def test_same_inputs_same_answer_and_seed_changes_it():
    first = classify(2.5, 1.3, 0.1, 0.0, 8.0)
    assert classify(2.5, 1.3, 0.1, 0.0, 8.0) == first
    reseeded = [classify(2.5, 1.3, 0.1, 0.0, 8.0, seed=s) for s in (1, 2)]
    assert reseeded[0] != reseeded[1]


def test_louder_signal_is_more_certain():
    """A template just inside the gap: at low SNR some samples leave it,
    at high SNR almost none do."""
    quiet = classify(3.3, 1.4, 0.0, 0.0, 8.0)["HasMassGap"]
    loud = classify(3.3, 1.4, 0.0, 0.0, 80.0)["HasMassGap"]
    assert quiet < 0.9
    assert loud > 0.99


def test_probabilities_are_floats_in_unit_interval():
    result = classify(5.0, 2.0, -0.5, 0.1, 12.0)
    assert tuple(result) == PROPERTIES
    assert all(isinstance(value, float) for value in result.values())
    assert all(0 <= value <= 1 for value in result.values())


def test_json_matches_classify():
    assert json.loads(em_bright_json(2.0, 1.0, 0.0, 0.0, SNR)) == classify(
        2.0, 1.0, 0.0, 0.0, SNR
    )


def test_isco_radius_limits():
    """Bardeen, Press & Teukolsky: 9, 6 and 1 G M / c^2 for retrograde
    extremal, Schwarzschild and prograde extremal holes."""
    np.testing.assert_allclose(isco_radius([-1.0, 0.0, 1.0]), [9.0, 6.0, 1.0])


def test_remnant_fit_matches_hand_evaluation():
    """Foucart et al. 2018 Eq. (4) evaluated by hand for a 7 + 1.4 Msun,
    chi = 0.5 binary with a 12 km star."""
    compactness = 1.4 * em_bright.SOLAR_MASS_KM / 12.0
    eta = 5.0 / 36.0
    r_isco = 4.233002530700867  # BPT72 for chi = 0.5
    bracket = (
        0.406 * (1 - 2 * compactness) / eta ** (1 / 3)
        - 0.139 * r_isco * compactness / eta
        + 0.255
    )
    assert isco_radius(0.5) == pytest.approx(r_isco)
    assert remnant_mass_fraction(7.0, 1.4, 0.5) == pytest.approx(
        max(bracket, 0) ** 1.761
    )


@pytest.mark.parametrize(
    "args",
    [(-1.0, 1.0, 0, 0, 10), (2.0, 1.0, 0, 0, 0), (2.0, 1.0, 1.5, 0, 10),
     (float("nan"), 1.0, 0, 0, 10)],
)
def test_invalid_inputs_are_rejected(args):
    with pytest.raises(ValueError):
        classify(*args)


def test_module_docstring_cites_sources_and_numbers():
    doc = em_bright.__doc__
    for citation in ("Foucart", "Bardeen", "Rezzolla", "Cutler"):
        assert citation in doc
    for number in ("0.406", "0.139", "0.255", "1.761", "2.3", "12 km"):
        assert number in doc


def test_docstring_says_which_numbers_stand_for_the_equation_of_state():
    """The EoS is the pair (NS radius, maximum NS mass): the docstring names
    both constants with the values the code uses."""
    doc = " ".join(em_bright.__doc__.split())
    assert "Equation of state" in em_bright.__doc__
    assert f"`NS_RADIUS_KM` = {em_bright.NS_RADIUS_KM:g} km" in doc
    assert f"`MAX_NS_MASS` = {em_bright.MAX_NS_MASS:g} Msun" in doc
