"""Kubeflow component for ``generate_data``."""
