"""Kubeflow component for ``train_local``."""
