"""``privfed dashboard``: a live view of pipeline runs, read from the MLflow tracking store.

:mod:`~privfed.dashboard.data` turns the store into frames, :mod:`~privfed.dashboard.app` is
the Streamlit page and :mod:`~privfed.dashboard.launch` starts ``streamlit run`` on it.
"""

from __future__ import annotations

__all__: list[str] = []
