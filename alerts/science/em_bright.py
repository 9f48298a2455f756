"""Source classification (HasNS, HasRemnant, HasMassGap) from template masses.

``ligo.em-bright`` downloads trained classifiers when imported, so it cannot
run here. This module evaluates the same three questions directly from
published physics, by Monte Carlo over the uncertainty of the search
template's parameters:

HasNS
    P(m2 < `MAX_NS_MASS`): the lighter component is light enough to be a
    neutron star. `MAX_NS_MASS` = 2.3 Msun sits just above the upper bound on
    the maximum (TOV) mass of a non-rotating NS from GW170817,
    M_TOV = 2.16 (+0.17, -0.15) Msun (Rezzolla, Most & Weih 2018, ApJL 852,
    L25), and above the heaviest measured pulsar, PSR J0740+6620,
    2.08 +- 0.07 Msun (Fonseca et al. 2021, ApJL 915, L12).

HasRemnant
    P(remnant baryon mass outside the final BH > 0). Both components below
    `MAX_NS_MASS` (BNS): always. NSBH: from the fit of Foucart, Hinderer &
    Nissanke 2018, PRD 98, 081501(R), Eq. (4)::

        M_rem / M_NS^b = [max(alpha (1 - 2 C_NS) / eta^(1/3)
                              - beta R_ISCO C_NS / eta + gamma, 0)]^delta

    alpha = 0.406, beta = 0.139, gamma = 0.255, delta = 1.761, with
    C_NS = G M_NS / (R_NS c^2) the NS compactness, eta = Q / (1 + Q)^2 the
    symmetric mass ratio (Q = M_BH / M_NS) and R_ISCO = r_ISCO c^2 / (G M_BH)
    the normalized radius of the innermost stable circular orbit for the BH
    spin chi (its component along the orbital angular momentum, here
    spin1z), from Bardeen, Press & Teukolsky 1972, ApJ 178, 347, Eq. (2.21):
    Z1 = 1 + (1 - chi^2)^(1/3) [(1 + chi)^(1/3) + (1 - chi)^(1/3)],
    Z2 = sqrt(3 chi^2 + Z1^2),
    R_ISCO = 3 + Z2 - sign(chi) sqrt((3 - Z1)(3 + Z1 + 2 Z2)).
    Only the sign of M_rem matters, so the NS baryon mass is not needed.
    The NS radius is fixed at `NS_RADIUS_KM` = 12 km, between the NICER +
    XMM-Newton radius of PSR J0740+6620, 12.39 (+1.30, -0.98) km (Riley et
    al. 2021, ApJL 918, L27), and the multimessenger R_1.4 = 11.0 (+0.9,
    -0.6) km (Capano et al. 2020, Nat. Astron. 4, 625).

Equation of state
    The "chosen equation of state" of the remnant fit is represented by two
    numbers only, not by a tabulated EoS: the NS radius `NS_RADIUS_KM` =
    12 km (which sets the compactness C_NS in the Foucart fit) and the
    maximum NS mass `MAX_NS_MASS` = 2.3 Msun (which decides what counts as
    a neutron star, for HasNS and HasRemnant), with the sources given above.
    This pair stands for a moderately stiff EoS consistent with GW170817
    and NICER; a softer or stiffer EoS means changing both constants. The
    radius is taken the same for every NS mass (the Foucart fit needs only
    the compactness of the star in the binary).

HasMassGap
    P(a component lies in [3, 5] Msun), the "lower mass gap" between the
    heaviest NSs and the lightest BHs observed in X-ray binaries (Oezel et
    al. 2010, ApJ 725, 1918; Farr et al. 2011, ApJ 741, 103).

Uncertainty: a matched-filter template is a noisy point estimate. Fisher
matrix errors scale as 1/SNR, and the chirp mass, which sets the leading
order of the inspiral phase, is measured far better than the mass ratio,
which enters at higher post-Newtonian order and is degenerate with the
aligned spins (Cutler & Flanagan 1994, PRD 49, 2658; Poisson & Will 1995,
PRD 52, 848). We draw `SAMPLE_COUNT` samples with

    ln Mc  ~ N(ln Mc_template, (`CHIRP_MASS_SPREAD` / SNR)^2)
    eta    ~ N(eta_template,   (`ETA_SPREAD` / SNR)^2), folded at 1/4
    chi_1  ~ N(spin1z,         (`SPIN_SPREAD` / SNR)^2), clipped to +-MAX

The coefficients are deliberately rough and generous: they stand for the
template bank's coarseness as much as for noise (e.g. 1% in chirp mass,
0.02 in eta and 0.2 in spin at SNR 10). The random generator is seeded from
the inputs, so one candidate always gets the same answer.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np

__all__ = (
    "PROPERTIES",
    "classify",
    "em_bright_json",
    "isco_radius",
    "remnant_mass_fraction",
)

PROPERTIES = ("HasNS", "HasRemnant", "HasMassGap")
"""Keys of the classification, as in GraceDB's em_bright.json."""

