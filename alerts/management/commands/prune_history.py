"""Remove history older than the retention policy
(ORCHESTRATOR["HISTORY_RETENTION_DAYS"], alerts.retention); --dry-run counts."""
import getpass

from django.core.management.base import BaseCommand, CommandError

from alerts import retention


class Command(BaseCommand):
    help = ("Delete rejections, finished step runs, logs of events outside superevents, sent delivery rows "
            "and audit records older than settings.ORCHESTRATOR['HISTORY_RETENTION_DAYS'] (null: kept forever). "
            "Notices and their payloads are never deleted. The run is recorded as an AuditRecord.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
        parser.add_argument("--user", default=None, help="who runs it, for the audit record (default: login name)")

    def handle(self, *args, dry_run, user, **options):
        try:
            counts = retention.prune(user or _login_name(), dry_run=dry_run)
        except ValueError as error:
            raise CommandError(str(error))
        verb = "would be deleted (dry run)" if dry_run else "deleted"
        for kind, (cutoff, count) in counts.items():
            self.stdout.write(f"{kind}: {count} older than {cutoff:%Y-%m-%d %H:%M} UTC {verb}")
        kept = sorted(set(retention.KINDS) - set(counts))
        if kept:
            self.stdout.write(f"kept forever (no retention set): {', '.join(kept)}")


def _login_name():
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "command line"
