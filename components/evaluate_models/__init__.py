"""Kubeflow component for ``evaluate_models``."""
