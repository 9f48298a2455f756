"""Realistic mock compact-binary detections for tests, demos and benchmarks.

Each mock event is what a CBC pipeline would upload: a self-contained
``coinc.xml`` and a ``psd.xml.gz``.  The physics comes from ligo.skymap's own
tools, run in-process: ``bayestar-sample-model-psd`` evaluates design noise
curves and ``bayestar-realize-coincs`` turns a ``sim_inspiral`` table into
triggers with Gaussian measurement error and SNR time series.

We draw the sources ourselves instead of with ``bayestar-inject``: that tool
spends minutes tabulating a horizon-distance grid before drawing anything,
and its default template bank criterion ("o2-uberbank") picks SEOBNRv4_ROM,
whose data file lalsimulation does not ship, so it ends in "Internal
function call failed: Generic failure".  Our population is drawn with a
seeded numpy Generator and uses an analytic waveform (`TEMPLATE_WAVEFORM`),
so nothing needs downloading.  Pass the same waveform to BAYESTAR when
localizing these events.

Population: a BNS/NSBH/BBH mix with uniform component masses and aligned
spins, isotropic sky position and orientation, distances uniform in volume.
Only sources whose expected (noise-free) SNRs clear the realization
thresholds with a margin are kept, which is the detected part of that
population; see `_draw_source`.

FARs are not computed from the signal (there is no background to rank
against).  Each source is significant, with a FAR log-uniform in
`SIGNIFICANT_FAR_RANGE_HZ` (well below the 1/(30 days)/7 public-alert
threshold), or, with probability ``insignificant_fraction``, log-uniform in
`INSIGNIFICANT_FAR_RANGE_HZ`, which spans the less-significant alert band
(<= 2/day) and rates above 1/hour that form no superevent.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gzip
import io
import logging
import math
import os
import tempfile
import threading
from dataclasses import dataclass, field, replace

import lal
import lal.series
import numpy as np
from igwn_ligolw import ligolw, lsctables
from igwn_ligolw import types as ligolw_types
from igwn_ligolw import utils as ligolw_utils
from ligo.skymap.bayestar import filter as bayestar_filter
from ligo.skymap.io.events.ligolw import ContentHandler as SkymapContentHandler
from ligo.skymap.tool import bayestar_realize_coincs, bayestar_sample_model_psd

from alerts.science.coinc import chirp_mass
from alerts.vocabulary import COINC_FILENAME, PSD_FILENAME

__all__ = (
    "DETECTORS",
    "F_LOW_HZ",
    "MockEvent",
    "PIPELINES",
    "SimulatedSource",
    "TEMPLATE_WAVEFORM",
    "late_significant_scenario",
    "make_mock_events",
    "model_psd_xml_gz",
    "psd_xml_gz_for",
)

#: Noise curve per detector: LIGO Hanford/Livingston at Advanced LIGO design
#: ("zero detuning, high power") and Advanced Virgo design.  Both are
#: analytic in lalsimulation, so no data files are needed.
DETECTOR_PSD_MODELS = {
    "H1": "aLIGOZeroDetHighPower",
    "L1": "aLIGOZeroDetHighPower",
    "V1": "AdvVirgo",
}
DETECTORS = tuple(DETECTOR_PSD_MODELS)

#: Frequency-domain approximant for injections and templates.  IMRPhenomD is
#: closed-form (no ROM data files) and covers BNS to BBH with aligned spins.
TEMPLATE_WAVEFORM = "IMRPhenomD"

#: Template low-frequency cutoff, Hz (BAYESTAR's default).
F_LOW_HZ = 30.0

#: Trigger thresholds handed to bayestar-realize-coincs (its defaults): a
#: detector contributes with SNR >= 4, and the network needs SNR >= 12 and
#: two triggers.
SINGLE_DETECTOR_SNR_THRESHOLD = 4.0
NETWORK_SNR_THRESHOLD = 12.0
MIN_TRIGGERS = 2

#: Expected SNRs must beat the thresholds by this factor, so that Gaussian
#: measurement error (about 1 in SNR per detector) rarely drops a source.
EXPECTED_SNR_MARGIN = 1.15

#: Source classes: relative weight, component mass ranges (solar masses,
#: uniform) and the largest aligned spin magnitude of each component.
NEUTRON_STAR_MASS_RANGE = (1.1, 2.0)
NEUTRON_STAR_MAX_SPIN = 0.05
BLACK_HOLE_MAX_SPIN = 0.8


@dataclass(frozen=True)
class _SourceClass:
    weight: float
    mass1_range: tuple[float, float]
    mass2_range: tuple[float, float]
    max_spin1: float
    max_spin2: float


SOURCE_CLASSES = {
    "BNS": _SourceClass(
        0.4,
        NEUTRON_STAR_MASS_RANGE,
        NEUTRON_STAR_MASS_RANGE,
        NEUTRON_STAR_MAX_SPIN,
        NEUTRON_STAR_MAX_SPIN,
    ),
    # Black hole masses stay below ~18x the neutron star's: IMRPhenomD's
    # calibrated mass-ratio range.
    "NSBH": _SourceClass(
        0.2,
        (5.0, 18.0),
        NEUTRON_STAR_MASS_RANGE,
        BLACK_HOLE_MAX_SPIN,
        NEUTRON_STAR_MAX_SPIN,
    ),
    "BBH": _SourceClass(
        0.4, (5.0, 60.0), (5.0, 60.0), BLACK_HOLE_MAX_SPIN, BLACK_HOLE_MAX_SPIN
    ),
}

#: FAR ranges in Hz, sampled log-uniformly.  1e-14 Hz is about once per
#: 3 million years; 1e-8 Hz about once per 3 years.  1e-6 Hz is about once
#: per 12 days; 1e-3 Hz is 3.6 per hour.
SIGNIFICANT_FAR_RANGE_HZ = (1e-14, 1e-8)
INSIGNIFICANT_FAR_RANGE_HZ = (1e-6, 1e-3)
DEFAULT_INSIGNIFICANT_FRACTION = 0.2

#: Labels for the near-duplicate detections of one source; the first one is
#: the realization itself.
PIPELINES = ("gstlal", "pycbc", "mbta")

#: Near-duplicates differ from the realization by a common time shift
#: (Gaussian, s, capped so that all stay well inside a 1 s superevent
#: window) and a common fractional SNR change (Gaussian, capped).  Some drop
#: their weakest detector when three took part.
DUPLICATE_TIME_JITTER_S = 0.005
DUPLICATE_MAX_TIME_OFFSET_S = 0.05
DUPLICATE_SNR_SCATTER = 0.05
DUPLICATE_MAX_SNR_CHANGE = 0.2
DROP_WEAKEST_DETECTOR_PROBABILITY = 0.3

#: Default time between consecutive sources, s; far beyond superevent
#: windows so that each source makes its own superevent.
DEFAULT_SPACING_S = 100.0

#: Largest random sub-second part added to each source time, s, so that
#: times are not round numbers; never more than half the spacing.
SOURCE_TIME_JITTER_S = 0.5

#: Safety nets: orientation draws per source, and realization rounds to
#: replace sources that noise pushed below threshold.
MAX_ORIENTATION_DRAWS = 100_000
MAX_REALIZATION_ROUNDS = 20

#: bayestar-realize-coincs seeds numpy's legacy global generator, which
#: takes seeds below 2**32; leave room for its per-event increments.
TOOL_SEED_LIMIT = 2**31

#: Names written into process_params instead of temporary paths, as a
#: pipeline upload refers to them.
INJECTION_FILE_NAME = "injections.xml"
COINC_FILE_NAME = COINC_FILENAME
PSD_FILE_NAME = PSD_FILENAME

#: Program name recorded for the population draw.
SIMULATION_PROGRAM = "alerts-mock-simulation"

#: Host and user recorded in the mock coinc's process row instead of the
#: real ones, so that the bytes depend only on the seed.
MOCK_PROCESS_NODE = "localhost"
MOCK_PROCESS_USER = "mock"

#: Logger that ligo.skymap's BAYESTAR code writes to; it warns once per
#: detector and event about the PSD's frequency range.
BAYESTAR_LOGGER = "BAYESTAR"

#: Serializes calls into the ligo.skymap tools, which touch process-wide
#: state (numpy's global random state, logging, stderr).
_TOOL_LOCK = threading.Lock()


@dataclass(frozen=True)
class SimulatedSource:
    """The true parameters of one simulated binary.

    Masses in solar masses, aligned dimensionless spins, luminosity distance
    in Mpc, angles in radians (right ascension, declination, inclination,
    polarization), geocentre arrival time in GPS seconds.
    """

    source_class: str
    mass1: float
    mass2: float
    spin1z: float
    spin2z: float
    distance: float
    ra: float
    dec: float
    inclination: float
    polarization: float
    geocent_time: float


@dataclass(frozen=True)
class MockEvent:
    """One pipeline's upload for a simulated source.

    ``coinc_xml`` is an uncompressed LIGO-LW document and ``psd_xml_gz`` a
    gzipped one with the spectra of the event's detectors.  ``gpstime``,
    ``far`` (Hz), ``snr``, ``instruments`` and ``detector_snrs`` repeat
    what the coinc says.  Detections sharing ``source_index`` are
    near-duplicates of one signal reported by different ``pipeline`` labels.
    """

    coinc_xml: bytes = field(repr=False)
    psd_xml_gz: bytes = field(repr=False)
    gpstime: float
    far: float
    snr: float
    instruments: tuple[str, ...]
    detector_snrs: dict[str, float] = field(hash=False)
    pipeline: str
    source_index: int
    source: SimulatedSource


@contextlib.contextmanager
def _bayestar_warnings_silenced():
    """Hide BAYESTAR's per-call warnings that the model PSD stops at f_max."""
    bayestar_log = logging.getLogger(BAYESTAR_LOGGER)
    saved_level = bayestar_log.level
    bayestar_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        bayestar_log.setLevel(saved_level)


