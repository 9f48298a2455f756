"""GWF frame files: the file-naming convention and a state-vector writer.

Frame files are named ``{obs}-{tag}-{gps}-{duration}.gwf`` (LIGO-T050017),
e.g. ``H-H1_llhoft-1387000000-4.gwf``; parsing the name tells which times a
file holds without opening it, so readers can skip files outside a window.

The writer exists so that tests and demos can make real GWF files locally
(no network, no archived data). It uses gwpy, which picks the first GWF
library it can import (frameCPP, FrameL, then LALFrame from lalsuite).

gwpy is imported inside the functions that need it: importing it costs about
two seconds, which a web process that merely imports this module should not
pay; workers call `preload_frame_io` at start instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FRAME_SUFFIX = ".gwf"

# obs and gps/duration never contain '-', the tag may (greedy middle group).
_FRAME_NAME_PATTERN = re.compile(
    r"^(?P<observatory>[^-]+)-(?P<frame_type>.+)"
    r"-(?P<gps_start>\d+(?:\.\d+)?)-(?P<duration>\d+(?:\.\d+)?)\.gwf$"
)

DEFAULT_STATE_VECTOR_RATE = 16
"""Samples per second of the low-latency state vectors (LIGO and Virgo)."""

STATE_VECTOR_DTYPE = np.uint32
"""Integer type the state-vector words are stored as."""


@dataclass(frozen=True)
class FrameFileName:
    """What a conventional frame file name says about its contents."""

    observatory: str
    frame_type: str
    gps_start: float
    duration: float

    @property
    def gps_end(self) -> float:
        return self.gps_start + self.duration

    def overlaps(self, start: float, end: float) -> bool:
        """Whether the file's span [gps_start, gps_end) meets [start, end)."""
        return self.gps_start < end and self.gps_end > start


def parse_frame_file_name(path: str | Path) -> FrameFileName | None:
    """Parse a ``{obs}-{tag}-{gps}-{duration}.gwf`` name; None if it is not one."""
    match = _FRAME_NAME_PATTERN.match(Path(path).name)
    if match is None:
        return None
    return FrameFileName(
        observatory=match["observatory"],
        frame_type=match["frame_type"],
        gps_start=float(match["gps_start"]),
        duration=float(match["duration"]),
    )


def frame_file_name(observatory: str, frame_type: str, gps_start: int, duration: int) -> str:
    """Build a conventional frame file name (whole seconds only)."""
    return f"{observatory}-{frame_type}-{int(gps_start)}-{int(duration)}{FRAME_SUFFIX}"


def default_frame_type(detector: str) -> str:
    """Frame type used by the writer when none is given (low-latency h(t) style)."""
    return f"{detector}_llhoft"


def state_vector_samples(
    value: int,
    gps_start: float,
    duration: float,
    sample_rate: int = DEFAULT_STATE_VECTOR_RATE,
    cleared_bits: Iterable[tuple[int, float, float]] = (),
) -> np.ndarray:
    """State-vector words equal to ``value``, with chosen bits cleared at chosen times.

    ``cleared_bits`` holds ``(bit, start, end)`` GPS intervals; every sample whose
    own interval [t, t + 1/rate) meets [start, end) has that bit cleared. This is
    how tests put a bad or injection bit just inside or just outside a window.
    """
    n_samples = _sample_count(duration, sample_rate)
    samples = np.full(n_samples, value, dtype=STATE_VECTOR_DTYPE)
    sample_times = gps_start + np.arange(n_samples) / sample_rate
    sample_period = 1.0 / sample_rate
    for bit, start, end in cleared_bits:
        hit = (sample_times < end) & (sample_times + sample_period > start)
        samples[hit] &= STATE_VECTOR_DTYPE(~(1 << bit) & np.iinfo(STATE_VECTOR_DTYPE).max)
    return samples


def write_state_vector_frame(
    path: str | Path,
    detector: str,
    channel_bits: Mapping[str, int | np.ndarray],
    gps_start: int,
    duration: int,
    sample_rate: int = DEFAULT_STATE_VECTOR_RATE,
    frame_type: str | None = None,
) -> Path:
    """Write one GWF file holding state-vector channels of one detector.

    ``channel_bits`` maps full channel names (``'H1:GDS-CALIB_STATE_VECTOR'``) to
    either one integer (the same word at every sample) or an array of
    ``duration * sample_rate`` words (see `state_vector_samples`). If ``path`` is
    an existing directory the file gets its conventional name there, with
    ``frame_type`` defaulting to ``'{detector}_llhoft'``. Returns the file path.
    """
    from gwpy.timeseries import StateVector, StateVectorDict

    n_samples = _sample_count(duration, sample_rate)
    series = StateVectorDict()
    for channel, bits in channel_bits.items():
        if not channel.startswith(f"{detector}:"):
            raise ValueError(f"channel {channel!r} does not belong to detector {detector}")
        data = np.asarray(bits, dtype=STATE_VECTOR_DTYPE)
        if data.ndim == 0:
            data = np.full(n_samples, data, dtype=STATE_VECTOR_DTYPE)
        if data.shape != (n_samples,):
            raise ValueError(
                f"{channel}: expected {n_samples} samples "
                f"({duration} s at {sample_rate} Hz), got {data.shape}"
            )
        series[channel] = StateVector(
            data, t0=gps_start, sample_rate=sample_rate, name=channel, channel=channel
        )

    target = Path(path)
    if target.is_dir():
        if gps_start != int(gps_start) or duration != int(duration):
            raise ValueError("conventional frame names need whole-second start and duration")
        observatory = detector[0]
        target = target / frame_file_name(
            observatory, frame_type or default_frame_type(detector), gps_start, duration
        )
    series.write(str(target), format="gwf")
    return target


def preload_frame_io() -> None:
    """Import gwpy's frame I/O now, e.g. when a worker starts.

    The import takes about two seconds; done here, the first candidate's
    state-vector check does not pay for it on the alert path.
    """
    import gwpy.io.gwf  # noqa: F401
    import gwpy.timeseries  # noqa: F401


def _sample_count(duration: float, sample_rate: int) -> int:
    n_samples = duration * sample_rate
    if n_samples != int(n_samples) or n_samples <= 0:
        raise ValueError(f"{duration} s at {sample_rate} Hz is not a positive whole number of samples")
    return int(n_samples)
