"""Listen to the IGWN Alert topics on Kafka and apply each message (alerts.listen)."""
import signal

from django.conf import settings
from django.core.management.base import BaseCommand

from alerts.listen import Listener


class Command(BaseCommand):
    help = ("Consume GraceDB's IGWN Alert topics from Kafka (settings.IGWN_ALERT) and apply each "
            "message as `ingest` does; offsets are stored only after a message is applied or recorded.")

    def add_arguments(self, parser):
        conf = settings.IGWN_ALERT
        parser.add_argument("--broker", default=conf["broker"], help="Kafka bootstrap host:port")
        parser.add_argument("--group", default=conf["group"], help="GraceDB topic group, e.g. gracedb-test")
        parser.add_argument("--topics", default=",".join(conf["kinds"]),
                            help="comma-separated kinds (superevent,cbc_gstlal,...)")
        parser.add_argument("--consumer-group", default=conf["consumer_group"])
        parser.add_argument("--workers", type=int, default=1, help=("processes applying messages (1: the listener itself; N >= 2: N worker processes, "
                                  "a batch split by uid among them, each part in one database transaction)"))
        parser.add_argument("--max-messages", type=int, default=None, help="stop after this many (tests)")

    def handle(self, *args, broker, group, topics, consumer_group, max_messages, workers, **options):
        conf = {**settings.IGWN_ALERT, "broker": broker, "group": group,
                "kinds": [kind for kind in topics.split(",") if kind], "consumer_group": consumer_group}
        listener = Listener(conf, on_progress=self.progress_line, workers=workers)
        signal.signal(signal.SIGINT, listener.stop)
        signal.signal(signal.SIGTERM, listener.stop)
        self.stdout.write(f"listening to {', '.join(conf['kinds'])} of {group} on {broker} "
                          f"(consumer group {consumer_group})")
        self.stdout.flush()
        progress = listener.run(max_messages=max_messages)
        self.stdout.write(f"stopped: {progress.applied} applied, {progress.rejected} rejected")

    def progress_line(self, progress, lag):
        lag_text = "unknown" if lag is None else str(lag)
        self.stdout.write(f"{progress.applied} applied, {progress.rejected} rejected, "
                          f"{progress.rate():.1f} messages/s, lag {lag_text}")
        self.stdout.flush()
