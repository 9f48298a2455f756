"""Time of creating an event through the GraceDB-compatible surface vs a
native upload of the same coinc.xml; the work is in benchmarks/gracedb_upload.py."""
from django.core.management.base import BaseCommand, CommandError

from benchmarks import gracedb_upload as bench
from benchmarks.superevent_throughput import BenchmarkError


class Command(BaseCommand):
    help = ("Benchmark event creation: POST /gracedb/api/events/ (as ligo-gracedb sends it) against the native "
            "POST /api/events/, same coinc.xml documents, alternating blocks; prints both and their ratio "
            f"(target <= {bench.TARGET_RATIO}).")

    def add_arguments(self, parser):
        parser.add_argument("--uploads", type=int, default=bench.DEFAULT_UPLOADS, help="uploads each way")
        parser.add_argument("--block", type=int, default=bench.DEFAULT_BLOCK,
                            help="uploads of one way before switching to the other")
        parser.add_argument("--pool", type=int, default=bench.DEFAULT_POOL,
                            help="simulated coinc.xml documents the uploads are copied from")
        parser.add_argument("--seed", type=int, default=bench.DEFAULT_SEED)
        parser.add_argument("--bench-db", default=bench.DEFAULT_BENCH_DB + "_gracedb",
                            help="name of the scratch PostgreSQL database (created and dropped)")
        parser.add_argument("--keep-db", action="store_true", help="leave the scratch database behind")

    def handle(self, *args, **options):
        try:
            bench.run_benchmark(uploads=options["uploads"], block=options["block"], pool=options["pool"],
                                seed=options["seed"], bench_db=options["bench_db"],
                                keep_db=options["keep_db"], write=self.stdout.write)
        except BenchmarkError as error:
            raise CommandError(str(error)) from None
