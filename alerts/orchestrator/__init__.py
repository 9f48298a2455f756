"""The alert orchestrator: from a new superevent to its preliminary alert.

``flow`` (the steps in order), ``gates`` (pure decisions), ``vetting``
(claims, retries, state), ``alerts`` (building and sending notices). The
task functions are re-exported here, since queued and delayed tasks name
them by dotted path (``alerts.orchestrator.vet_superevent``).
"""
from alerts.orchestrator.flow import (annotations_arrived, cleanup_superevent, handle_superevent,  # noqa: F401
                                      vet_superevent)
from alerts.orchestrator.vetting import resume_vetting  # noqa: F401
