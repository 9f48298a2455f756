"""Detector state-vector checks around a candidate (labels DQOK / DQV / INJ).

Each detector writes, alongside its strain data, integer "state vector"
channels whose bits say whether the data are fit for analysis. Bits are active
high: a set bit means good. A cleared *injection* bit means a hardware
injection (a simulated signal driven into the mirrors) was present: that is
flagged as INJ and is not a data-quality veto. Any other cleared bit makes the
data bad and vetoes the candidate (DQV).

Missing data (no frame file, channel absent, or the window not fully covered)
makes the affected bits "unknown"; unknown never vetoes. The overall verdict is

- ``'DQV'``  if any non-injection bit is bad in an active detector;
- ``'DQOK'`` if every non-injection bit of every active detector was checked
  and found good;
- ``None``   otherwise (some or all data unknown, or the check was skipped):
  no data-quality label is applied, and the rows say what was missing.

The INJ flag (`DetcharResult.injection`) is reported separately; a candidate
can be both vetoed and injected.

Bit definitions follow the LIGO/Virgo public alert user guide: LIGO
``GDS-CALIB_STATE_VECTOR`` bits 0 (h(t) OK), 1 (observation intent) and 5-8
(no stochastic/CBC/burst/detchar hardware injection); Virgo
``DQ_ANALYSIS_STATE_VECTOR`` the same plus bit 10 (good data quality, CAT1);
LIGO ``DMT-DQ_VECTOR`` bits 1-2 (no OMC DCPD ADC overflow, no ETMY ESD DAC
overflow).

Pure module: takes plain values and paths, returns a result object.
"""

from __future__ import annotations

import glob
import html
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alerts import vocabulary as v

from .frames import parse_frame_file_name

# -- definitions ---------------------------------------------------------------

LABEL_DQOK, LABEL_DQV, LABEL_INJ = v.DQOK, v.DQV, v.INJ

STATE_GOOD = "good"
STATE_BAD = "bad"
STATE_UNKNOWN = "unknown"

KIND_QUALITY = "quality"
KIND_INJECTION = "injection"

DETECTOR_PLACEHOLDER = "{detector}"

DEFAULT_PAD_BEFORE_CBC = 2.0
DEFAULT_PAD_AFTER_CBC = 2.0
DEFAULT_PAD_BEFORE_BURST = 1.5
DEFAULT_PAD_AFTER_BURST = 1.5

TIME_TOLERANCE = 1e-6
"""Seconds; absorbs float rounding of GPS times (~1e-7 s near 1e9)."""

INJECTION_BITS = {
    5: "NO_STOCH_HW_INJ",
    6: "NO_CBC_HW_INJ",
    7: "NO_BURST_HW_INJ",
    8: "NO_DETCHAR_HW_INJ",
}
"""Bits that are low while a hardware injection is present (INJ, not a veto)."""

INJECTION_BIT_NAMES = frozenset(INJECTION_BITS.values())

LIGO_CALIB_STATE_BITS = {
    0: "HOFT_OK",
    1: "OBSERVATION_INTENT",
    **INJECTION_BITS,
}
"""Bits of ``{ifo}:GDS-CALIB_STATE_VECTOR`` (LIGO h(t) state)."""

VIRGO_ANALYSIS_STATE_BITS = {
    **LIGO_CALIB_STATE_BITS,
    10: "GOOD_DATA_QUALITY_CAT1",
}
"""Bits of ``V1:DQ_ANALYSIS_STATE_VECTOR``."""

LIGO_DMT_DQ_BITS = {
    1: "NO_OMC_DCPD_ADC_OVERFLOW",
    2: "NO_ETMY_ESD_DAC_OVERFLOW",
}
"""Bits of ``{ifo}:DMT-DQ_VECTOR`` (LIGO online data-quality monitors)."""


def _ligo_channels(ifo: str) -> dict[str, dict[int, str]]:
    return {
        f"{ifo}:GDS-CALIB_STATE_VECTOR": LIGO_CALIB_STATE_BITS,
        f"{ifo}:DMT-DQ_VECTOR": LIGO_DMT_DQ_BITS,
    }


