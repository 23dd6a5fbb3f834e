"""Kubeflow component for ``check_params``."""
