"""MAP at tIoU thresholds and AR@AN, identical to the ActivityNet evaluator (not implemented yet: issue #6).

This package holds the place the project's layout gives it; it reads the feature files written by
`python -m extract` (see `extract.read_features`).
"""
