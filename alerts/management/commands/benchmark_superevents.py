"""Events per second through the superevent manager, alone and behind uploads.

The work is done by benchmarks/superevent_throughput.py; this command only
reads the options. It targets PostgreSQL (DATABASE_URL) and uses a scratch
database beside the configured one, which it creates and drops.
"""
from django.core.management.base import BaseCommand, CommandError

from benchmarks import superevent_throughput as bench


def worker_counts(text):
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CommandError(f"--workers takes numbers separated by commas, not {text!r}", returncode=2) from None
    if not counts or min(counts) < 1:
        raise CommandError("--workers needs at least one positive number", returncode=2)
    return counts


class Command(BaseCommand):
    help = ("Benchmark superevent grouping: events/s through the manager alone (a backlog, and live: "
            "one event at a time) and through create_event with coinc.xml parsing, with 1, 2, ... "
            "worker processes.")

    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, default=bench.DEFAULT_EVENTS, help="events per run")
        parser.add_argument("--per-source", type=int, default=bench.DEFAULT_PER_SOURCE,
                            help="detections per source, all within 1 s (one superevent each)")
        parser.add_argument("--workers", default=",".join(map(str, bench.DEFAULT_WORKERS)),
                            help="worker process counts to run, e.g. 1,2")
        parser.add_argument("--skip-upload", action="store_true", help="time the manager alone only")
        parser.add_argument("--live-events", type=int, default=bench.DEFAULT_LIVE_EVENTS,
                            help="events of the live run (each created and grouped in its own "
                                 "transaction, one at a time); 0 skips it")
        parser.add_argument("--allow-sqlite", action="store_true", help="run even if the database is SQLite")
        parser.add_argument("--pool", type=int, default=bench.DEFAULT_POOL,
                            help="simulated coinc.xml documents the uploads are copied from")
        parser.add_argument("--seed", type=int, default=bench.DEFAULT_SEED)
        parser.add_argument("--bench-db", default=bench.DEFAULT_BENCH_DB,
                            help="name of the scratch PostgreSQL database (created and dropped)")
        parser.add_argument("--keep-db", action="store_true", help="leave the scratch database behind")
        parser.add_argument("--no-query-count", action="store_true", help="skip the queries-per-event dry run")
        parser.add_argument("--show-sql", action="store_true", help="print the queries of one event")
        parser.add_argument("--profile", metavar="DIR",
                            help="run worker 0 under cProfile, save .prof files in DIR and print the top")

    def handle(self, *args, **options):
        try:
            bench.run_benchmark(
                events=options["events"], per_source=options["per_source"],
                workers=worker_counts(options["workers"]), skip_upload=options["skip_upload"],
                live_events=options["live_events"],
                allow_sqlite=options["allow_sqlite"], pool=options["pool"], seed=options["seed"],
                bench_db=options["bench_db"], keep_db=options["keep_db"],
                query_count=not options["no_query_count"], show_sql=options["show_sql"],
                profile_dir=options["profile"], write=self.stdout.write,
            )
        except bench.BenchmarkError as error:
            raise CommandError(str(error)) from None
