"""Kubeflow component for ``account_privacy``."""
