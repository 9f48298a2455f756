"""Upload to Preliminary on a real gstlal coinc.xml, next to BAYESTAR's time
of the same run (benchmarks/alert_path.py does the work)."""
import os

from django.core.management.base import BaseCommand, CommandError

from benchmarks import alert_latency
from benchmarks import alert_path as bench


class Command(BaseCommand):
    help = ("Upload a real gstlal coinc.xml (ligo.skymap's G211117) with its PSD and time upload -> Preliminary "
            "notice against BAYESTAR's time, for a first event and for one after the clean-up pass; real qcluster "
            "on a scratch PostgreSQL database.")

    def add_arguments(self, parser):
        parser.add_argument("--rounds", type=int, default=2, help="rounds of each case (default %(default)s)")
        parser.add_argument("--case", choices=bench.CASES, action="append",
                            help="measure only this case (repeatable; default both)")
        parser.add_argument("--redis", default=os.environ.get("REDIS_URL", ""), metavar="URL",
                            help="Redis broker URL (default: REDIS_URL; without it the ORM broker)")
        parser.add_argument("--workers", type=int, default=alert_latency.DEFAULT_WORKERS, help="qcluster workers")
        parser.add_argument("--bench-db", default="orchestrator_alert_path",
                            help="name of the scratch PostgreSQL database (created and dropped)")
        parser.add_argument("--keep", action="store_true", help="keep the scratch database and directory")

    def handle(self, *args, **options):
        try:
            ok = bench.run_benchmark(rounds=options["rounds"], cases=tuple(options["case"] or bench.CASES),
                                     redis_url=options["redis"], workers=options["workers"],
                                     bench_db=options["bench_db"], keep=options["keep"], write=self.stdout.write)
        except alert_latency.BenchmarkError as error:
            raise CommandError(str(error)) from None
        if not ok:
            raise CommandError("target missed (see above)", returncode=1)
