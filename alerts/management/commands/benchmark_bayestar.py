"""Benchmark: the BAYESTAR step against a direct ligo.skymap localization."""
from django.core.management.base import BaseCommand

from benchmarks.bayestar_overhead import run


class Command(BaseCommand):
    help = "Time the orchestrator's BAYESTAR step against a direct ligo.skymap run on the same events."

    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, default=3)
        parser.add_argument("--repeats", type=int, default=2, help="runs of each kind per event")
        parser.add_argument("--seed", type=int, default=11)

    def handle(self, *args, events, repeats, seed, **options):
        run(count=events, repeats=repeats, seed=seed, out=self.stdout.write)
