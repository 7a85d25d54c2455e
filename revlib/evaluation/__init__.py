"""Benchmarks: s1-style answer extraction, grading (math-verify, letters, task verifiers), an optional LLM judge,
lm-evaluation-harness tasks and backends, and the paper's Tables 1 and 2.

Submodules import lazily what they need, so `revlib.core.grade` stays light for lm-eval's task utils.
"""
