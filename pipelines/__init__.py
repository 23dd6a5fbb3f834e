"""Kubeflow Pipelines definitions; compiled by ``privfed pipeline compile``."""
