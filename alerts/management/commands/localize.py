"""Re-run BAYESTAR for an event, optionally without chosen detectors.

An explicit request: it always makes a new sky map version, even when the
same inputs already gave one (automatic triggers are run once per input)."""
from django.core.management.base import BaseCommand, CommandError

from alerts import workers
from alerts.annotations import check_detectors, localize_event, relocalize
from alerts.models import Event, StepRun

BAD_INPUT_STATUS = 2


class Command(BaseCommand):
    help = ("Make a new version of an event's BAYESTAR sky map, e.g. without a detector whose data "
            "the advocates distrust: localize G330001 --disable-detector V1")

    def add_arguments(self, parser):
        parser.add_argument("graceid")
        parser.add_argument("--disable-detector", action="append", default=[], metavar="IFO",
                            help="leave this detector out (repeatable)")
        parser.add_argument("--now", action="store_true",
                            help="run here and now instead of queueing it for the workers")

    def handle(self, *args, graceid, disable_detector, now, **options):
        event = Event.objects.filter(graceid=graceid).first()
        if event is None:
            raise CommandError(f"no event {graceid}", returncode=BAD_INPUT_STATUS)
        try:
            if now:
                check_detectors(event, disable_detector)
                localize_event(event.pk, sorted(disable_detector), True)
                run = StepRun.objects.filter(event=event, step="bayestar").latest("started")
                if run.status != StepRun.Status.SUCCEEDED:
                    raise CommandError(f"{graceid}: BAYESTAR {run.status}: {run.error}", returncode=BAD_INPUT_STATUS)
                return f"{graceid}: sky map done (see its log)"
            if disable_detector:
                relocalize(event, disable_detector)
            else:
                workers.enqueue(localize_event, event.pk, [], True)
        except ValueError as error:
            raise CommandError(str(error), returncode=BAD_INPUT_STATUS) from None
        return f"{graceid}: re-localization queued"
