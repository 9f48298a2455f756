"""JSON log lines (ORCHESTRATOR_LOG_FORMAT=json): one object per line with
the time, level, logger and message, plus the superevent, event and step a
record names (``extra={"superevent": ..., "event": ..., "step": ...}``), so
that a log shipper can index them without parsing prose."""
import json
import logging

CONTEXT_FIELDS = ("superevent", "event", "step", "status", "duration_s")


class JsonFormatter(logging.Formatter):
    def format(self, record):
        line = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                "message": record.getMessage()}
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)
