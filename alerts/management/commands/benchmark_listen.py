"""Messages per second through ``manage.py listen`` and the latency of a
GraceDB file fetch (benchmarks/listen_throughput.py); needs PostgreSQL."""
from django.core.management.base import BaseCommand

from benchmarks import listen_throughput as bench


class Command(BaseCommand):
    help = "Benchmark the IGWN Alert listener (label/log messages/s) and a GraceDB file fetch."

    def add_arguments(self, parser):
        parser.add_argument("--messages", type=int, default=bench.DEFAULT_MESSAGES)
        parser.add_argument("--events", type=int, default=bench.DEFAULT_EVENTS)
        parser.add_argument("--workers", type=int, default=bench.DEFAULT_WORKERS, help="listener processes")

    def handle(self, *args, messages, events, workers, **options):
        bench.run_benchmark(messages=messages, events=events, workers=workers,
                            out=lambda line: (self.stdout.write(line), self.stdout.flush()))
