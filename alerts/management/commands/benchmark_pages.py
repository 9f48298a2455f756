"""Server time of the pages advocates use, at scale: the REST API's
superevent list and detail (target p95 <= 50 ms), the dashboard's list and
superevent pages (<= 150 ms) and the admin's lists and change page
(<= 300 ms); and what a dry-run preview of an Initial costs next to building
its notice.

Fills the database inside a transaction that is rolled back at the end
(bulk_create: 10,000 superevents, 100,000 events, their labels and
notices; the newest page's events get real sky-map, p_astro and plot files),
then times the pages through Django's test client (the whole server side:
URL routing, middleware, views, templates) and prints p50/p95 in ms.
"""
import datetime
import json
import statistics
import tempfile
import time

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings

from alerts import models
from alerts.store import add_file
from alerts.vocabulary import ADVOK, ADVREQ, CBC, DQOK, GCN_PRELIM_SENT, P_ASTRO_TAG, SKY_LOC_TAG

GPS_START = 1_400_000_000.0
P_ASTRO = {"BNS": 0.9, "NSBH": 0.05, "BBH": 0.03, "Terrestrial": 0.02}


class Rollback(Exception):
    pass


def uniform_skymap(order=1):
    """A small valid multi-order FITS sky map (uniform over the sky), written by ligo.skymap."""
    import io

    import numpy as np
    from astropy.table import Table
    from ligo.skymap import moc
    from ligo.skymap.io import fits

    npix = 12 * 4 ** order
    table = Table({"UNIQ": moc.nest2uniq(np.int8(order), np.arange(npix)),
                   "PROBDENSITY": np.full(npix, 1 / (4 * np.pi))})
    buffer = io.BytesIO()
    fits.write_sky_map(buffer, table, moc=True)
    return buffer.getvalue()


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--superevents", type=int, default=10_000)
        parser.add_argument("--events-per-superevent", type=int, default=10)
        parser.add_argument("--repeat", type=int, default=30)
        parser.add_argument("--queries", action="store_true", help="print each page's SQL with its time")
        parser.add_argument("--only", default="", help="time only the pages whose name contains this text")

    def handle(self, *args, **options):
        with tempfile.TemporaryDirectory() as media, override_settings(MEDIA_ROOT=media, ALLOWED_HOSTS=["*"]):
            try:
                with transaction.atomic():
                    self.run(options)
                    raise Rollback
            except Rollback:
                pass

    def run(self, options):
        superevents = self.fill(options["superevents"], options["events_per_superevent"])
        self.time_pages(superevents, options)
        self.preview_cost(superevents[-1], options["repeat"])

    def fill(self, count, per):
        """Bulk-create the superevents, events, labels and the newest page's files."""
        started = time.perf_counter()
        day = datetime.date(2026, 1, 1)
        superevents = models.Superevent.objects.bulk_create([
            models.Superevent(superevent_id=f"S{(day + datetime.timedelta(days=i // 20)):%y%m%d}{'abcdefghijklmnopqrst'[i % 20]}", t_start=GPS_START + 100 * i - 1,
                              t_0=GPS_START + 100 * i, t_end=GPS_START + 100 * i + 1, far=1e-9 * (1 + i % 7),
                              date=day + datetime.timedelta(days=i // 20), day_index=i % 20)
            for i in range(count)], batch_size=2000)
        events = models.Event.objects.bulk_create([
            models.Event(graceid=f"GBENCH{i * per + j:07d}", group=CBC, pipeline=("gstlal", "pycbc", "mbta")[j % 3],
                         gpstime=superevent.t_0 + 0.01 * j, far=1e-9 * (1 + j), snr=10.0, instruments="H1,L1,V1",
                         superevent=superevent, grouping_done=True)
            for i, superevent in enumerate(superevents) for j in range(per)], batch_size=5000)
        for i, superevent in enumerate(superevents):
            superevent.preferred_event = events[i * per]
        models.Superevent.objects.bulk_update(superevents, ["preferred_event"], batch_size=2000)
        labels = []
        for i, superevent in enumerate(superevents):
            names = [GCN_PRELIM_SENT, ADVREQ, DQOK] + ([ADVOK] if i % 3 else [])
            labels += [models.Label(superevent=superevent, name=name) for name in names]
        models.Label.objects.bulk_create(labels, batch_size=5000)
        for superevent in superevents[-30:]:
            event = superevent.preferred_event
            skymap = add_file(event, "bayestar.multiorder.fits", uniform_skymap(), tags=[SKY_LOC_TAG], announce=False)
            models.SkymapSummary.objects.create(file=skymap, area_50_deg2=100, area_90_deg2=400,
                                                distance_mean_mpc=200, distance_std_mpc=50)
            add_file(event, "bayestar.png", b"\x89PNG", tags=[SKY_LOC_TAG], announce=False)
            add_file(event, "gstlal.p_astro.json", json.dumps(P_ASTRO).encode(), tags=[P_ASTRO_TAG], announce=False)
        self.stdout.write(f"fixtures: {count} superevents, {count * per} events, {len(labels)} labels "
                          f"in {time.perf_counter() - started:.1f} s")
        with connection.cursor() as cursor:  # planner statistics, as a live database has them
            cursor.execute("ANALYZE")
        return superevents

    def time_pages(self, superevents, options):
        user = User.objects.create_superuser("bench-advocate", password="x")
        client = Client()
        client.force_login(user)
        newest = superevents[-1].superevent_id
        superevent_pk = superevents[-1].pk
        pages = {
            "API list": ("/api/superevents/", 50),
            "API list, label + FAR filter": (f"/api/superevents/?label={DQOK}&far_max=3e-9", 50),
            "API list, waiting": ("/api/superevents/?waiting=true", 50),
            "API detail": (f"/api/superevents/{newest}/", 50),
            "dashboard list": ("/", 150),
            "dashboard list, waiting only": ("/?waiting=on", 150),
            "dashboard list, label filter, page 50": (f"/?label={DQOK}&page=50", 150),
            "dashboard list rows (refresh)": ("/rows/", 150),
            "dashboard superevent page": (f"/superevents/{newest}/", 150),
            "admin superevent list": ("/admin/alerts/superevent/", 300),
            "admin event list, filtered": ("/admin/alerts/event/?pipeline=gstlal", 300),
            "admin superevent change page": (f"/admin/alerts/superevent/{superevent_pk}/change/", 300),
        }
        for name, (url, target) in pages.items():
            if options["only"].lower() not in name.lower():
                continue
            assert client.get(url).status_code == 200, url  # warm up
            times = []
            for _ in range(options["repeat"]):
                start = time.perf_counter()
                response = client.get(url)
                times.append(1000 * (time.perf_counter() - start))
                assert response.status_code == 200
            times.sort()
            if options["queries"]:
                with CaptureQueriesContext(connection) as queries:
                    client.get(url)
                for query in queries:
                    self.stdout.write(f"    {query['time']} s  {query['sql'][:150]}")
            p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
            verdict = "met" if p95 <= target else "MISSED"
            self.stdout.write(f"{name:40s} p50 {statistics.median(times):6.1f} ms   p95 {p95:6.1f} ms"
                              f"   (target <= {target} ms: {verdict})")

    def preview_cost(self, superevent, repeat):
        """decisions.preview of an Initial against what a send of it builds:
        the chosen files, the notice's content and payloads, and the circular
        (a send then records and delivers them; a preview stops there)."""
        from alerts import circulars, decisions, delivery

        decisions.chosen_files(superevent)  # the preferred event's products copied once, as a send would
        preview, build = [], []
        for _ in range(repeat):
            start = time.perf_counter()
            decisions.preview(superevent, "INITIAL")
            preview.append(1000 * (time.perf_counter() - start))
            start = time.perf_counter()
            chosen = decisions.chosen_files(superevent)
            content = decisions._content(superevent, "INITIAL", chosen, 1)
            for build_payload in delivery.BUILDERS.values():
                build_payload(content)
            circulars.render_circular("INITIAL", circulars.circular_context(superevent, "INITIAL"))
            build.append(1000 * (time.perf_counter() - start))
        self.stdout.write(f"{'Initial preview':40s} p50 {statistics.median(preview):6.1f} ms; what a send builds "
                          f"p50 {statistics.median(build):6.1f} ms (files, notice, payloads, circular)")