MAX_NS_MASS = 2.3
"""Heaviest possible neutron star, Msun (see module docstring)."""

MASS_GAP = (3.0, 5.0)
"""Lower mass gap, Msun, inclusive."""

NS_RADIUS_KM = 12.0
"""Neutron star radius used for the compactness, km."""

SOLAR_MASS_KM = 1.4766250614046494
"""G Msun / c^2 in km (IAU 2015 nominal solar mass parameter)."""

# Foucart, Hinderer & Nissanke 2018, PRD 98, 081501(R), Eq. (4).
FOUCART_ALPHA = 0.406
FOUCART_BETA = 0.139
FOUCART_GAMMA = 0.255
FOUCART_DELTA = 1.761

SAMPLE_COUNT = 5000
"""Monte Carlo samples per classification; the binomial error of each
probability is at most 0.5/sqrt(5000) = 0.007."""

CHIRP_MASS_SPREAD = 0.1
"""Fractional chirp-mass spread times SNR."""

ETA_SPREAD = 0.2
"""Symmetric-mass-ratio spread times SNR."""

SPIN_SPREAD = 2.0
"""Aligned-spin spread times SNR."""

MIN_SNR = 4.0
"""Spreads are computed with at least this SNR, the usual single-detector
trigger threshold, so that tiny reported SNRs do not blow them up."""

MAX_SPIN = 0.99
"""Largest |chi| a sample may take; the Kerr limit is 1."""

MAX_ETA = 0.25
"""Symmetric mass ratio of an equal-mass binary, its largest value."""

MIN_ETA = 1e-4
"""Smallest symmetric mass ratio a sample may take (Q ~ 10^4)."""

SEED_DECIMALS = 6
"""Inputs are rounded to this many decimals before seeding, so that float
noise in a re-parsed coinc does not change the answer."""


def isco_radius(chi):
    """ISCO radius in units of G M_BH / c^2 for aligned spin ``chi``.

    Bardeen, Press & Teukolsky 1972, Eq. (2.21); prograde orbits (chi > 0)
    reach closer to the hole.
    """
    chi = np.asarray(chi, dtype=float)
    z1 = 1 + np.cbrt(1 - chi**2) * (np.cbrt(1 + chi) + np.cbrt(1 - chi))
    z2 = np.sqrt(3 * chi**2 + z1**2)
    return 3 + z2 - np.sign(chi) * np.sqrt((3 - z1) * (3 + z1 + 2 * z2))


def remnant_mass_fraction(bh_mass, ns_mass, bh_spin, ns_radius_km=NS_RADIUS_KM):
    """Remnant baryon mass outside the BH over the NS baryon mass.

    Foucart, Hinderer & Nissanke 2018, Eq. (4); zero means the NS plunges
    whole.
    """
    bh_mass = np.asarray(bh_mass, dtype=float)
    ns_mass = np.asarray(ns_mass, dtype=float)
    compactness = ns_mass * SOLAR_MASS_KM / ns_radius_km
    mass_ratio = bh_mass / ns_mass
    eta = mass_ratio / (1 + mass_ratio) ** 2
    bracket = (
        FOUCART_ALPHA * (1 - 2 * compactness) / np.cbrt(eta)
        - FOUCART_BETA * isco_radius(bh_spin) * compactness / eta
        + FOUCART_GAMMA
    )
    return np.maximum(bracket, 0.0) ** FOUCART_DELTA


