"""Upload an event like a pipeline does, or add a file to an existing event."""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from alerts.events import (PSD_FILENAME, RANKING_DATA_FILENAME, UploadError, add_event_file,
                           create_event, reject)
from alerts.models import Event
from alerts import vocabulary as v

BAD_INPUT_STATUS = 2


def read(path):
    """The bytes of an input file; one that cannot be read is refused like bad content."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise UploadError(f"cannot read {path}: {error.strerror or error}") from None


class Command(BaseCommand):
    help = ("Upload a CBC event from its coinc.xml (with --psd / --ranking-data), or add a file to "
            "an existing event with --file EVENT_ID PATH. Prints the event id.")

    def add_arguments(self, parser):
        parser.add_argument("coinc", nargs="?", help="coinc.xml of the new event")
        parser.add_argument("--group", default=v.CBC)
        parser.add_argument("--pipeline")
        parser.add_argument("--search", default=v.ALLSKY)
        parser.add_argument("--psd", help="psd.xml.gz uploaded right after the event")
        parser.add_argument("--ranking-data", help="ranking_data.xml.gz uploaded after the PSD")
        parser.add_argument("--offline", action="store_true")
        parser.add_argument("--category", choices=["production", "mdc", "test"])
        parser.add_argument("--file", nargs=2, metavar=("EVENT_ID", "PATH"),
                            help="add PATH to an existing event (named after the file)")
        parser.add_argument("--filename", help="with --file: store under this name")
        parser.add_argument("--tags", default=None, help="with --file: comma-separated tags")

    def handle(self, *args, **options):
        try:
            if options["file"]:
                return self.add_file(options)
            return self.upload(options)
        except UploadError as error:
            reject("cli", str(error))
            raise CommandError(str(error), returncode=BAD_INPUT_STATUS) from None

    def upload(self, options):
        if not options["coinc"] or not options["pipeline"]:
            raise CommandError("give a coinc.xml and --pipeline (or --file EVENT_ID PATH)",
                               returncode=BAD_INPUT_STATUS)
        files = []
        if options["psd"]:
            files.append((PSD_FILENAME, read(options["psd"])))
        if options["ranking_data"]:
            files.append((RANKING_DATA_FILENAME, read(options["ranking_data"])))
        event = create_event(group=options["group"], pipeline=options["pipeline"], search=options["search"],
                             coinc=read(options["coinc"]), files=files, offline=options["offline"],
                             category=options["category"])
        return event.graceid

    def add_file(self, options):
        graceid, path = options["file"]
        event = Event.objects.filter(graceid=graceid).first()
        if event is None:
            raise UploadError(f"no event {graceid}")
        tags = None if options["tags"] is None else [t for t in options["tags"].split(",") if t]
        stored = add_event_file(event, options["filename"] or Path(path).name, read(path), tags=tags)
        return f"{graceid} {stored.filename}"
