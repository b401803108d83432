"""``icm view``: a local, read-only web viewer over the DuckDB store (runs, samples, traces,
comparisons, judge calibration, fine-tune curves), and its self-contained HTML export.

The snapshots a writer publishes for readers during a run, and the reader that opens them, are
in ``data.store.snapshot``; the reads are ``data.store.browse``. The web app (FastAPI, Jinja2)
is imported only by ``app``, ``export`` and ``graphs.commands.view``.
"""
