"""``icm view``: a local, read-only web viewer over the DuckDB store (runs, samples, traces,
comparisons, judge calibration, fine-tune curves), and its self-contained HTML export.

``snapshot`` holds the part a writer uses (consistent snapshots for readers during a run); the
web app (FastAPI, Jinja2) is imported only by ``app``, ``export`` and ``cli``.
"""
