"""Kubeflow component for ``register_model``."""
