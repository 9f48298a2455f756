"""A GraceDB-compatible REST surface (``/gracedb/api/``) over the
orchestrator's own services, so that ``ligo-gracedb`` and the ``gracedb``
command line work against this server unmodified."""
