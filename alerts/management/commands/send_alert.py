"""Send (or preview) an advocate's Initial, Update or Retraction alert from
the command line, through the same decision service as the API."""
import json
import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from alerts import decisions
from alerts.models import Superevent

REFUSED_EXIT = 2


class Command(BaseCommand):
    help = "Send or preview an Initial, Update or Retraction alert (exit 2 with one line when refused)."

    def add_arguments(self, parser):
        parser.add_argument("superevent")
        parser.add_argument("alert_type", choices=["initial", "update", "retraction"])
        parser.add_argument("--file", action="append", default=[], metavar="NAME,VERSION")
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument("--user", default=None, help="the advocate acting (must be in the advocates group)")
        parser.add_argument("--reason", default="")

    def handle(self, *args, **options):
        try:
            superevent = Superevent.objects.filter(superevent_id=options["superevent"]).first()
            if superevent is None:
                raise decisions.BadRequest(f"no superevent {options['superevent']}")
            files = options["file"] or None
            if options["dry_run"]:
                shown = decisions.preview(superevent, options["alert_type"], files)
                answer = shown.as_json()
                answer.pop("avro")
                self.stdout.write(json.dumps(answer, indent=2))
                return
            user = get_user_model().objects.filter(username=options["user"]).first() if options["user"] else None
            notice = decisions.send(superevent, options["alert_type"], files, user=user, reason=options["reason"],
                                    via="command line")
        except decisions.Refused as error:
            self.stderr.write(f"refused: {error}")
            sys.exit(REFUSED_EXIT)
        self.stdout.write(f"{notice.identity} ({notice.reason}, serial {notice.serial}, role {notice.role})")
