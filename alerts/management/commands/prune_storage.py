"""Remove stored files that no File row names (left by rolled-back uploads
or killed workers); lists them without --delete."""
from django.conf import settings
from django.core.management.base import BaseCommand

from alerts.store import orphaned_files, remove_orphaned_files


class Command(BaseCommand):
    help = ("List stored files that no File row names and that are older than the grace period "
            "(settings.STORAGE_ORPHAN_GRACE_S); --delete removes them.")

    def add_arguments(self, parser):
        parser.add_argument("--delete", action="store_true", help="remove them (default: only list them)")
        parser.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                            help="only files older than this (default: settings.STORAGE_ORPHAN_GRACE_S)")

    def handle(self, *args, delete, grace, **options):
        grace_s = settings.STORAGE_ORPHAN_GRACE_S if grace is None else grace
        names = remove_orphaned_files(grace_s) if delete else orphaned_files(grace_s)
        for name in names:
            self.stdout.write(name)
        verb = "removed" if delete else "found (run with --delete to remove them)"
        self.stderr.write(f"{len(names)} orphaned file(s) older than {grace_s:g} s {verb}")
