"""Replay realistic mock CBC events through the upload path (demo and load).

Sources are simulated with ligo.skymap's tools (see
``alerts.mockdata.simulation``) and uploaded as MDC events the way a pipeline
does: the coinc.xml, then the psd.xml.gz (and, for the pipelines whose p_astro
is computed from it, a ranking_data.xml.gz stand-in).

``--late-after S`` replays the late-event case: each source's last
detection is held back, made significant, and uploaded S seconds after the
others (which are made less significant), so with S beyond the clean-up
delay it joins a superevent whose clean-up pass is over.
"""
import time

import lal
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from alerts.events import PSD_FILENAME, RANKING_DATA_FILENAME, UploadError, create_event
from alerts.mockdata.simulation import (PIPELINES, late_significant_scenario, make_mock_events,
                                        mock_ranking_data_xml_gz)
from alerts import vocabulary as v
from alerts.config import policy

# Seconds between simulated sources, so that each forms its own superevent.
SOURCE_SPACING_S = 20.0
# Sources simulated per batch, so the progress bar moves while simulating.
SIMULATION_BATCH = 5


class Command(BaseCommand):
    help = "Simulate COUNT mock CBC sources and upload their events as MDC events."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=10, help="number of simulated sources")
        parser.add_argument("--rate", type=float, default=0.0,
                            help="uploads per second (default: as fast as possible)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--pipelines", type=int, default=2,
                            help=f"detections per source, 1 to {len(PIPELINES)} pipelines")
        parser.add_argument("--start-gps", type=float, default=None,
                            help="GPS time of the first source (default: now)")
        parser.add_argument("--search", default=v.MDC, help="search of the uploads (default MDC)")
        parser.add_argument("--late-after", type=float, default=None, metavar="SECONDS",
                            help="hold each source's last detection back, make it significant (the others "
                                 "less significant) and upload it SECONDS after the others")

    def handle(self, *args, count, rate, seed, pipelines, start_gps, search, late_after, **options):
        if count < 1:
            raise CommandError("--count must be at least 1", returncode=2)
        if not 1 <= pipelines <= len(PIPELINES):
            raise CommandError(f"--pipelines must be between 1 and {len(PIPELINES)}", returncode=2)
        if late_after is not None and (pipelines < 2 or not late_after >= 0):
            raise CommandError("--late-after needs --pipelines 2 or more and a delay >= 0", returncode=2)
        if start_gps is None:
            start_gps = float(int(lal.GPSTimeNow()))
        uploaded, held_back = [], []
        with tqdm(total=count * pipelines, desc="replay", unit="event", disable=options["verbosity"] == 0) as bar:
            for batch_start in range(0, count, SIMULATION_BATCH):
                size = min(SIMULATION_BATCH, count - batch_start)
                batch_gps = start_gps + batch_start * SOURCE_SPACING_S
                events = make_mock_events(size, seed=seed * 1000 + batch_start, start_gps=batch_gps,
                                          spacing=SOURCE_SPACING_S, pipelines_per_source=pipelines)
                if late_after is not None:
                    events, late_events = late_significant_scenario(events)
                    held_back.extend(late_events)
                for mock in events:
                    uploaded.append(self.upload(mock, search, rate))
                    bar.update(1)
            if held_back:
                time.sleep(late_after)
                for mock in held_back:
                    uploaded.append(self.upload(mock, search, rate))
                    bar.update(1)
        self.stdout.write(f"uploaded {len(uploaded)} events: {', '.join(uploaded[:5])}"
                          + (" ..." if len(uploaded) > 5 else ""))

    @staticmethod
    def upload(mock, search, rate):
        """Upload one mock detection as a pipeline would; returns its graceid."""
        started = time.monotonic()
        files = [(PSD_FILENAME, mock.psd_xml_gz)]
        if mock.pipeline in policy()["PASTRO_FROM_RANKING_DATA"]:
            files.append((RANKING_DATA_FILENAME, mock_ranking_data_xml_gz(mock.pipeline)))
        try:
            event = create_event(group=v.CBC, pipeline=mock.pipeline, search=search, coinc=mock.coinc_xml,
                                 files=files)
        except UploadError as error:
            raise CommandError(f"mock upload rejected: {error}") from None
        if rate > 0:
            time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - started)))
        return event.graceid