@contextlib.contextmanager
def _contained_tool_call():
    """Run a ligo.skymap tool as if in a fresh process, then clean up.

    The tools configure the root logger, seed numpy's global generator and
    draw tqdm progress bars on stderr; all of that is put back afterwards.
    They also expect igwn-ligolw's row-ID counters, which are class
    attributes shared by the whole process, to start at 0:
    bayestar-realize-coincs links injections to coincs by assuming that
    coinc_event IDs count from 0, so a second run in one process would
    link them wrongly.  The counters are reset for the run and restored.
    """
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_random_state = np.random.get_state()
    table_classes = list(ligolw.Table.TableByName.values())
    with (
        _TOOL_LOCK,
        contextlib.redirect_stderr(io.StringIO()),
        _bayestar_warnings_silenced(),
    ):
        saved_next_ids = [table_class.next_id for table_class in table_classes]
        ligolw.Table.reset_next_ids(table_classes)
        try:
            yield
        finally:
            for table_class, next_id in zip(table_classes, saved_next_ids):
                table_class.next_id = next_id
            np.random.set_state(saved_random_state)
            root.handlers[:] = saved_handlers
            root.setLevel(saved_level)


def _xml_bytes(xmldoc) -> bytes:
    buffer = io.BytesIO()
    ligolw_utils.write_fileobj(xmldoc, buffer)
    return buffer.getvalue()


