"""PrivFed: federated, differentially private training of medical models across hospitals."""

from __future__ import annotations

__version__ = "0.1.0"
