"""Task ``extraction``: federated clinical information extraction with LoRA."""