def _gzip_bytes(data: bytes) -> bytes:
    """Gzip with a zero timestamp so equal documents give equal bytes."""
    return gzip.compress(data, mtime=0)


@functools.lru_cache(maxsize=1)
def model_psd_xml_gz() -> bytes:
    """All detectors' design noise curves, from bayestar-sample-model-psd.

    Computed once per process.
    """
    args = []
    for detector, model in DETECTOR_PSD_MODELS.items():
        args += [f"--{detector}", model]
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, PSD_FILE_NAME)
        with _contained_tool_call():
            bayestar_sample_model_psd.main([*args, "-o", path, "-l", "ERROR"])
        with open(path, "rb") as psd_file:
            return psd_file.read()


@functools.lru_cache(maxsize=1)
def _model_psd_series() -> dict[str, lal.REAL8FrequencySeries]:
    xmldoc = ligolw_utils.load_fileobj(
        io.BytesIO(model_psd_xml_gz()), contenthandler=lal.series.PSDContentHandler
    )
    return lal.series.read_psd_xmldoc(xmldoc, root_name=None)


@functools.lru_cache(maxsize=1)
def _interpolated_psds() -> dict[str, bayestar_filter.InterpolatedPSD]:
    return {
        detector: bayestar_filter.InterpolatedPSD(
            bayestar_filter.abscissa(series), series.data.data
        )
        for detector, series in _model_psd_series().items()
    }


@functools.lru_cache(maxsize=None)
def psd_xml_gz_for(instruments: tuple[str, ...]) -> bytes:
    """A ``psd.xml.gz`` holding the design noise curves of ``instruments``."""
    series = _model_psd_series()
    xmldoc = lal.series.make_psd_xmldoc(
        {detector: series[detector] for detector in instruments}, encoding="base64"
    )
    return _gzip_bytes(_xml_bytes(xmldoc))


def _unit_distance_snrs(detectors, mass1, mass2, spin1z, spin2z) -> np.ndarray:
    """Per-detector SNR of an optimally oriented source at 1 Mpc.

    Uses the same BAYESTAR signal model as bayestar-realize-coincs, whose
    template amplitude is normalized to 1 Mpc.
    """
    template = bayestar_filter.sngl_inspiral_psd(
        TEMPLATE_WAVEFORM,
        mass1=mass1,
        mass2=mass2,
        spin1z=spin1z,
        spin2z=spin2z,
        f_min=F_LOW_HZ,
    )
    psds = _interpolated_psds()
    with _bayestar_warnings_silenced():
        return np.asarray(
            [
                bayestar_filter.SignalModel(
                    bayestar_filter.signal_psd_series(template, psds[detector])
                ).get_horizon_distance()
                for detector in detectors
            ]
        )


