"""Kubeflow component for ``partition_data``."""
