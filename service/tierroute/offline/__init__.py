"""Offline work on recorded outcomes and the query log: training (`training`), evaluation and
calibration (`evaluation`), the operator commands (`cli`), audits, drift and gated retraining.

Never imported by the serving wings; importing this package itself loads nothing.
"""
