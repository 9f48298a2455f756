"""Read IGWN Alert messages (JSON lines or a JSON array) and apply them."""
import sys

from django.core.management.base import BaseCommand, CommandError

from alerts.events import reject
from alerts.ingest import INGEST_SOURCE, ingest_stream

BAD_INPUT_STATUS = 2


class Command(BaseCommand):
    help = ("Apply IGWN Alert messages in GraceDB's JSON format from FILE or - (standard input), "
            "JSON lines as they arrive. Bad messages are reported, recorded and skipped; "
            "the exit status is 2 if any were.")

    def add_arguments(self, parser):
        parser.add_argument("source", nargs="?", default="-", help="file of messages, or - for stdin")
        parser.add_argument("--quiet", action="store_true", help="report only rejected messages")

    def handle(self, *args, source, quiet, **options):
        try:
            # Bytes, decoded line by line: one line that is not UTF-8 costs
            # that message only (StringIO stands in for stdin in tests).
            stream = getattr(sys.stdin, "buffer", sys.stdin) if source == "-" else open(source, "rb")
        except OSError as error:
            reason = f"cannot read {source}: {error.strerror or error}"
            reject(INGEST_SOURCE, reason)
            raise CommandError(reason, returncode=BAD_INPUT_STATUS) from None
        applied = rejected = 0
        try:
            for ok, text in ingest_stream(stream):
                if ok:
                    applied += 1
                    if not quiet:
                        self.stdout.write(text)
                else:
                    rejected += 1
                    self.stderr.write(f"rejected: {text}")
                # A live stream's reader sees each outcome as it happens.
                self.stdout.flush()
        except OSError as error:
            reason = f"reading {source} failed: {error.strerror or error}"
            reject(INGEST_SOURCE, reason)
            raise CommandError(reason, returncode=BAD_INPUT_STATUS) from None
        finally:
            if source != "-":
                stream.close()
        self.stdout.write(f"{applied} applied, {rejected} rejected")
        if rejected:
            raise CommandError(f"{rejected} message(s) rejected", returncode=BAD_INPUT_STATUS)
