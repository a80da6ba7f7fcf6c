"""Demo workflows, registered when the app starts (see workflows/graphs.py).

They never call a model: text is "drafted" by deterministic fakes, so demos and tests
behave the same everywhere.
"""
