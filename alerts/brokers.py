"""django-q2's Redis broker, recording each task the cluster takes.

The stock broker pops a task off its Redis list and forgets it; the
cluster's pusher then holds it in memory until a worker is free, so a forced
stop would lose it. This one writes the task's RunningTask row as it is
taken (``alerts.workers.record_received``), and qcluster's next start queues
it again. Selected in settings (``Q_CLUSTER["broker_class"]``) when
REDIS_URL is set. A task popped and not yet recorded (a kill within that
millisecond) is still lost.
"""
from django_q.brokers.redis_broker import Redis

from alerts.workers import record_received


class RecordingRedis(Redis):
    def dequeue(self):
        taken = super().dequeue()
        if not taken:
            return taken
        return [(ack_id, record_received(package)) for ack_id, package in taken]
