"""Which superevents a list shows: the label and notice conditions shared by
the REST API's list and the dashboard's. Each is an ``EXISTS`` meant for
``WHERE`` (with the newest-first order on the (t_0, id) index, PostgreSQL
then walks the index and probes the label index per row until a page is
full, instead of working out the condition for every superevent)."""
from django.db.models import Exists, OuterRef

from alerts import models
from alerts.vocabulary import ADVREQ, VERDICT_LABELS

NEWEST_FIRST = ("-t_0", "-id")


def has_label(name):
    return Exists(models.Label.objects.filter(superevent=OuterRef("pk"), name=name))


def waiting():
    """ADVREQ without a verdict (ADVOK or ADVNO) yet."""
    condition = has_label(ADVREQ)
    for verdict in VERDICT_LABELS:
        condition &= ~has_label(verdict)
    return condition


def alert_sent():
    return Exists(models.Notice.objects.filter(superevent=OuterRef("pk")))
