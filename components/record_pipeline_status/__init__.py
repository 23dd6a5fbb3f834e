"""Kubeflow component for ``record_pipeline_status``."""
