"""Every ``icm`` sub-command's module; ``graphs/cli.py`` mounts them (see ARCHITECTURE.md).

Each module parses options, opens the store through ``data.store`` and prints; the work itself
lives in the layers below (``data``, ``evaluators``, ``agents``, ``finetune``) or in ``graphs``.
"""
