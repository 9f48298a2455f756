#!/usr/bin/env bash
# Bring up the whole orchestrator on this machine: database, web server,
# worker cluster, and a replay of mock events. Ctrl-C stops everything.
set -euo pipefail
# A development run on this machine: a generated key (var/secret_key), debug pages.
export ORCHESTRATOR_DEV=${ORCHESTRATOR_DEV:-1} DJANGO_DEBUG=${DJANGO_DEBUG:-1}
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PORT=${PORT:-8000}
REPLAY_COUNT=${REPLAY_COUNT:-10}
# BAYESTAR takes 20-60 s per event on a two-core laptop and the demo's one
# slow worker makes the sky maps one at a time (preferred events first), so
# the demo lets a preliminary alert wait longer for its sky map than the
# default ANNOTATION_MAX_WAIT_S, sized for a deployment with workers to spare.
export ORCHESTRATOR_ANNOTATION_MAX_WAIT_S=${ORCHESTRATOR_ANNOTATION_MAX_WAIT_S:-900}

$PY manage.py migrate --noinput
DJANGO_SUPERUSER_USERNAME=admin DJANGO_SUPERUSER_PASSWORD=admin DJANGO_SUPERUSER_EMAIL=admin@example.org \
  $PY manage.py createsuperuser --noinput >/dev/null 2>&1 || true
ADVOCATE_TOKEN=$($PY manage.py add_user advocate --advocate --password advocate 2>/dev/null \
  || $PY -c "import django,os;os.environ.setdefault('DJANGO_SETTINGS_MODULE','orchestrator_site.settings');django.setup();from rest_framework.authtoken.models import Token;print(Token.objects.get(user__username='advocate').key)")

pids=()
stopped=0
cleanup() {
  [ "$stopped" = 1 ] && return
  stopped=1
  echo "Stopping the web server and the worker cluster ..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "Stopped."
}
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

$PY manage.py runserver "127.0.0.1:$PORT" --noreload > var/web.log 2>&1 &
pids+=($!)
$PY manage.py qcluster > var/worker.log 2>&1 &
pids+=($!)
sleep 3
echo "Replaying $REPLAY_COUNT mock sources (MDC events) ..."
Q_LOG_LEVEL=WARNING $PY manage.py replay --count "$REPLAY_COUNT" --rate 2
cat <<MSG

The orchestrator is running:
  dashboard  http://127.0.0.1:$PORT/   sign in as an advocate: user advocate, password advocate (or admin/admin)
  admin      http://127.0.0.1:$PORT/admin/   (user admin, password admin)
             superevents: http://127.0.0.1:$PORT/admin/alerts/superevent/
  REST API   http://127.0.0.1:$PORT/api/superevents/   (docs: /api/docs/)
  advocate   user advocate, password advocate; API token $ADVOCATE_TOKEN, e.g.
             curl -u advocate:advocate http://127.0.0.1:$PORT/api/superevents/?waiting=true
             .venv/bin/python manage.py send_alert <superevent> initial --dry-run
  notices    var/outbox/<superevent>/ (JSON, Avro, VOEvent), once BAYESTAR has made
             each sky map (10-30 s per event on a laptop, one at a time)
  logs       var/web.log (web server), var/worker.log (django-q2 workers)
Press Ctrl-C to stop.
MSG
wait
