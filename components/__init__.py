"""Kubeflow components: one folder per pipeline stage, each a thin adapter over its ``run()``."""
