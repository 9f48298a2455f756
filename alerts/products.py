"""The data products that alerts and circulars quote, read from the store.

Which file of an event or superevent is its sky map, its source properties
(``em_bright.json``) or its classification (``<pipeline>.p_astro.json``), the
sky map's summary numbers, and the public URLs of files and superevents.
Names follow the annotation contract: CBC events carry
``bayestar.multiorder.fits`` (and the flattened ``bayestar.fits.gz``), Burst
events their pipeline's ``<pipeline>.multiorder.fits``.

Everything here reads; nothing writes. Unreadable products give None (and a
warning in the worker log), never an exception, so that an alert can still go
out with what exists.
"""
import json
import logging

from django.urls import reverse

from alerts import models
from alerts.models import File
from alerts.science.notices import CLASSIFICATION_NAMES, PROPERTY_NAMES
from alerts.store import owner_kwargs
from alerts.vocabulary import (COMPUTED_TAG, EM_BRIGHT_FILENAME, FLAT_SUFFIX, MULTIORDER_SUFFIX,  # noqa: F401
                               P_ASTRO_SUFFIX, P_ASTRO_TAG, PNG_SUFFIX, SKY_LOC_TAG)
from alerts.config import policy

logger = logging.getLogger(__name__)

# COMPUTED_TAG marks a p_astro.json the orchestrator computed itself (not
# the pipeline's own), so that the pipeline's upload can win whatever the
# order in which they arrive.
SKYMAP_SUMMARY_FIELDS = ("area_50_deg2", "area_90_deg2", "distance_mean_mpc", "distance_std_mpc")


def latest_files(owner):
    """Newest version of every file name of an event or superevent."""
    newest = {}
    for file in File.objects.filter(**owner_kwargs(owner)).order_by("name", "version"):
        newest[file.name] = file
    return list(newest.values())


def _newest(files):
    return max(files, key=lambda file: (file.created, file.pk), default=None)


def skymap_file(owner):
    """The sky map notices carry: the newest multi-order FITS file tagged
    sky_loc (on a superevent, the one copied or chosen last)."""
    return _newest([f for f in latest_files(owner) if f.name.endswith(MULTIORDER_SUFFIX) and SKY_LOC_TAG in f.tags])


def skymap_files(owner):
    """Every sky map (multi-order and flattened) of the owner, by name."""
    return sorted(
        (f for f in latest_files(owner)
         if SKY_LOC_TAG in f.tags and (f.name.endswith(MULTIORDER_SUFFIX) or f.name.endswith(FLAT_SUFFIX))),
        key=lambda f: f.name,
    )


def em_bright_file(owner):
    return next((f for f in latest_files(owner) if f.name == EM_BRIGHT_FILENAME), None)


def is_valid_p_astro(file):
    """Whether a file holds a valid p_astro.json (``validate_p_astro_json``)."""
    from alerts.science.pastro import PAstroError, validate_p_astro_json

    try:
        validate_p_astro_json(file.read())
    except (PAstroError, OSError) as error:
        logger.warning("%s is not a usable p_astro.json: %s", file, error)
        return False
    return True


def _p_astro_versions(owner):
    """Every version of every ``*.p_astro.json`` file, newest first."""
    return File.objects.filter(name__endswith=P_ASTRO_SUFFIX, **owner_kwargs(owner)).order_by("-created", "-pk")


def uploaded_p_astro_file(owner, accepted_only=True):
    """The newest valid p_astro.json the pipeline uploaded (not one the
    orchestrator computed, tag ``computed``), or None. ``accepted_only``:
    only one the annotation step has validated and tagged ``p_astro``."""
    for file in _p_astro_versions(owner):
        if COMPUTED_TAG in file.tags or (accepted_only and P_ASTRO_TAG not in file.tags):
            continue
        if is_valid_p_astro(file):
            return file
    return None


def p_astro_file(owner):
    """The p_astro that notices quote: the pipeline's own validated upload
    if there is one (the newest), else the newest one the orchestrator
    computed. Only files tagged ``p_astro`` by the annotation steps whose
    content is valid count, so an upload that failed validation, or one
    not yet validated, is never used, whatever its version."""
    own = uploaded_p_astro_file(owner)
    if own is not None:
        return own
    for file in _p_astro_versions(owner):
        if P_ASTRO_TAG in file.tags and COMPUTED_TAG in file.tags and is_valid_p_astro(file):
            return file
    return None