def _antenna_amplitudes(
    detectors, ra, dec, inclination, polarization, gmst
) -> np.ndarray:
    """|F+ (1 + cos^2 i)/2 + i Fx cos i| per detector: the fraction of the
    optimal SNR that a source with this sky position and orientation gets.
    """
    cos_i = math.cos(inclination)
    amplitudes = []
    for detector in detectors:
        response = lal.cached_detector_by_prefix[detector].response
        f_plus, f_cross = lal.ComputeDetAMResponse(
            response, ra, dec, polarization, gmst
        )
        amplitudes.append(
            abs(complex(0.5 * (1 + cos_i**2) * f_plus, cos_i * f_cross))
        )
    return np.asarray(amplitudes)


def _detection_distance(snrs_at_unit_distance: np.ndarray) -> float:
    """Largest distance (Mpc) at which expected SNRs still pass, with margin."""
    network = float(np.sqrt(np.sum(snrs_at_unit_distance**2)))
    second_loudest = float(np.sort(snrs_at_unit_distance)[-MIN_TRIGGERS])
    return min(
        network / (NETWORK_SNR_THRESHOLD * EXPECTED_SNR_MARGIN),
        second_loudest / (SINGLE_DETECTOR_SNR_THRESHOLD * EXPECTED_SNR_MARGIN),
    )


def _draw_source(
    rng: np.random.Generator, detectors: tuple[str, ...], geocent_time: float
) -> SimulatedSource:
    """Draw one detectable source.

    For a population isotropic in orientation and uniform in volume, the
    detected sources have orientation density proportional to the cube of
    their detection distance, and distance uniform in volume below it.  We
    draw orientations by rejection against the largest possible detection
    distance (all antenna amplitudes 1), then the distance.  This needs
    only antenna patterns per draw, not waveforms.
    """
    names = list(SOURCE_CLASSES)
    weights = np.asarray([SOURCE_CLASSES[name].weight for name in names])
    source_class = names[rng.choice(len(names), p=weights / weights.sum())]
    params = SOURCE_CLASSES[source_class]
    mass1, mass2 = sorted(
        (rng.uniform(*params.mass1_range), rng.uniform(*params.mass2_range)),
        reverse=True,
    )
    spin1z = rng.uniform(-params.max_spin1, params.max_spin1)
    spin2z = rng.uniform(-params.max_spin2, params.max_spin2)

    optimal_snrs = _unit_distance_snrs(detectors, mass1, mass2, spin1z, spin2z)
    largest_distance = _detection_distance(optimal_snrs)
    gmst = lal.GreenwichMeanSiderealTime(lal.LIGOTimeGPS(geocent_time))
    for _ in range(MAX_ORIENTATION_DRAWS):
        ra = rng.uniform(0, 2 * math.pi)
        dec = math.asin(rng.uniform(-1, 1))
        inclination = math.acos(rng.uniform(-1, 1))
        polarization = rng.uniform(0, math.pi)
        amplitudes = _antenna_amplitudes(
            detectors, ra, dec, inclination, polarization, gmst
        )
        distance_limit = _detection_distance(optimal_snrs * amplitudes)
        if rng.uniform() < (distance_limit / largest_distance) ** 3:
            break
    else:
        raise RuntimeError("could not draw a detectable orientation")
    distance = distance_limit * rng.uniform() ** (1 / 3)
    return SimulatedSource(
        source_class=source_class,
        mass1=float(mass1),
        mass2=float(mass2),
        spin1z=float(spin1z),
        spin2z=float(spin2z),
        distance=float(distance),
        ra=float(ra),
        dec=float(dec),
        inclination=float(inclination),
        polarization=float(polarization),
        geocent_time=float(geocent_time),
    )


def _injection_document(sources: dict[int, SimulatedSource], seed: int):
    """A sim_inspiral document; simulation_id is the source's slot index."""
    xmldoc = ligolw.Document()
    xmldoc.appendChild(ligolw.LIGO_LW())
    process = xmldoc.register_process(SIMULATION_PROGRAM, {"seed": seed})
    table = xmldoc.childNodes[0].appendChild(lsctables.SimInspiralTable.new())
    for index, source in sources.items():
        row = table.RowType(**dict.fromkeys(table.validcolumns, None))
        row.process_id = process.process_id
        row.simulation_id = index
        row.waveform = TEMPLATE_WAVEFORM
        row.f_lower = F_LOW_HZ
        row.mass1, row.mass2 = source.mass1, source.mass2
        row.mchirp = chirp_mass(source.mass1, source.mass2)
        row.eta = source.mass1 * source.mass2 / (source.mass1 + source.mass2) ** 2
        row.spin1x = row.spin1y = row.spin2x = row.spin2y = 0.0
        row.spin1z, row.spin2z = source.spin1z, source.spin2z
        row.distance = source.distance
        row.longitude, row.latitude = source.ra, source.dec
        row.inclination = source.inclination
        row.polarization = source.polarization
        row.coa_phase = 0.0
        row.time_geocent = lal.LIGOTimeGPS(source.geocent_time)
        table.append(row)
    return xmldoc


