"""Read IGWN Alert messages (JSON lines or a JSON array) and apply them."""
import sys

from django.core.management.base import BaseCommand, CommandError

from alerts.events import reject
from alerts.ingest import MessageError, apply_message, split_messages

BAD_INPUT_STATUS = 2


class Command(BaseCommand):
    help = ("Apply IGWN Alert messages in GraceDB's JSON format from FILE or - (standard input). "
            "Bad messages are reported, recorded and skipped; the exit status is 2 if any were.")

    def add_arguments(self, parser):
        parser.add_argument("source", nargs="?", default="-", help="file of messages, or - for stdin")
        parser.add_argument("--quiet", action="store_true", help="report only rejected messages")

    def handle(self, *args, source, quiet, **options):
        try:
            text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"cannot read {source}: {error}", returncode=BAD_INPUT_STATUS) from None
        applied = rejected = 0
        for message in split_messages(text):
            try:
                if isinstance(message, MessageError):
                    raise message
                outcome = apply_message(message)
            except MessageError as error:
                rejected += 1
                reject("ingest", str(error), excerpt=str(message)[:500])
                self.stderr.write(f"rejected: {error}")
                continue
            applied += 1
            if not quiet:
                self.stdout.write(outcome)
        self.stdout.write(f"{applied} applied, {rejected} rejected")
        if rejected:
            raise CommandError(f"{rejected} message(s) rejected", returncode=BAD_INPUT_STATUS)
