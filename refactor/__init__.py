"""RefactorNet action / co-occurrence feature refactoring (not implemented yet: issue #4).

This package holds the place the project's layout gives it; it reads the feature files written by
`python -m extract` (see `extract.read_features`).
"""
