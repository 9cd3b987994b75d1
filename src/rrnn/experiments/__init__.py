"""Experiments: sweeps of training runs (``sweep``) and their reports (``report``)."""