DETECTOR_CHANNELS: dict[str, dict[str, dict[int, str]]] = {
    "H1": _ligo_channels("H1"),
    "L1": _ligo_channels("L1"),
    "V1": {"V1:DQ_ANALYSIS_STATE_VECTOR": VIRGO_ANALYSIS_STATE_BITS},
}
"""Detector -> channel -> {bit number: bit name}; pass another mapping to
`check_vectors` to change the policy."""


def good_state_value(bits: Mapping[int, str]) -> int:
    """The state-vector word with every defined bit set (all good, no injection)."""
    value = 0
    for bit in bits:
        value |= 1 << bit
    return value


def is_injection_bit(name: str) -> bool:
    return name in INJECTION_BIT_NAMES


# -- result --------------------------------------------------------------------


@dataclass(frozen=True)
class BitCheck:
    """One row of the table: the state of one bit of one channel over the window.

    ``bad_intervals`` are the GPS spans of the samples in the window where the
    bit was low; ``reason`` says why the state is unknown.
    """

    detector: str
    channel: str
    bit: int
    name: str
    kind: str
    state: str
    bad_intervals: tuple[tuple[float, float], ...] = ()
    reason: str | None = None

    def as_dict(self) -> dict:
        return {
            "detector": self.detector,
            "channel": self.channel,
            "bit": self.bit,
            "name": self.name,
            "kind": self.kind,
            "state": self.state,
            "bad_intervals": [[start, end] for start, end in self.bad_intervals],
            "reason": self.reason,
        }


@dataclass(frozen=True)
class DetcharResult:
    """Outcome of `check_vectors`: verdict, INJ flag and the per-bit rows."""

    instruments: tuple[str, ...]
    window_start: float
    window_end: float
    rows: tuple[BitCheck, ...] = ()
    skipped_reason: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def skipped(self) -> bool:
        return self.skipped_reason is not None

    @property
    def bad_rows(self) -> tuple[BitCheck, ...]:
        """Data-quality bits that were low: these veto the candidate."""
        return tuple(r for r in self.rows if r.kind == KIND_QUALITY and r.state == STATE_BAD)

    @property
    def injection_rows(self) -> tuple[BitCheck, ...]:
        """Injection bits that were low: a hardware injection was present."""
        return tuple(r for r in self.rows if r.kind == KIND_INJECTION and r.state == STATE_BAD)

    @property
    def unknown_rows(self) -> tuple[BitCheck, ...]:
        return tuple(r for r in self.rows if r.state == STATE_UNKNOWN)

    @property
    def verdict(self) -> str | None:
        """'DQV', 'DQOK', or None when unknown or skipped (see module docstring)."""
        if self.skipped:
            return None
        if self.bad_rows:
            return LABEL_DQV
        quality_rows = [r for r in self.rows if r.kind == KIND_QUALITY]
        if quality_rows and all(r.state == STATE_GOOD for r in quality_rows):
            return LABEL_DQOK
        return None

    @property
    def vetoed(self) -> bool:
        return self.verdict == LABEL_DQV

    @property
    def injection(self) -> bool:
        """True if a hardware injection was present in an active detector."""
        return bool(self.injection_rows)

    @property
    def labels(self) -> tuple[str, ...]:
        """Labels to apply: the verdict (if any) then INJ (if flagged)."""
        labels = [self.verdict] if self.verdict else []
        if self.injection:
            labels.append(LABEL_INJ)
        return tuple(labels)

    def summary(self) -> str:
        """One line for a log message."""
        window = f"[{self.window_start:.3f}, {self.window_end:.3f})"
        if self.skipped:
            return f"Detector state check skipped: {self.skipped_reason}"
        detectors = ",".join(self.instruments) or "no detector"
        parts = [f"Detector state vectors over {window} for {detectors}: verdict {self.verdict or 'unknown'}"]
        if self.bad_rows:
            bad = ", ".join(f"{r.channel} {r.name}" for r in self.bad_rows)
            parts.append(f"bad: {bad}")
        if self.injection:
            injected = ", ".join(f"{r.channel} {r.name}" for r in self.injection_rows)
            parts.append(f"hardware injection: {injected}")
        if self.unknown_rows:
            unknown_channels = sorted({r.channel for r in self.unknown_rows})
            parts.append("unknown (not a veto): " + ", ".join(unknown_channels))
        return "; ".join(parts)

    def as_text_table(self) -> str:
        """Plain-text table (summary line, then one row per bit)."""
        header = ("detector", "channel", "bit", "name", "state")
        body = [(r.detector, r.channel, str(r.bit), r.name, _state_text(r)) for r in self.rows]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        lines = [self.summary(), ""] if body else [self.summary()]
        for row in [header, *body] if body else []:
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        lines.extend(self.notes)
        return "\n".join(lines)

    def as_html_table(self) -> str:
        """HTML table for a log message (summary paragraph, then the rows)."""
        parts = [f"<p>{html.escape(self.summary())}</p>"]
        if self.rows:
            parts.append("<table><tr><th>detector</th><th>channel</th><th>bit</th>"
                         "<th>name</th><th>state</th></tr>")
            for r in self.rows:
                cells = (r.detector, r.channel, str(r.bit), r.name, _state_text(r))
                parts.append(
                    f'<tr class="{html.escape(r.state)}">'
                    + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                    + "</tr>"
                )
            parts.append("</table>")
        parts.extend(f"<p>{html.escape(note)}</p>" for note in self.notes)
        return "".join(parts)

    def as_report_dict(self) -> dict:
        """JSON-serialisable record for the data-quality report file."""
        return {
            "verdict": self.verdict,
            "injection": self.injection,
            "labels": list(self.labels),
            "instruments": list(self.instruments),
            "window": {"start": self.window_start, "end": self.window_end},
            "skipped_reason": self.skipped_reason,
            "checks": [r.as_dict() for r in self.rows],
            "notes": list(self.notes),
        }


