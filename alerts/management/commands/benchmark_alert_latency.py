"""Latency from the last needed input to the Preliminary notice in the
outbox, and precision of delayed tasks, against a real qcluster.

The work is done by benchmarks/alert_latency.py; this command only reads
the options. It needs PostgreSQL (DATABASE_URL) and uses a scratch database
beside the configured one, which it creates and drops.
"""
import os

from django.core.management.base import BaseCommand, CommandError

from benchmarks import alert_latency as bench


class Command(BaseCommand):
    help = ("Benchmark the alert path (last input -> Preliminary notice in the outbox, ORCHESTRATOR_TIMEOUT_S=0) "
            "and the precision of delayed tasks, with a real qcluster on a scratch PostgreSQL database.")

    def add_arguments(self, parser):
        parser.add_argument("--superevents", type=int, default=bench.DEFAULT_SUPEREVENTS,
                            help="superevents measured (default %(default)s)")
        parser.add_argument("--warmup", type=int, default=bench.DEFAULT_WARMUP,
                            help="superevents run first and not counted (default %(default)s)")
        parser.add_argument("--last-input", choices=bench.LAST_INPUTS, default=bench.LAST_INPUTS[0],
                            help="what completes the event: the pipeline's p_astro.json upload (default), "
                                 "the PASTRO_READY label, or the upload of an already annotated event")
        parser.add_argument("--settle", type=float, default=bench.DEFAULT_SETTLE_S,
                            help="seconds between the orchestrator starting to wait and the last input")
        parser.add_argument("--probes", type=int, default=bench.DEFAULT_PROBES,
                            help="delayed tasks whose lateness is measured (default %(default)s)")
        parser.add_argument("--schedules", type=int, default=bench.DEFAULT_SCHEDULES,
                            help="django-q2 ONCE schedules measured for comparison (default %(default)s)")
        parser.add_argument("--redis", default=os.environ.get("REDIS_URL", ""), metavar="URL",
                            help="Redis broker URL (default: REDIS_URL; without it the ORM broker)")
        parser.add_argument("--orm", action="store_true", help="use the ORM broker even if REDIS_URL is set")
        parser.add_argument("--workers", type=int, default=bench.DEFAULT_WORKERS, help="qcluster workers")
        parser.add_argument("--bench-db", default=bench.DEFAULT_BENCH_DB,
                            help="name of the scratch PostgreSQL database (created and dropped)")
        parser.add_argument("--keep", action="store_true",
                            help="keep the scratch database and the temporary directory (qcluster log, outbox)")
        parser.add_argument("--seed", type=int, default=2024)
        parser.add_argument("--frames", action="store_true",
                            help="write state-vector GWF frames around each event, so detchar reads real frames")

    def handle(self, *args, **options):
        try:
            ok = bench.run_benchmark(
                superevents=options["superevents"], warmup=options["warmup"], probes=options["probes"],
                schedules=options["schedules"], last_input=options["last_input"], settle_s=options["settle"],
                redis_url="" if options["orm"] else options["redis"], workers=options["workers"],
                bench_db=options["bench_db"], keep=options["keep"], seed=options["seed"],
                frames=options["frames"], write=self.stdout.write,
            )
        except bench.BenchmarkError as error:
            raise CommandError(str(error)) from None
        if not ok:
            raise CommandError("targets missed (see above)", returncode=1)
