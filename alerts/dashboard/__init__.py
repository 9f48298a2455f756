"""The advocate dashboard: browser pages over the same data and decision
service as the REST API (every action calls alerts.decisions)."""
