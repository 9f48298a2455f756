"""Django settings for the alert orchestrator.

Every deployment-specific value comes from the environment, with defaults
that run on one laptop with nothing installed but Python packages: a SQLite
file and django-q2's ORM broker. Every policy number of the orchestrator
lives in the single ``ORCHESTRATOR`` block at the end of this file.
"""
import os
import secrets
import sys
import time
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from alerts import vocabulary as v  # names only: imports nothing
from orchestrator_site.policy import PolicyError, apply_overrides as apply_policy_overrides

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("ORCHESTRATOR_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name, default=False):
    """Read a yes/no environment variable."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_float(name, default):
    """Read a float environment variable (for policy overrides)."""
    value = os.environ.get(name)
    return default if value in (None, "") else float(value)


# Safe by default: DEBUG off, no built-in key, only localhost served.
# A development run (ORCHESTRATOR_DEV=1: scripts/demo.sh, scripts/test.sh,
# the tests) gets a random key made once and kept in var/secret_key; any
# other run refuses to start without DJANGO_SECRET_KEY.
DEBUG = env_bool("DJANGO_DEBUG", False)
DEV_MODE = env_bool("ORCHESTRATOR_DEV") or "pytest" in sys.modules


def dev_secret_key():
    """The development key: var/secret_key, written once (owner-only)."""
    path = VAR_DIR / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process may be writing it right now
            key = path.read_text().strip()
            if key:
                return key
            time.sleep(0.01)
        raise ImproperlyConfigured(f"{path} is empty: remove it or set DJANGO_SECRET_KEY")
    key = secrets.token_urlsafe(50)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not (DEV_MODE or DEBUG):
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set (set it, or ORCHESTRATOR_DEV=1 for a development run)")
    SECRET_KEY = dev_secret_key()
ALLOWED_HOSTS = [host for host in os.environ.get(
    "DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if host]

# Served over HTTPS (DJANGO_HTTPS=1, behind a proxy that sets
# X-Forwarded-Proto): cookies only over HTTPS, HSTS, redirect plain HTTP.
HTTPS = env_bool("DJANGO_HTTPS")
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(env_float("DJANGO_HSTS_SECONDS", 31536000))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    # alerts comes first so that its qcluster command (django-q2's cluster
    # plus the precise timer) takes precedence over django-q2's own.
    "alerts",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
]

MIDDLEWARE = [
    "alerts.metrics.RequestLatencyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "orchestrator_site.errors.RequestIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "orchestrator_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "orchestrator_site.wsgi.application"

# --- Database -------------------------------------------------------------
# DATABASE_URL selects the database (postgres://postgres@127.0.0.1:5432/db);
# without it a SQLite file under var/ is used, which needs no server.
SQLITE_TIMEOUT_S = 30
# Seconds a connection is kept for reuse, checked before each reuse so that a
# dropped one is replaced. 0 opens one per request or worker task (and per
# ORM-broker poll): on PostgreSQL that costs tens of milliseconds per queue
# hop on the alert path (benchmarks/alert_latency.py).
DATABASE_CONN_MAX_AGE = int(env_float("DATABASE_CONN_MAX_AGE", 300))
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=DATABASE_CONN_MAX_AGE,
        conn_health_checks=DATABASE_CONN_MAX_AGE > 0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions take SQLite's write lock at BEGIN, so concurrent
    # writers queue up instead of failing with "database is locked" when a
    # read lock cannot be upgraded.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": SQLITE_TIMEOUT_S,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so that worker processes started by the tests
    # share the test database; one per test run, so runs never collide.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# The dashboard's sign-in page; pages send anonymous visitors there.
LOGIN_URL = "dashboard:login"
LOGIN_REDIRECT_URL = "dashboard:list"
LOGOUT_REDIRECT_URL = "dashboard:login"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
MEDIA_URL = "media/"
# Stored files that no File row names are removed by `manage.py prune_storage`
# once they are this old: a younger one may belong to an upload whose
# transaction has not committed yet.
STORAGE_ORPHAN_GRACE_S = env_float("ORCHESTRATOR_STORAGE_ORPHAN_GRACE_S", 3600.0)
# Notices written by the outbox transport (ORCHESTRATOR["NOTICE_DESTINATIONS"]).
OUTBOX_DIR = Path(os.environ.get("ORCHESTRATOR_OUTBOX_DIR", VAR_DIR / "outbox"))
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024 * 1024
# Limits on what a client may send (hostile input gets a 400, README
# "Hostile input"): bytes of one uploaded or ingested file, characters of one
# text field (tag, label, comment, name), labels or tags in one request.
# GPS times are accepted from the GPS epoch (1980-01-06, GPS 0, exclusive) to
# 2100-01-01 (GPS 3786480018), the orchestrator's lifetime with room to spare.
MAX_FILE_BYTES = int(env_float("ORCHESTRATOR_MAX_FILE_BYTES", 64 * 1024 * 1024))
MAX_FIELD_CHARS = int(env_float("ORCHESTRATOR_MAX_FIELD_CHARS", 200))
MAX_TEXT_CHARS = int(env_float("ORCHESTRATOR_MAX_TEXT_CHARS", 20000))
MAX_LABELS = int(env_float("ORCHESTRATOR_MAX_LABELS", 50))
GPS_TIME_RANGE = (0.0, 3786480018.0)
FILE_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024 * 1024

# --- REST API -------------------------------------------------------------
REST_FRAMEWORK = {
    # Basic first: its WWW-Authenticate header makes DRF answer anonymous
    # requests 401, not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.BasicAuthentication",
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["alerts.roles.RoleRequired"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "alerts.api.errors.json_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# OpenAPI 3 schema at /api/schema/, Swagger UI at /api/docs/ served from the
# sidecar package (no CDN); both for signed-in users only.
SPECTACULAR_SETTINGS = {
    "TITLE": "Alert orchestrator API",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["alerts.roles.RoleRequired"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The GraceDB-compatible surface follows GraceDB's own API documentation.
    "PREPROCESSING_HOOKS": ["alerts.api.schema.native_api_only"],
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "alerts.api.schema.error_responses"],
    # Schema type hints are not deployment checks: keep `check --deploy` about safety.
    "ENABLE_DJANGO_DEPLOY_CHECK": False,
}

# --- Task workers (django-q2) -------------------------------------------------
# REDIS_URL switches django-q2 from its ORM broker (the database, nothing to
# install) to Redis, for several worker machines sharing the load.
REDIS_URL = os.environ.get("REDIS_URL", "")
# Tasks that take seconds to minutes (BAYESTAR, plots) go to their own queue,
# served by a second cluster of Q_SLOW_WORKERS processes that `manage.py
# qcluster` starts beside the main one, so a burst of sky maps never keeps the
# alert path (superevent manager, orchestrator, notices) waiting for a free
# worker. Q_SLOW_WORKERS=0 puts everything on the main queue. django-q2 reads
# Q_CLUSTER_NAME to pick an alternative cluster, so the main queue's name has
# its own variable, Q_QUEUE_NAME.
Q_QUEUE_NAME = os.environ.get("Q_QUEUE_NAME", "orchestrator")
SLOW_QUEUE_SUFFIX = "-slow"
Q_SLOW_WORKERS = int(os.environ.get("Q_SLOW_WORKERS", "1"))
# On SIGTERM/SIGINT, how long running tasks may finish before their workers
# are killed (their tasks run again at the next start); keeps a stop under 10 s.
Q_STOP_GRACE_S = env_float("Q_STOP_GRACE_S", 3.0)
Q_CLUSTER = {
    "name": Q_QUEUE_NAME,
    "ALT_CLUSTERS": {Q_QUEUE_NAME + SLOW_QUEUE_SUFFIX: {"workers": max(Q_SLOW_WORKERS, 1)}},
    "workers": int(os.environ.get("Q_WORKERS", "2")),
    "timeout": int(os.environ.get("Q_TIMEOUT_S", "600")),
    "retry": int(os.environ.get("Q_RETRY_S", "660")),
    "max_attempts": 1,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 1000,
    "label": "Task queue",
    # django-q2's own log ("Enqueued ...", "Processed ..."); the demo's
    # replay sets WARNING so its progress bar stays readable.
    "log_level": os.environ.get("Q_LOG_LEVEL", "INFO"),
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
    # Records each task as the cluster takes it, so a forced stop loses none
    # of those waiting for a free worker (alerts/brokers.py).
    Q_CLUSTER["broker_class"] = "alerts.brokers.RecordingRedis"
else:
    Q_CLUSTER["orm"] = "default"
    # The clusters' status (read by `manage.py health` and /health/ from
    # other processes) needs a cache every process on this machine shares.
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "cluster_status": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                           "LOCATION": str(VAR_DIR / "cluster-status")},
    }
    Q_CLUSTER["cache"] = "cluster_status"
    # How often the ORM broker looks for new tasks (seconds).
    Q_CLUSTER["poll"] = env_float("Q_ORM_POLL_S", 0.05)

# Who may read /metrics: a bearer token, these client addresses, or staff.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
METRICS_ALLOWED_IPS = [ip for ip in os.environ.get("METRICS_ALLOWED_IPS", "127.0.0.1,::1").split(",") if ip]

# Errors go to Sentry only when SENTRY_DSN is set; never by default.
SENTRY_DSN = os.environ.get("SENTRY_DSN", "")
if SENTRY_DSN:
    import sentry_sdk

    sentry_sdk.init(dsn=SENTRY_DSN, environment=os.environ.get("SENTRY_ENVIRONMENT", "production"),
                    traces_sample_rate=0.0, send_default_pii=False)

# Thresholds of `manage.py health` and /health/ (alerts/health.py).
HEALTH_CHECKS = {
    "QUEUE_WARNING": int(os.environ.get("HEALTH_QUEUE_WARNING", "50")),
    "QUEUE_CRITICAL": int(os.environ.get("HEALTH_QUEUE_CRITICAL", "500")),
    # The oldest task waiting in django-q2's queues (seconds since queued).
    "QUEUE_AGE_WARNING_S": env_float("HEALTH_QUEUE_AGE_WARNING_S", 60.0),
    "QUEUE_AGE_CRITICAL_S": env_float("HEALTH_QUEUE_AGE_CRITICAL_S", 300.0),
    # The MDC canary: where a mock stream uploads MDC events (an IGWN Alert
    # mdc_superevent topic, a periodic `manage.py replay`), the last MDC
    # superevent with a Preliminary notice must be younger than these
    # (seconds; gwcelery's mock stream makes one an hour). 0: no mock stream,
    # the check is skipped.
    "MDC_WARNING_S": env_float("HEALTH_MDC_WARNING_S", 0.0),
    "MDC_CRITICAL_S": env_float("HEALTH_MDC_CRITICAL_S", 0.0),
    # A delayed task not fired this long after it was due: the timer is not running.
    "TIMER_LATE_S": env_float("HEALTH_TIMER_LATE_S", 30.0),
    # A delivery still waiting this long after its notice was made.
    "DELIVERY_LATE_S": env_float("HEALTH_DELIVERY_LATE_S", 300.0),
    # No event for this long is a WARNING (0: never; a quiet sky is normal).
    "LAST_EVENT_MAX_AGE_S": env_float("HEALTH_LAST_EVENT_MAX_AGE_S", 0.0),
    "DISK_FREE_WARNING_PCT": env_float("HEALTH_DISK_FREE_WARNING_PCT", 10.0),
    "DISK_FREE_CRITICAL_PCT": env_float("HEALTH_DISK_FREE_CRITICAL_PCT", 3.0),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
                   "json": {"()": "alerts.log_format.JsonFormatter"}},
    # ORCHESTRATOR_LOG_FORMAT=json: one JSON object per line (superevent, event, step fields).
    "handlers": {"console": {"class": "logging.StreamHandler",
                             "formatter": "json" if os.environ.get("ORCHESTRATOR_LOG_FORMAT") == "json" else "plain"}},
    "loggers": {
        "alerts": {"handlers": ["console"], "level": os.environ.get("ORCHESTRATOR_LOG_LEVEL", "INFO")},
        # Errors a client saw as a request id (orchestrator_site.errors).
        "orchestrator_site": {"handlers": ["console"], "level": "INFO"},
    },
}

# --- Orchestrator policy ---------------------------------------------------------
DAY_S = 86400.0
HOUR_S = 3600.0
# The long tasks (BAYESTAR, plots); tests check that each names a function.
SLOW_TASK_PATHS = [
    "alerts.annotations.localize_if_coinc_has_psd",
    "alerts.annotations.localize_on_psd",
    "alerts.annotations.localize_in_turn",
    "alerts.annotations.localize_event",
    "alerts.annotations.flatten_skymap",
    "alerts.annotations.plot_skymap",
    "alerts.annotations.plot_probabilities",
]

ORCHESTRATOR = {
    # Run tasks inline in the calling process instead of queueing them for
    # qcluster (tests, one-shot commands, a laptop without a worker).
    "TASKS_INLINE": env_bool("ORCHESTRATOR_TASKS_INLINE", False),
    # How often the timer looks for due delayed tasks (seconds); bounds how
    # late a wait such as orchestrator_timeout can fire.
    "TIMER_POLL_S": env_float("ORCHESTRATOR_TIMER_POLL_S", 0.05),
    # Tasks sent to the slow queue (see Q_SLOW_WORKERS); empty when it is off.
    "SLOW_TASKS": SLOW_TASK_PATHS if Q_SLOW_WORKERS > 0 else [],
    # Group an uploaded event into its superevent inside the upload's own
    # transaction (one commit and a queue hop fewer; the superevent exists
    # when the upload returns). The EVENT_CREATED task then finds it done,
    # and takes over if grouping at upload failed. False: the task groups it.
    "GROUP_AT_UPLOAD": True,
    # Events whose FAR is above this (Hz) do not form superevents.
    "SUPEREVENT_FAR_THRESHOLD": env_float("ORCHESTRATOR_SUPEREVENT_FAR_THRESHOLD", 1 / HOUR_S),
    # Half-width of the superevent window around a CBC event's time, per
    # pipeline (seconds); "default" for any other pipeline.
    "SUPEREVENT_WINDOW_S": {"default": 1.0, "gstlal": 1.0, "pycbc": 1.0, "mbta": 1.0, "spiir": 1.0},
    # Padding for Burst events, whose window is their own start/duration.
    "BURST_WINDOW_PAD_S": 0.0,
    # Wait for the preferred event choice to settle before vetting.
    "ORCHESTRATOR_TIMEOUT_S": env_float("ORCHESTRATOR_TIMEOUT_S", 15.0),
    # ... but it ends early, not before this many seconds, once the preferred
    # event's annotations are complete (the alert waits for nothing else; a
    # better event arriving later is reconsidered). Negative: never early.
    "ORCHESTRATOR_MIN_SETTLE_S": env_float("ORCHESTRATOR_MIN_SETTLE_S", 5.0),
    # Significant-alert thresholds: (trials factor, FAR threshold in Hz) per
    # (group, search); trials_factor * FAR must be at most the threshold
    # (alerts.superevent_rules.is_significant).
    "SIGNIFICANT": {
        (v.CBC, v.ALLSKY): (7, 1 / (30 * DAY_S)),
        (v.CBC, v.EARLY_WARNING): (4, 1 / (30 * DAY_S)),
        (v.CBC, v.SSM): (3, 1 / (365 * DAY_S)),
        (v.BURST, v.BBH): (7, 1 / (30 * DAY_S)),
        (v.BURST, v.ALLSKY): (3, 1 / (365 * DAY_S)),
    },
    # Less-significant alerts: FAR (Hz) at most this; None disables. The
    # usual trials factor of 8 multiplies both sides and cancels.
    "LESS_SIGNIFICANT_FAR": {
        (v.CBC, v.ALLSKY): 2 / DAY_S,
        (v.BURST, v.ALLSKY): 2 / DAY_S,
        (v.BURST, v.BBH): 2 / DAY_S,
        (v.CBC, v.EARLY_WARNING): None,
        (v.CBC, v.SSM): None,
    },
    # Annotation labels an event needs before it counts as complete.
    "COMPLETE_ANNOTATIONS": {
        v.CBC: [v.SKYMAP_READY, v.EMBRIGHT_READY, v.PASTRO_READY],
        v.BURST: [v.SKYMAP_READY],
    },
    # Superevent labels that freeze the preferred event.
    "LOCK_LABELS": {"significant": v.SIGNIF_LOCKED, "less_significant": v.LOW_SIGNIF_LOCKED},
    # Known pipelines per group; uploads from others are rejected.
    "PIPELINES": {
        v.CBC: ["gstlal", "pycbc", "mbta", "spiir"],
        v.BURST: ["cwb", "olib", "lib", "mly"],
    },
    "SEARCHES": [v.ALLSKY, v.EARLY_WARNING, v.BBH, v.SSM, v.MDC],
    # Low-frequency cutoff for BAYESTAR when the upload does not say (Hz).
    "DEFAULT_F_LOW_HZ": 30.0,
    # p_astro is computed for every CBC event as soon as it arrives (from its
    # FAR, SNR and template), so no alert waits for an input that may never
    # come. Pipelines that upload ranking_data.xml.gz (the replay uploads it
    # for these) get a newer computed version when it arrives; those that
    # upload a p_astro.json of their own have it validated and used as is,
    # in preference to any computed one (products.p_astro_file).
    "PASTRO_FROM_RANKING_DATA": ["gstlal"],
    "PIPELINES_WITH_OWN_PASTRO": [],
    # Transient failures (I/O, memory) of an annotation step are retried.
    "ANNOTATION_RETRY": {"max_attempts": 3, "delay_s": 5.0},
    # Public base URL used in file URLs and notices.
    "BASE_URL": os.environ.get("ORCHESTRATOR_BASE_URL", "http://127.0.0.1:8000"),
    # IGWN Alert ingestion: where files announced by log messages are looked
    # up locally (<dir>/<uid>/<filename>), since nothing is downloaded here.
    "INGEST_FILES_DIR": os.environ.get("ORCHESTRATOR_INGEST_FILES_DIR", ""),
    # --- Preliminary alerts (alerts.orchestrator) ---
    # Vet every new superevent and send its preliminary alert without human
    # action; off, new superevents are left alone.
    "PRELIMINARY_ALERTS": env_bool("ORCHESTRATOR_PRELIMINARY_ALERTS", True),
    # ADVOK sends the Initial and ADVNO the Retraction (alerts.decisions).
    "ADVOCATE_VERDICT_SENDS": env_bool("ORCHESTRATOR_ADVOCATE_VERDICT_SENDS", True),
    # Before its products are used, the preferred event's annotations
    # (COMPLETE_ANNOTATIONS) are awaited: re-checked every ANNOTATION_POLL_S
    # seconds for at most ANNOTATION_MAX_WAIT_S, after which the alert goes
    # out with what exists and the log says what was missing.
    "ANNOTATION_MAX_WAIT_S": env_float("ORCHESTRATOR_ANNOTATION_MAX_WAIT_S", 120.0),
    "ANNOTATION_POLL_S": env_float("ORCHESTRATOR_ANNOTATION_POLL_S", 2.0),
    # Seconds after the first preliminary pass at which the preferred event
    # is re-selected and frozen and a second preliminary may go out (GWCelery
    # uses 270 s, its superevent_clean_up_timeout). SECOND_PRELIMINARY off
    # skips that pass altogether. Tasks run inline cannot wait, so inline
    # there is no clean-up pass.
    "PRELIMINARY_CLEANUP_DELAY_S": env_float("ORCHESTRATOR_PRELIMINARY_CLEANUP_DELAY_S", 270.0),
    "SECOND_PRELIMINARY": env_bool("ORCHESTRATOR_SECOND_PRELIMINARY", True),
    # Searches judged against another search's significant threshold by the
    # orchestrator (mock-data challenge events replay the all-sky search);
    # their less-significant alerts stay as LESS_SIGNIFICANT_FAR says.
    "SIGNIFICANT_SEARCH_ALIASES": {v.MDC: v.ALLSKY},
    # Tags of the preferred event's files copied to the superevent for a
    # preliminary alert (sky maps, source properties, p_astro and their plots).
    "PRELIMINARY_PRODUCT_TAGS": [v.SKY_LOC_TAG, v.EM_BRIGHT_TAG, v.P_ASTRO_TAG],
    # Detector state-vector check (alerts.detchar_task): GWF frames found by
    # this glob with a {detector} placeholder, e.g. /data/{detector}/*.gwf.
    # Empty: no frames configured, the check is skipped (unknown, not a veto).
    "DETCHAR_FRAME_GLOB": os.environ.get("ORCHESTRATOR_DETCHAR_FRAME_GLOB", ""),
    # Seconds checked (before t_start, after t_end), per group; a lower-case
    # pipeline name as key overrides its group.
    "DETCHAR_PAD_S": {v.CBC: (2.0, 2.0), v.BURST: (1.5, 1.5)},
    # GCN Circular drafts (alerts.circulars): file tags and the user guide
    # the circular points readers to.
    "CIRCULAR": {
        "tags": [v.EM_FOLLOW_TAG],
        "user_guide_url": os.environ.get("ORCHESTRATOR_USER_GUIDE_URL", "https://emfollow.docs.ligo.org/userguide/"),
    },
    # Where notices are sent (alerts.delivery / alerts.transports), several at
    # once: each destination gets every format it lists (json, avro, voevent)
    # of the notices whose role it lists in "roles" ("observation", "test";
    # without "roles", only "observation"). MDC and test candidates' notices
    # have role "test", so a destination listing only "observation" never
    # gets them. Hardware injections (INJ) are never published anywhere
    # (alerts.orchestrator stops before issuing, with the reason in the log).
    "NOTICE_DESTINATIONS": [
        # Files <directory>/<superevent>/<identity>.<json|avro|xml>; without
        # "directory", OUTBOX_DIR (read when sending).
        {"name": "outbox", "transport": "outbox", "formats": ["json", "avro", "voevent"],
         "roles": ["observation", "test"]},
    ] + ([
        # Kafka (confluent-kafka), on when ORCHESTRATOR_KAFKA_SERVERS is set.
        # Message key = notice identity; headers identity, format, serial.
        # "topics" may map a format to its own topic (default: "topic").
        {"name": "kafka", "transport": "kafka",
         "formats": os.environ.get("ORCHESTRATOR_KAFKA_FORMATS", "json").split(","),
         # As GCN's igwn.gwalert topic, MDC (MS...) notices too by default;
         # ORCHESTRATOR_KAFKA_ROLES=observation keeps them off the topic.
         "roles": os.environ.get("ORCHESTRATOR_KAFKA_ROLES", "observation,test").split(","),
         "bootstrap_servers": os.environ["ORCHESTRATOR_KAFKA_SERVERS"],
         "topic": os.environ.get("ORCHESTRATOR_KAFKA_TOPIC", "igwn.gwalert"),
         # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; SASL_SSL when a user is set.
         "security_protocol": os.environ.get(
             "ORCHESTRATOR_KAFKA_SECURITY_PROTOCOL",
             "SASL_SSL" if os.environ.get("ORCHESTRATOR_KAFKA_USERNAME") else "PLAINTEXT"),
         "sasl_mechanism": os.environ.get("ORCHESTRATOR_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
         "sasl_username": os.environ.get("ORCHESTRATOR_KAFKA_USERNAME", ""),
         "sasl_password": os.environ.get("ORCHESTRATOR_KAFKA_PASSWORD", ""),
         # How long one send waits for the broker's acknowledgement (seconds).
         "timeout_s": env_float("ORCHESTRATOR_KAFKA_TIMEOUT_S", 10.0)},
    ] if os.environ.get("ORCHESTRATOR_KAFKA_SERVERS") else []),
    # Vetting a superevent (alerts.orchestrator): an attempt's claim older
    # than claim_timeout_s (well above a whole pass: detchar, copies, plots)
    # is taken to belong to a dead worker and taken over; a failed attempt is
    # tried again after retry_delay_s, up to max_attempts; qcluster resumes at
    # start-up vettings begun within resume_window_s and never finished.
    "VETTING": {"claim_timeout_s": 300.0, "retry_delay_s": 10.0, "max_attempts": 3,
                "resume_window_s": 6 * HOUR_S},
    # Failed deliveries are retried after initial_s * factor**(attempt - 1)
    # seconds (at most max_delay_s) and marked failed after max_attempts. A
    # worker's claim on a delivery older than claim_timeout_s (well above any
    # transport timeout) is taken to belong to a dead worker and is taken over.
    "DELIVERY_RETRY": {
        "initial_s": env_float("ORCHESTRATOR_DELIVERY_RETRY_INITIAL_S", 2.0),
        "factor": 2.0,
        "max_delay_s": 300.0,
        "max_attempts": int(env_float("ORCHESTRATOR_DELIVERY_MAX_ATTEMPTS", 8)),
        "claim_timeout_s": env_float("ORCHESTRATOR_DELIVERY_CLAIM_TIMEOUT_S", 60.0),
    },
    # Days of history kept before `manage.py prune_history` deletes it
    # (alerts.retention); null keeps a kind forever. Notices and payloads,
    # superevent logs and their events' logs are never pruned.
    "HISTORY_RETENTION_DAYS": {
        "rejections": 90,  # refused input
        "step_runs": 180,  # finished step runs
        "event_logs": 365,  # logs of events outside any superevent
        "sent_deliveries": None,  # delivery rows of sent payloads
        "audit_records": None,  # human acts
    },
}
# Any key above may be overridden per deployment with JSON, merged over this
# block: ORCHESTRATOR_POLICY_FILE (a file), then ORCHESTRATOR_POLICY (a
# string). ("CBC", "AllSky") keys are spelled "CBC/AllSky". A bad override
# stops the start with the reason (orchestrator_site/policy.py).
try:
    ORCHESTRATOR = apply_policy_overrides(ORCHESTRATOR, os.environ)
except PolicyError as error:
    raise ImproperlyConfigured(str(error)) from None

# Live IGWN Alert intake (manage.py listen, alerts/listen.py): GraceDB's
# topics "<group>.<kind>" on a Kafka broker, with a hop / IGWN Alert account
# (SCRAM over SASL_SSL when a username is set). The consumer group keeps
# the position across restarts.
IGWN_ALERT = {
    "broker": os.environ.get("IGWN_ALERT_BROKER", "kafka.scimma.org"),
    "group": os.environ.get("IGWN_ALERT_GROUP", "gracedb"),
    "kinds": os.environ.get(
        "IGWN_ALERT_TOPICS",
        "superevent,mdc_superevent,test_superevent,cbc_gstlal,cbc_pycbc,cbc_mbta,cbc_spiir,"
        "burst_cwb,burst_olib,burst_mly",
    ).split(","),
    "consumer_group": os.environ.get("IGWN_ALERT_CONSUMER_GROUP", "alert-orchestrator"),
    "username": os.environ.get("IGWN_ALERT_USERNAME", ""),
    "password": os.environ.get("IGWN_ALERT_PASSWORD", ""),
    "security_protocol": os.environ.get("IGWN_ALERT_SECURITY_PROTOCOL", "SASL_SSL"),
    "sasl_mechanism": os.environ.get("IGWN_ALERT_SASL_MECHANISM", "SCRAM-SHA-512"),
    "progress_interval_s": env_float("IGWN_ALERT_PROGRESS_INTERVAL_S", 10.0),
    "log_interval_s": 10.0,
}

# GraceDB as the source (alerts/gracedb_source.py): files announced by IGWN
# Alert messages are downloaded from GRACEDB_URL (e.g.
# https://gracedb.ligo.org/api/) with HTTP basic credentials when a user is
# set; off when GRACEDB_URL is empty (files then come from
# ORCHESTRATOR_INGEST_FILES_DIR).
GRACEDB = {
    "url": os.environ.get("GRACEDB_URL", ""),
    "username": os.environ.get("GRACEDB_USERNAME", ""),
    "password": os.environ.get("GRACEDB_PASSWORD", ""),
    # Write this orchestrator's products and labels back to that GraceDB.
    "write_back": env_bool("GRACEDB_WRITE_BACK", False),
    "retry": {"initial_s": env_float("GRACEDB_RETRY_INITIAL_S", 2.0), "factor": 2.0,
              "max_attempts": int(env_float("GRACEDB_RETRY_MAX_ATTEMPTS", 6))},
    # Seconds to connect, and then between bytes, before a request counts as timed out (retried).
    "timeout_s": env_float("GRACEDB_TIMEOUT_S", 30.0),
}