def _state_text(row: BitCheck) -> str:
    if row.state == STATE_BAD and row.kind == KIND_INJECTION:
        return "bad (injection)"
    if row.state == STATE_UNKNOWN and row.reason:
        return f"unknown ({row.reason})"
    return row.state


# -- the check -----------------------------------------------------------------


def check_vectors(
    instruments: str | Iterable[str],
    t_start: float,
    t_end: float,
    frame_glob: str,
    pad_before: float = DEFAULT_PAD_BEFORE_CBC,
    pad_after: float = DEFAULT_PAD_AFTER_CBC,
    now_gps: float | None = None,
    *,
    channels: Mapping[str, Mapping[str, Mapping[int, str]]] = DETECTOR_CHANNELS,
) -> DetcharResult:
    """Check the state-vector bits of the active detectors around a candidate.

    ``instruments`` are the active detectors ('H1,L1' or ['H1', 'L1']).
    ``frame_glob`` is a glob pattern with a ``{detector}`` placeholder
    ('/data/{detector}/*.gwf'). Each bit is good only if it is set at every
    sample meeting [t_start - pad_before, t_end + pad_after). If ``now_gps`` is
    given and that window ends in the future (early-warning candidates), the
    check is skipped rather than reported unknown.
    """
    active = _parse_instruments(instruments)
    window_start = float(t_start) - float(pad_before)
    window_end = float(t_end) + float(pad_after)
    if now_gps is not None and window_end > now_gps:
        return DetcharResult(
            instruments=active,
            window_start=window_start,
            window_end=window_end,
            skipped_reason=(
                f"window ends at GPS {window_end:.3f}, after now ({float(now_gps):.3f}): "
                "data not yet available (early-warning candidate)"
            ),
        )

    rows: list[BitCheck] = []
    notes: list[str] = []
    for detector in active:
        detector_channels = channels.get(detector)
        if not detector_channels:
            notes.append(f"{detector}: no state-vector channels defined, not checked")
            continue
        frames = _find_frames(frame_glob, detector, window_start, window_end)
        for channel, bits in detector_channels.items():
            words, sample_times, sample_period, reason = _read_window(
                frames, frame_glob, detector, channel, window_start, window_end
            )
            for bit, name in sorted(bits.items()):
                kind = KIND_INJECTION if is_injection_bit(name) else KIND_QUALITY
                if words is None:
                    rows.append(BitCheck(detector, channel, bit, name, kind, STATE_UNKNOWN, reason=reason))
                    continue
                low = (words >> bit) & 1 == 0
                intervals = _runs_to_intervals(low, sample_times, sample_period)
                state = STATE_BAD if intervals else STATE_GOOD
                rows.append(BitCheck(detector, channel, bit, name, kind, state, bad_intervals=intervals))

    return DetcharResult(
        instruments=active,
        window_start=window_start,
        window_end=window_end,
        rows=tuple(rows),
        notes=tuple(notes),
    )


