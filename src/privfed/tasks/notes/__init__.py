"""Task ``notes``: federated clinical note generation with a small GPT-2 (see ``task.py``)."""
