"""Task ``segmentation``: federated brain-tumour segmentation of multimodal MRI with MONAI."""
