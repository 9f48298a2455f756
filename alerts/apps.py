from django.apps import AppConfig

# Modules whose @handles subscriptions make up the workflow; importing them
# registers their handlers.
HANDLER_MODULES = ["alerts.superevents", "alerts.orchestrator", "alerts.annotations", "alerts.gracedb_writeback"]


class AlertsConfig(AppConfig):
    name = "alerts"
    verbose_name = "Alert orchestrator"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        import importlib

        for module in HANDLER_MODULES:
            importlib.import_module(module)
        from alerts.workers import connect_in_flight_records

        connect_in_flight_records()
