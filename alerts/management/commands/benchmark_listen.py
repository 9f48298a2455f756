"""Messages per second applied through ``manage.py listen`` and the latency of
a file fetched from a GraceDB-compatible server; the work is in
benchmarks/listen_throughput.py. Needs PostgreSQL."""
from django.core.management.base import BaseCommand, CommandError

from benchmarks import listen_throughput as bench
from benchmarks.superevent_throughput import BenchmarkError


class Command(BaseCommand):
    help = ("Benchmark the IGWN Alert listener (label/log messages/s applied by `listen --workers N`, "
            f"target >= {bench.TARGET_PER_S:.0f}/s with {bench.TARGET_WORKERS}) and a file fetch from a second "
            "instance of this server acting as GraceDB.")

    def add_arguments(self, parser):
        parser.add_argument("--messages", type=int, default=bench.DEFAULT_MESSAGES, help="messages per run")
        parser.add_argument("--events", type=int, default=bench.DEFAULT_EVENTS, help="events they name")
        parser.add_argument("--workers", default=",".join(map(str, bench.DEFAULT_WORKERS)),
                            help="comma-separated worker counts of `listen`, e.g. 1,2")
        parser.add_argument("--repeats", type=int, default=bench.DEFAULT_REPEATS, help="runs per worker count")
        parser.add_argument("--fetches", type=int, default=bench.DEFAULT_FETCHES, help="timed file fetches")
        parser.add_argument("--bench-db", default=bench.DEFAULT_BENCH_DB + "_listen",
                            help="name of the scratch PostgreSQL database (created and dropped)")

    def handle(self, *args, messages, events, workers, repeats, fetches, bench_db, **options):
        try:
            counts = [int(count) for count in workers.split(",") if count.strip()]
        except ValueError:
            raise CommandError(f"--workers must be comma-separated integers, got {workers!r}") from None
        try:
            bench.run_benchmark(messages=messages, events=events, workers=counts, repeats=repeats,
                                fetches=fetches, bench_db=bench_db,
                                write=lambda line: (self.stdout.write(line), self.stdout.flush()))
        except BenchmarkError as error:
            raise CommandError(str(error)) from None