def _realize(
    sources: dict[int, SimulatedSource], detectors: tuple[str, ...], tool_seed: int
):
    """Run bayestar-realize-coincs on ``sources``; return its document."""
    with tempfile.TemporaryDirectory() as directory:
        injection_path = os.path.join(directory, INJECTION_FILE_NAME)
        coinc_path = os.path.join(directory, COINC_FILE_NAME)
        psd_path = os.path.join(directory, PSD_FILE_NAME)
        with open(psd_path, "wb") as psd_file:
            psd_file.write(model_psd_xml_gz())
        args = [
            injection_path,
            "-o",
            coinc_path,
            "--reference-psd",
            psd_path,
            "--detector",
            *detectors,
            "--measurement-error",
            "gaussian-noise",
            "--waveform",
            TEMPLATE_WAVEFORM,
            "--f-low",
            str(F_LOW_HZ),
            "--snr-threshold",
            str(SINGLE_DETECTOR_SNR_THRESHOLD),
            "--net-snr-threshold",
            str(NETWORK_SNR_THRESHOLD),
            "--min-triggers",
            str(MIN_TRIGGERS),
            "--preserve-ids",
            "--seed",
            str(tool_seed),
            "-l",
            "ERROR",
        ]
        with _contained_tool_call():
            # Inside, so that row IDs of the injection's process count from 0.
            ligolw_utils.write_filename(
                _injection_document(sources, tool_seed), injection_path
            )
            bayestar_realize_coincs.main(args)
        return ligolw_utils.load_filename(
            coinc_path, contenthandler=SkymapContentHandler
        )


#: Element and Param names under which bayestar-realize-coincs stores each
#: trigger's SNR time series (the layout ligo.skymap's event reader expects).
SNR_SERIES_ELEMENT_NAME = "COMPLEX8TimeSeries"
SNR_SERIES_EVENT_ID_PARAM = "event_id"


def _snr_series_by_event_id(xmldoc) -> dict:
    series = {}
    for elem in xmldoc.getElementsByTagName(ligolw.LIGO_LW.tagName):
        if elem.hasAttribute("Name") and elem.Name == SNR_SERIES_ELEMENT_NAME:
            event_id = ligolw.Param.get_param(elem, SNR_SERIES_EVENT_ID_PARAM).value
            series[event_id] = lal.series.parse_COMPLEX8TimeSeries(elem)
    return series


class _RealizedCoincs:
    """Index of a bayestar-realize-coincs output, for cutting it per event."""

    def __init__(self, xmldoc):
        self.coinc_inspiral_table = lsctables.CoincInspiralTable.get_table(xmldoc)
        self.coinc_inspirals = {
            row.coinc_event_id: row for row in self.coinc_inspiral_table
        }
        self.coinc_table = lsctables.CoincTable.get_table(xmldoc)
        self.map_table = lsctables.CoincMapTable.get_table(xmldoc)
        self.sngl_table = lsctables.SnglInspiralTable.get_table(xmldoc)
        self.process_table = lsctables.ProcessTable.get_table(xmldoc)
        self.params_table = lsctables.ProcessParamsTable.get_table(xmldoc)
        self.time_slide_table = lsctables.TimeSlideTable.get_table(xmldoc)
        self.coinc_def_table = lsctables.CoincDefTable.get_table(xmldoc)
        self.coincs = {row.coinc_event_id: row for row in self.coinc_table}
        self.sngls = {row.event_id: row for row in self.sngl_table}
        self.snr_series = _snr_series_by_event_id(xmldoc)

        links = {}
        for row in self.map_table:
            links.setdefault(row.coinc_event_id, []).append(row)
        self.sngl_ids_by_coinc = {
            coinc_event_id: [
                row.event_id
                for row in rows
                if row.table_name == lsctables.SnglInspiralTable.tableName
            ]
            for coinc_event_id, rows in links.items()
        }
        # The tool ties each found injection to its coinc through a second
        # coinc_event whose map rows name one sim_inspiral and one coinc_event.
        self.coinc_by_simulation = {}
        for rows in links.values():
            by_table = {row.table_name: row.event_id for row in rows}
            simulation_id = by_table.get(lsctables.SimInspiralTable.tableName)
            coinc_event_id = by_table.get(lsctables.CoincTable.tableName)
            if simulation_id is not None and coinc_event_id is not None:
                self.coinc_by_simulation[simulation_id] = coinc_event_id


