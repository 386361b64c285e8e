"""The BSN-style detector (boundary proposals, RoI heads, Soft-NMS) (not implemented yet: issue #5).

This package holds the place the project's layout gives it; it reads the feature files written by
`python -m extract` (see `extract.read_features`).
"""
