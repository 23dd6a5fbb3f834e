"""Kubeflow components of the privacy-utility and federation-size sweep pipeline."""
