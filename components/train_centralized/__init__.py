"""Kubeflow component for ``train_centralized``."""
