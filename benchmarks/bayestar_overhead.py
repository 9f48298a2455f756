"""What the orchestrator's BAYESTAR step costs over a direct ligo.skymap run.

For the same mock events, alternately (the order flips on every repeat, so
neither kind always runs first, e.g. with a cold cache):
- direct: what ``bayestar-localize-coincs`` does for one event: read the
  coinc.xml and PSD with ``ligo.skymap.io.events``, ``bayestar.localize``
  with the same waveform and low-frequency cutoff, write the multi-order FITS;
- step: ``alerts.annotations.localize_event`` on an uploaded event: files
  read from storage, input digest, BAYESTAR, FITS, summary statistics,
  products stored, SKYMAP_READY labelled (tasks it queues, the flattened
  map and the plot, which follow it off the alert path, are only queued);
  forced, as a re-localization is, since the step otherwise runs only once
  per input.

Prints both medians and their ratio (target: at most 1.05).
"""
import io
import statistics
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.test.utils import override_settings

from benchmarks.machine import machine_line

WAVEFORM = "IMRPhenomD"
DIRECT, STEP = "direct", "step"


def direct_localization(coinc_path, psd_path, f_low):
    from ligo.skymap.bayestar import localize
    from ligo.skymap.io import events, fits

    started = time.perf_counter()
    source = events.ligolw.open(str(coinc_path), psd_file=str(psd_path))
    (event,) = source.values()
    sky_map = localize(event, WAVEFORM, f_low)
    fits.write_sky_map(io.BytesIO(), sky_map)
    return time.perf_counter() - started


def orchestrator_step(event_pk):
    from alerts.annotations import localize_event
    from alerts.models import StepRun

    started = time.perf_counter()
    localize_event(event_pk, (), True)
    elapsed = time.perf_counter() - started
    run = StepRun.objects.filter(event_id=event_pk, step="bayestar").latest("started")
    if run.status != "succeeded":
        raise RuntimeError(f"BAYESTAR step failed: {run.error}")
    return elapsed


def run(count=3, repeats=2, seed=11, out=print):
    from alerts.events import PSD_FILENAME, create_event
    from alerts.models import Event
    from alerts.science.simulation import F_LOW_HZ, make_mock_events

    out(machine_line())
    mocks = make_mock_events(count, seed=seed, start_gps=1_300_000_000)
    direct, step = [], []
    queued = {**settings.ORCHESTRATOR, "TASKS_INLINE": False}
    with tempfile.TemporaryDirectory() as scratch, override_settings(ORCHESTRATOR=queued,
                                                                      MEDIA_ROOT=Path(scratch) / "media"):
        for index, mock in enumerate(mocks):
            coinc_path, psd_path = Path(scratch) / f"coinc{index}.xml", Path(scratch) / f"psd{index}.xml.gz"
            coinc_path.write_bytes(mock.coinc_xml)
            psd_path.write_bytes(mock.psd_xml_gz)
            event = create_event(group="CBC", pipeline="gstlal", search="AllSky", category="test",
                                 coinc=mock.coinc_xml, files=[(PSD_FILENAME, mock.psd_xml_gz)])
            try:
                for repeat in range(repeats):
                    direct_first = (index * repeats + repeat) % 2 == 0
                    for kind in (DIRECT, STEP) if direct_first else (STEP, DIRECT):
                        if kind == DIRECT:
                            direct.append(direct_localization(coinc_path, psd_path, F_LOW_HZ))
                        else:
                            step.append(orchestrator_step(event.pk))
            finally:
                Event.objects.filter(pk=event.pk).delete()
    direct_median, step_median = statistics.median(direct), statistics.median(step)
    out(f"{'':24}{'runs':>6}{'median s':>10}{'min s':>8}{'max s':>8}")
    out(f"{'direct ligo.skymap':24}{len(direct):>6}{direct_median:>10.2f}{min(direct):>8.2f}{max(direct):>8.2f}")
    out(f"{'orchestrator step':24}{len(step):>6}{step_median:>10.2f}{min(step):>8.2f}{max(step):>8.2f}")
    ratio = step_median / direct_median
    out(f"ratio step/direct: {ratio:.3f} (target <= 1.05): {'ok' if ratio <= 1.05 else 'MISSED'}")
    return ratio
