"""Kubeflow component for ``validate_data``."""