@dataclass(frozen=True)
class _Detection:
    """How one pipeline's report differs from the realization."""

    instruments: frozenset[str]
    time_offset: float
    snr_scale: float
    far: float


#: process_params options whose values are temporary paths, and the names
#: a pipeline upload would carry instead.
_PATH_PARAMS = {
    "--input": INJECTION_FILE_NAME,
    "--output": COINC_FILE_NAME,
    "--reference-psd": PSD_FILE_NAME,
}


def _copied_rows(table, rows):
    """An empty copy of ``table`` (same columns) holding copies of ``rows``."""
    new_table = table.copy()
    new_table.extend(copy.copy(row) for row in rows)
    return new_table


def _as_stored(value: float, table, column: str) -> float:
    """``value`` as it reads back from ``table.column`` in the XML text.

    real_4 columns keep float32 precision and real_8 ones 16 digits, so the
    numbers reported beside a document are those a reader of it gets.
    """
    return float(ligolw_types.FormatFunc[table.validcolumns[column]](value))


def _mean_time(times):
    """Mean of LIGOTimeGPS values, exact to the nanosecond."""
    return lal.LIGOTimeGPS(0, sum(time.ns() for time in times) // len(times))


def _event_document(realized: _RealizedCoincs, coinc_event_id, detection):
    """Cut one self-contained coinc document out of the realization.

    Returns the document, the triggers it holds, its network SNR and time.
    """
    coinc = realized.coincs[coinc_event_id]
    sngls = [
        copy.copy(realized.sngls[event_id])
        for event_id in realized.sngl_ids_by_coinc[coinc_event_id]
        if realized.sngls[event_id].ifo in detection.instruments
    ]
    sngl_table = realized.sngl_table
    for sngl in sngls:
        sngl.end = sngl.end + detection.time_offset
        sngl.snr = _as_stored(sngl.snr * detection.snr_scale, sngl_table, "snr")
        sngl.eff_distance /= detection.snr_scale
    network_snr = _as_stored(
        math.sqrt(sum(sngl.snr**2 for sngl in sngls)),
        realized.coinc_inspiral_table,
        "snr",
    )
    end = _mean_time([sngl.end for sngl in sngls])

    xmldoc = ligolw.Document()
    root = xmldoc.appendChild(ligolw.LIGO_LW())

    processes = root.appendChild(
        _copied_rows(
            realized.process_table,
            [p for p in realized.process_table if p.process_id == coinc.process_id],
        )
    )
    for process in processes:
        process.start_time = process.end_time = end.gpsSeconds
        process.node = MOCK_PROCESS_NODE
        process.username = MOCK_PROCESS_USER
        process.unix_procid = 0
    params = root.appendChild(
        _copied_rows(
            realized.params_table,
            [p for p in realized.params_table if p.process_id == coinc.process_id],
        )
    )
    for param in params:
        if param.param in _PATH_PARAMS:
            param.value = _PATH_PARAMS[param.param]

    root.appendChild(
        _copied_rows(
            realized.time_slide_table,
            [
                row
                for row in realized.time_slide_table
                if row.time_slide_id == coinc.time_slide_id
            ],
        )
    )
    root.appendChild(
        _copied_rows(
            realized.coinc_def_table,
            [
                row
                for row in realized.coinc_def_table
                if row.coinc_def_id == coinc.coinc_def_id
            ],
        )
    )
    (coinc_copy,) = root.appendChild(_copied_rows(realized.coinc_table, [coinc]))
    coinc_copy.nevents = len(sngls)
    # Log likelihood ratio of a known-amplitude signal in Gaussian noise,
    # as a stand-in for the pipeline's ranking statistic.
    coinc_copy.likelihood = network_snr**2 / 2

    coinc_map = root.appendChild(realized.map_table.copy())
    for sngl in sngls:
        coinc_map.appendRow(
            coinc_event_id=coinc_event_id,
            table_name=lsctables.SnglInspiralTable.tableName,
            event_id=sngl.event_id,
        )

    (coinc_inspiral,) = root.appendChild(
        _copied_rows(
            realized.coinc_inspiral_table,
            [realized.coinc_inspirals[coinc_event_id]],
        )
    )
    coinc_inspiral.instruments = sorted(sngl.ifo for sngl in sngls)
    coinc_inspiral.end = end
    coinc_inspiral.snr = network_snr
    coinc_inspiral.combined_far = coinc_inspiral.false_alarm_rate = detection.far

    root.appendChild(sngl_table.copy()).extend(sngls)

    for sngl in sngls:
        original = realized.snr_series.get(sngl.event_id)
        if original is None:
            continue
        series = lal.CutCOMPLEX8TimeSeries(original, 0, len(original.data.data))
        series.epoch = series.epoch + detection.time_offset
        series.data.data = series.data.data * detection.snr_scale
        elem = root.appendChild(
            lal.series.build_COMPLEX8TimeSeries(series, encoding="base64")
        )
        elem.appendChild(
            ligolw.Param.from_pyvalue(SNR_SERIES_EVENT_ID_PARAM, sngl.event_id)
        )
    return xmldoc, sngls, network_snr, end


def _log_uniform_far(rng: np.random.Generator, low: float, high: float) -> float:
    far = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return _as_stored(far, lsctables.CoincInspiralTable, "combined_far")


def _detections(
    rng: np.random.Generator,
    triggers: list,
    pipelines_per_source: int,
    insignificant: bool,
) -> list[_Detection]:
    """What each pipeline reports for one source; the first is exact."""
    far_range = (
        INSIGNIFICANT_FAR_RANGE_HZ if insignificant else SIGNIFICANT_FAR_RANGE_HZ
    )
    all_instruments = frozenset(sngl.ifo for sngl in triggers)
    weakest = min(triggers, key=lambda sngl: sngl.snr).ifo
    detections = [
        _Detection(all_instruments, 0.0, 1.0, _log_uniform_far(rng, *far_range))
    ]
    for _ in range(pipelines_per_source - 1):
        time_offset = float(
            np.clip(
                rng.normal(0, DUPLICATE_TIME_JITTER_S),
                -DUPLICATE_MAX_TIME_OFFSET_S,
                DUPLICATE_MAX_TIME_OFFSET_S,
            )
        )
        snr_scale = 1 + float(
            np.clip(
                rng.normal(0, DUPLICATE_SNR_SCATTER),
                -DUPLICATE_MAX_SNR_CHANGE,
                DUPLICATE_MAX_SNR_CHANGE,
            )
        )
        drop_weakest = (
            len(all_instruments) > MIN_TRIGGERS
            and rng.uniform() < DROP_WEAKEST_DETECTOR_PROBABILITY
        )
        instruments = all_instruments - {weakest} if drop_weakest else all_instruments
        far = _log_uniform_far(rng, *far_range)
        detections.append(_Detection(instruments, time_offset, snr_scale, far))
    return detections


def make_mock_events(
    count: int,
    seed: int,
    start_gps: float | None = None,
    spacing: float = DEFAULT_SPACING_S,
    pipelines_per_source: int = 1,
    insignificant_fraction: float = DEFAULT_INSIGNIFICANT_FRACTION,
    detectors: tuple[str, ...] = DETECTORS,
) -> list[MockEvent]:
    """Simulate ``count`` sources and the pipeline uploads they cause.

    Source ``i`` arrives near ``start_gps + i * spacing`` (plus a random
    sub-second part); ``start_gps=None`` means now, so only an explicit
    start makes the output a pure function of the arguments.  Each source
    yields ``pipelines_per_source`` (1 to ``len(PIPELINES)``) detections:
    the realization itself and near-duplicates within
    `DUPLICATE_MAX_TIME_OFFSET_S` of it, so that superevent grouping has
    something to group.  Events come in source order, ``count *
    pipelines_per_source`` in all.  ``detectors`` is the observing network
    (a subset of `DETECTOR_PSD_MODELS` with at least `MIN_TRIGGERS`
    detectors).

    Noise curves are computed once per process and cached; the cost is one
    bayestar-realize-coincs run per source (about 0.4 s, mostly its
    per-detector peak interpolation), near-duplicates are nearly free.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, not {count}")
    if not 1 <= pipelines_per_source <= len(PIPELINES):
        raise ValueError(
            f"pipelines_per_source must be between 1 and {len(PIPELINES)}, "
            f"not {pipelines_per_source}"
        )
    if not 0 <= insignificant_fraction <= 1:
        raise ValueError(
            f"insignificant_fraction must be in [0, 1], not {insignificant_fraction}"
        )
    detectors = tuple(detectors)
    unknown = set(detectors) - set(DETECTOR_PSD_MODELS)
    if unknown or len(set(detectors)) < MIN_TRIGGERS:
        raise ValueError(
            f"detectors must be at least {MIN_TRIGGERS} of "
            f"{sorted(DETECTOR_PSD_MODELS)}, not {detectors}"
        )
    if spacing <= 0:
        raise ValueError(f"spacing must be positive, not {spacing}")
    if start_gps is None:
        start_gps = float(int(lal.GPSTimeNow()))

    rng = np.random.default_rng(seed)
    time_jitter = min(SOURCE_TIME_JITTER_S, spacing / 2)
    arrival_times = [
        start_gps + index * spacing + rng.uniform(0, time_jitter)
        for index in range(count)
    ]

    # Noise can push a marginal source below threshold; the tool then drops
    # it and we draw a replacement for that slot.
    found = {}
    pending = list(range(count))
    for _ in range(MAX_REALIZATION_ROUNDS):
        if not pending:
            break
        drawn = {
            index: _draw_source(rng, detectors, arrival_times[index])
            for index in pending
        }
        realized = _RealizedCoincs(
            _realize(drawn, detectors, int(rng.integers(TOOL_SEED_LIMIT)))
        )
        for index in pending:
            coinc_event_id = realized.coinc_by_simulation.get(index)
            if coinc_event_id is not None:
                found[index] = (drawn[index], realized, coinc_event_id)
        pending = [index for index in pending if index not in found]
    if pending:
        raise RuntimeError(f"sources {pending} stayed below the detection threshold")

    events = []
    for index in range(count):
        source, realized, coinc_event_id = found[index]
        triggers = [
            realized.sngls[event_id]
            for event_id in realized.sngl_ids_by_coinc[coinc_event_id]
        ]
        insignificant = bool(rng.uniform() < insignificant_fraction)
        detections = _detections(rng, triggers, pipelines_per_source, insignificant)
        for pipeline, detection in zip(PIPELINES, detections):
            xmldoc, sngls, network_snr, end = _event_document(
                realized, coinc_event_id, detection
            )
            instruments = tuple(sorted(sngl.ifo for sngl in sngls))
            events.append(
                MockEvent(
                    coinc_xml=_xml_bytes(xmldoc),
                    psd_xml_gz=psd_xml_gz_for(instruments),
                    gpstime=float(end),
                    far=detection.far,
                    snr=network_snr,
                    instruments=instruments,
                    detector_snrs={sngl.ifo: float(sngl.snr) for sngl in sngls},
                    pipeline=pipeline,
                    source_index=index,
                    source=source,
                )
            )
    return events


#: The late-event scenario: every detection of a source but the last is less
#: significant (below 2/day, above the public threshold once the trials
#: factor applies); the last, uploaded late, is significant.
LATE_SCENARIO_EARLY_FAR_HZ = 3e-6
LATE_SCENARIO_LATE_FAR_HZ = 1e-12


def with_far(mock: MockEvent, far: float) -> MockEvent:
    """``mock`` with its coinc's ``combined_far`` (and ``far``) set to ``far`` Hz."""
    xmldoc = ligolw_utils.load_fileobj(io.BytesIO(mock.coinc_xml), contenthandler=SkymapContentHandler)
    for row in lsctables.CoincInspiralTable.get_table(xmldoc):
        row.combined_far = far
    return replace(mock, coinc_xml=_xml_bytes(xmldoc), far=far)


def late_significant_scenario(events: list[MockEvent]) -> tuple[list[MockEvent], list[MockEvent]]:
    """Split ``events`` (``make_mock_events`` with two or more pipelines per
    source) into (first, late): each source's last detection, made
    significant, is the late one, for upload after the first ones' clean-up
    pass; the others are made less significant. So the superevent's first
    alert is a less-significant one and its significant alert can only come
    from the event that arrives after the clean-up (the issue's lost alert)."""
    last = {mock.source_index: mock for mock in events}
    if len({mock.source_index for mock in events}) == len(events):
        raise ValueError("the late-event scenario needs two or more detections per source")
    first = [with_far(mock, LATE_SCENARIO_EARLY_FAR_HZ) for mock in events if last[mock.source_index] is not mock]
    late = [with_far(mock, LATE_SCENARIO_LATE_FAR_HZ) for mock in last.values()]
    return first, late


def mock_ranking_data_xml_gz(pipeline: str = "gstlal") -> bytes:
    """A stand-in for a gstlal ``ranking_data.xml.gz`` upload.

    Real ranking data holds the pipeline's ranking-statistic densities; the
    p_astro method used here (``alerts.science.pastro``) needs only FAR, SNR
    and template masses, so for mock events this file only has to arrive, as
    the seed's trigger for p_astro. It is a valid LIGO-LW document with a
    process row naming the mock pipeline, so nothing mistakes it for real data.
    """
    xmldoc = ligolw.Document()
    xmldoc.appendChild(ligolw.LIGO_LW())
    process_table = lsctables.ProcessTable.new()
    xmldoc.childNodes[0].appendChild(process_table)
    process = process_table.RowType()
    process.program = f"mock-{pipeline}-ranking-data"
    process.process_id = process_table.get_next_id()
    for column in process_table.validcolumns:
        name = ligolw.Column.ColumnName(column)
        if not hasattr(process, name):
            setattr(process, name, None)
    process_table.append(process)
    return _gzip_bytes(_xml_bytes(xmldoc))
