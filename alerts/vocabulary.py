"""The domain's names, in one place: labels, file names and tags, groups,
searches, alert types and roles.

Every module imports its names from here (as gwcelery keeps its label and
file-name constants together), so that a name is spelled once and a rename
is caught at import time, not at run time.
"""

# --- groups and searches ---------------------------------
CBC = "CBC"
BURST = "Burst"
GROUPS = (CBC, BURST)

ALLSKY = "AllSky"
EARLY_WARNING = "EarlyWarning"
BBH = "BBH"
SSM = "SSM"
MDC = "MDC"
SEARCHES = (ALLSKY, EARLY_WARNING, BBH, SSM, MDC)

# --- labels ----------------------------------------------
ADVREQ = "ADVREQ"
ADVOK = "ADVOK"
ADVNO = "ADVNO"
DQOK = "DQOK"
DQV = "DQV"
INJ = "INJ"
SKYMAP_READY = "SKYMAP_READY"
EMBRIGHT_READY = "EMBRIGHT_READY"
PASTRO_READY = "PASTRO_READY"
EM_READY = "EM_READY"
GCN_PRELIM_SENT = "GCN_PRELIM_SENT"
SIGNIF_LOCKED = "SIGNIF_LOCKED"
LOW_SIGNIF_LOCKED = "LOW_SIGNIF_LOCKED"
DQR_REQUEST = "DQR_REQUEST"
VERDICT_LABELS = (ADVOK, ADVNO)
DQ_LABELS = (DQOK, DQV, INJ)
READY_LABELS = (SKYMAP_READY, EMBRIGHT_READY, PASTRO_READY)
LABELS = (ADVREQ, ADVOK, ADVNO, DQOK, DQV, INJ, SKYMAP_READY, EMBRIGHT_READY, PASTRO_READY, EM_READY,
          GCN_PRELIM_SENT, SIGNIF_LOCKED, LOW_SIGNIF_LOCKED, DQR_REQUEST)
"""Every label the orchestrator uses (the GraceDB surface lists them)."""

# --- files and tags ---------------------------------------------------------------
COINC_FILENAME = "coinc.xml"
PSD_FILENAME = "psd.xml.gz"
RANKING_DATA_FILENAME = "ranking_data.xml.gz"
EM_BRIGHT_FILENAME = "em_bright.json"
BAYESTAR_MULTIORDER = "bayestar.multiorder.fits"
BAYESTAR_FLAT = "bayestar.fits.gz"
DATA_QUALITY_REPORT = "data_quality_report.json"
MULTIORDER_SUFFIX = ".multiorder.fits"
FLAT_SUFFIX = ".fits.gz"
P_ASTRO_SUFFIX = ".p_astro.json"
PNG_SUFFIX = ".png"

SKY_LOC_TAG = "sky_loc"
EM_BRIGHT_TAG = "em_bright"
P_ASTRO_TAG = "p_astro"
PSD_TAG = "psd"
COINC_TAG = "coinc"
RANKING_DATA_TAG = "ranking_data"
DATA_QUALITY_TAG = "data_quality"
PUBLIC_TAG = "public"
EM_FOLLOW_TAG = "em_follow"
COMPUTED_TAG = "computed"
SIGNOFF_TAG = "signoff"
COMMENT_TAG = "comment"  # a human's comment here; GraceDB calls it analyst_comments
ANALYST_COMMENTS_TAG = "analyst_comments"
# The tags a log message written back to GraceDB keeps (GraceDB's own; the
# orchestrator's bookkeeping tags such as "orchestrator" stay here).
GRACEDB_LOG_TAGS = {SKY_LOC_TAG, EM_BRIGHT_TAG, P_ASTRO_TAG, PSD_TAG, DATA_QUALITY_TAG, EM_FOLLOW_TAG,
                    ANALYST_COMMENTS_TAG}


def circular_filename(alert_type):
    """``preliminary-circular.txt``, ``initial-circular.txt`` ..."""
    return f"{alert_type.lower()}-circular.txt"


# --- alert types (notice ``alert_type``) ----------------------------------------
EARLYWARNING_ALERT = "EARLYWARNING"
PRELIMINARY_ALERT = "PRELIMINARY"
INITIAL_ALERT = "INITIAL"
UPDATE_ALERT = "UPDATE"
RETRACTION_ALERT = "RETRACTION"
HUMAN_ALERT_TYPES = (INITIAL_ALERT, UPDATE_ALERT, RETRACTION_ALERT)

# --- notice roles ---------------------------------------------------------------------
ROLE_OBSERVATION = "observation"
ROLE_TEST = "test"

# --- user groups (who may do what; alerts.roles) ------------------------------
ADVOCATES_GROUP = "advocates"
PIPELINES_GROUP = "pipelines"

# --- step names shared between modules (StepRun.step) ---------------------------
# A file announced by an IGWN Alert message, fetched from the source GraceDB
# (StepRun.subject is the file name; recorded when announced).
DOWNLOAD_STEP = "gracedb_download"
