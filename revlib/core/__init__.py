"""Foundations every layer may use: files and JSON, secrets redaction, the data contract's records, chat rendering, answer extraction and grading, statistics, and report display."""
