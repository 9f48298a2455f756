"""Benchmark: the BAYESTAR step against a direct ligo.skymap localization."""
from django.core.management.base import BaseCommand, CommandError

from benchmarks.alert_latency import BenchmarkError, scratch_database
from benchmarks.bayestar_overhead import run

DEFAULT_BENCH_DB = "orchestrator_bayestar"


class Command(BaseCommand):
    help = ("Time the orchestrator's BAYESTAR step against a direct ligo.skymap run on the same events "
            "(PostgreSQL: a scratch database beside DATABASE_URL's, created and dropped).")

    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, default=3)
        parser.add_argument("--repeats", type=int, default=2, help="runs of each kind per event")
        parser.add_argument("--seed", type=int, default=11)
        parser.add_argument("--bench-db", default=DEFAULT_BENCH_DB,
                            help="name of the scratch PostgreSQL database (created and dropped)")

    def handle(self, *args, events, repeats, seed, bench_db, **options):
        try:
            with scratch_database(bench_db, False, self.stdout.write):
                run(count=events, repeats=repeats, seed=seed, out=self.stdout.write)
        except BenchmarkError as error:
            raise CommandError(str(error)) from None