def _chirp_mass_and_eta(mass1, mass2):
    total = mass1 + mass2
    eta = mass1 * mass2 / total**2
    return total * eta**0.6, eta


def _component_masses(chirp_mass, eta):
    """Invert (Mc, eta) to (m1 >= m2)."""
    total = chirp_mass / eta**0.6
    root = np.sqrt(np.maximum(1 - 4 * eta, 0.0))
    return 0.5 * total * (1 + root), 0.5 * total * (1 - root)


def _seed_from_inputs(*values) -> int:
    text = ",".join(f"{value:.{SEED_DECIMALS}f}" for value in values)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def _draw_samples(mass1, mass2, spin1z, snr, rng):
    """Masses and primary spin scattered around the template (see module doc)."""
    chirp_mass, eta = _chirp_mass_and_eta(mass1, mass2)
    effective_snr = max(snr, MIN_SNR)
    ln_chirp = rng.normal(
        math.log(chirp_mass), CHIRP_MASS_SPREAD / effective_snr, SAMPLE_COUNT
    )
    eta_samples = rng.normal(eta, ETA_SPREAD / effective_snr, SAMPLE_COUNT)
    # eta is symmetric under m1 <-> m2, so values beyond 1/4 fold back.
    eta_samples = MAX_ETA - np.abs(eta_samples - MAX_ETA)
    eta_samples = np.clip(eta_samples, MIN_ETA, MAX_ETA)
    spins = np.clip(
        rng.normal(spin1z, SPIN_SPREAD / effective_snr, SAMPLE_COUNT),
        -MAX_SPIN,
        MAX_SPIN,
    )
    heavy, light = _component_masses(np.exp(ln_chirp), eta_samples)
    return heavy, light, spins


def classify(mass1, mass2, spin1z, spin2z, snr, seed=None) -> dict:
    """HasNS, HasRemnant, HasMassGap probabilities for a CBC template.

    Masses in Msun (either order), aligned dimensionless spins, network SNR.
    ``spin2z`` is accepted for symmetry with the template but unused: the
    remnant fit depends on the BH spin only. ``seed`` overrides the seed
    derived from the inputs.
    """
    values = (mass1, mass2, spin1z, spin2z, snr)
    if not all(math.isfinite(value) for value in values):
        raise ValueError(f"classification inputs must be finite, got {values}")
    if mass1 <= 0 or mass2 <= 0 or snr <= 0:
        raise ValueError(f"masses and SNR must be positive, got {values}")
    if max(abs(spin1z), abs(spin2z)) > 1:
        raise ValueError(f"spins must be within [-1, 1], got {spin1z}, {spin2z}")
    # The heavier template component carries the BH spin.
    if mass2 > mass1:
        mass1, mass2, spin1z, spin2z = mass2, mass1, spin2z, spin1z
    if seed is None:
        seed = _seed_from_inputs(mass1, mass2, spin1z, spin2z, snr)
    rng = np.random.default_rng(seed)
    heavy, light, bh_spin = _draw_samples(mass1, mass2, spin1z, snr, rng)

    has_ns = light < MAX_NS_MASS
    binary_ns = heavy < MAX_NS_MASS
    disrupts = remnant_mass_fraction(heavy, light, bh_spin) > 0
    has_remnant = has_ns & (binary_ns | disrupts)
    low, high = MASS_GAP
    in_gap = ((heavy >= low) & (heavy <= high)) | ((light >= low) & (light <= high))
    return {
        "HasNS": float(np.mean(has_ns)),
        "HasRemnant": float(np.mean(has_remnant)),
        "HasMassGap": float(np.mean(in_gap)),
    }


def em_bright_json(mass1, mass2, spin1z, spin2z, snr, seed=None) -> bytes:
    """:func:`classify` serialized as GraceDB's ``em_bright.json``."""
    return json.dumps(classify(mass1, mass2, spin1z, spin2z, snr, seed)).encode()
