"""Logs and traces: run and step ids on every record, OpenTelemetry spans per attempt."""
