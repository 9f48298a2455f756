"""Nagios-style health check: one line per check, exit code 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN (the worst check wins)."""
import sys

from django.core.management.base import BaseCommand

from alerts.health import STATE_NAMES, UNKNOWN, overall, run_checks


class Command(BaseCommand):
    help = "Check the orchestrator's health (Nagios exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)."
    requires_system_checks = []
    requires_migrations_checks = False

    def handle(self, *args, **options):
        try:
            results = run_checks()
        except Exception as error:  # a check itself broke: say so, as Nagios expects
            self.stdout.write(f"UNKNOWN health: {type(error).__name__}")
            sys.exit(UNKNOWN)
        state = overall(results)
        self.stdout.write(f"{STATE_NAMES[state]}: orchestrator")
        for result in results:
            self.stdout.write(result.line())
        sys.exit(state)
