"""The one way to read the orchestrator's policy (``settings.ORCHESTRATOR``)."""
from django.conf import settings


def policy():
    return settings.ORCHESTRATOR
