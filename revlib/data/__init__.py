"""Data sets: forward sources, teachers that write reverse examples, the r1k sets and pairs (notebook 01), set files, per-step negatives and the task-world benchmark sets."""
