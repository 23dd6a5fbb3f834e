"""Kubeflow component for ``train_federated``."""