def plot_name(name):
    """Name of the PNG figure of a product: ``bayestar.multiorder.fits`` ->
    ``bayestar.png``, ``gstlal.p_astro.json`` -> ``gstlal.p_astro.png``."""
    for suffix in (MULTIORDER_SUFFIX, FLAT_SUFFIX, ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)] + PNG_SUFFIX
    return None


PLOT_TITLES = {EM_BRIGHT_FILENAME: "Source properties", P_ASTRO_SUFFIX: "Source classification"}


def plot(file, title=None):
    """The PNG figure of a product, or None: the all-sky map of a multi-order
    sky map, the bar chart of the known probabilities of em_bright.json or a
    p_astro.json (``title``, or a default one)."""
    from alerts.science import plots

    if file.name.endswith(MULTIORDER_SUFFIX):
        return plots.plot_allsky(file.read())
    if file.name == EM_BRIGHT_FILENAME:
        names, kind = PROPERTY_NAMES, EM_BRIGHT_FILENAME
    elif file.name.endswith(P_ASTRO_SUFFIX):
        names, kind = CLASSIFICATION_NAMES, P_ASTRO_SUFFIX
    else:
        return None
    values = probabilities_in(file, names)
    return plots.plot_bars(values, title or PLOT_TITLES[kind]) if values else None


def probabilities_in(file, allowed):
    """The known probabilities (names in ``allowed``, values in [0, 1]) of a
    JSON file, or None."""
    if file is None:
        return None
    try:
        content = json.loads(file.read())
    except (OSError, ValueError) as error:
        logger.warning("cannot read %s: %s", file, error)
        return None
    if not isinstance(content, dict):
        logger.warning("%s does not hold a JSON object", file)
        return None
    values = {}
    for name in allowed:
        value = content.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
            values[name] = float(value)
    return values or None


def classification(owner):
    """p_astro probabilities (BNS, NSBH, BBH, Terrestrial) or None."""
    return probabilities_in(p_astro_file(owner), CLASSIFICATION_NAMES)


def properties(owner):
    """Source properties (HasNS, HasRemnant, HasMassGap ...) or None."""
    return probabilities_in(em_bright_file(owner), PROPERTY_NAMES)


def skymap_summary(file):
    """Credible areas (deg2) and distance (Mpc) of a sky map file, or None.

    Returns a dict with area_50_deg2, area_90_deg2, distance_mean_mpc,
    distance_std_mpc (the distances may be None for maps without distance
    layers). Uses the stored ``alerts.models.SkymapSummary`` of a file with
    the same bytes when that model exists (a copy on a superevent shares its
    event file's summary); otherwise summarises the bytes here.
    """
    if file is None:
        return None
    stored = stored_skymap_summary(file)
    if stored is not None:
        return stored
    from alerts.science.localization import LocalizationError, summarize_skymap

    try:
        return summarize_skymap(file.read()).as_dict()
    except (LocalizationError, OSError) as error:
        logger.warning("cannot summarise sky map %s: %s", file, error)
        return None


def stored_skymap_summary(file):
    """The summary stored when a sky map with these bytes was accepted
    (``SkymapSummary``; a copy on a superevent shares its event file's), or
    None; never computed here, so it is cheap enough for API listings."""
    row = models.SkymapSummary.objects.filter(file__sha256=file.sha256).order_by("pk").first()
    if row is None:
        return None
    return {name: getattr(row, name) for name in SKYMAP_SUMMARY_FIELDS}


def file_url(file):
    """Public URL of one file version (the REST API's file content view)."""
    owner = "superevent" if file.superevent_id else "event"
    owner_id = file.owner_id_text
    return policy()["BASE_URL"] + reverse(f"{owner}-file", args=[owner_id, file.filename])


def superevent_url(superevent):
    """Public page of a superevent, quoted in notices and circulars."""
    return policy()["BASE_URL"] + reverse("superevent-detail", args=[superevent.superevent_id])