def _parse_instruments(instruments: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(instruments, str):
        instruments = instruments.split(",")
    return tuple(dict.fromkeys(name.strip() for name in instruments if name.strip()))


def _find_frames(frame_glob: str, detector: str, window_start: float, window_end: float) -> list[Path]:
    """Frame files of this detector that may hold data in the read range.

    Files with conventional names are kept only if their span meets the range;
    files whose names cannot be parsed are kept (they are read to find out).
    """
    read_start, read_end = _read_range(window_start, window_end)
    pattern = frame_glob.replace(DETECTOR_PLACEHOLDER, detector)
    selected = []
    for path in sorted(glob.glob(pattern)):
        described = parse_frame_file_name(path)
        if described is None or described.overlaps(read_start, read_end):
            selected.append(Path(path))
    return selected


def _read_range(window_start: float, window_end: float) -> tuple[int, int]:
    """Whole seconds around the window.

    Readers round a start time up to the next sample, which would drop a
    sample that straddles the window edge; reading whole seconds and selecting
    samples here avoids that. Frames are whole-second aligned in practice; if
    they were not, a window covered only to the fraction of a second would be
    reported unknown (never a false veto).
    """
    return math.floor(window_start + TIME_TOLERANCE), math.ceil(window_end - TIME_TOLERANCE)


def _read_window(
    frames: list[Path],
    frame_glob: str,
    detector: str,
    channel: str,
    window_start: float,
    window_end: float,
) -> tuple[np.ndarray | None, np.ndarray | None, float, str | None]:
    """Words of ``channel`` at the samples meeting the window, or a reason why not.

    Files are grouped by frame type (the tag of the name) so that several
    frame types matched by one glob are never mixed in one read; the first
    group holding the channel and covering the window is used.
    """
    if not frames:
        pattern = frame_glob.replace(DETECTOR_PLACEHOLDER, detector)
        return None, None, 0.0, f"no frame file matching {pattern} near the window"
    groups: dict[str | None, list[Path]] = {}
    for path in frames:
        described = parse_frame_file_name(path)
        groups.setdefault(described.frame_type if described else None, []).append(path)

    reason = f"channel {channel} not found in frames"
    for paths in groups.values():
        holding = [p for p in paths if channel in _channel_names(p)]
        if not holding:
            continue
        words, times, period, reason = _read_channel(holding, channel, window_start, window_end)
        if words is not None:
            return words, times, period, None
    return None, None, 0.0, reason


def _channel_names(path: Path) -> frozenset[str]:
    from gwpy.io.gwf import get_channel_names

    try:
        return frozenset(get_channel_names(str(path)))
    except (OSError, RuntimeError, ValueError):
        return frozenset()


def _read_channel(
    paths: list[Path], channel: str, window_start: float, window_end: float
) -> tuple[np.ndarray | None, np.ndarray | None, float, str | None]:
    from gwpy.timeseries import StateVector

    read_start, read_end = _read_range(window_start, window_end)
    try:
        # gwpy raises ValueError unless the data cover all of [start, end),
        # and when contiguous files leave a gap.
        series = StateVector.read(
            [str(p) for p in paths], channel, start=read_start, end=read_end, format="gwf"
        )
    except (OSError, RuntimeError, ValueError) as exc:
        return None, None, 0.0, f"window not covered by frames ({_first_line(exc)})"

    sample_period = float(series.dt.value)
    times = series.times.value
    in_window = (times < window_end - TIME_TOLERANCE) & (
        times + sample_period > window_start + TIME_TOLERANCE
    )
    words = np.asarray(series.value)[in_window].astype(np.int64)
    return words, times[in_window], sample_period, None


def _runs_to_intervals(
    low: np.ndarray, sample_times: np.ndarray, sample_period: float
) -> tuple[tuple[float, float], ...]:
    """GPS spans of the consecutive runs of samples where ``low`` is true."""
    if not low.any():
        return ()
    edges = np.diff(np.concatenate(([0], low.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)  # exclusive
    return tuple(
        (float(sample_times[first]), float(sample_times[last - 1] + sample_period))
        for first, last in zip(starts, ends)
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
