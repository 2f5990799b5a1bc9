"""Batch renders on a Ray cluster (`python -m engine render --ray ...`).

Only `engine.batch.driver` and `engine.batch.pool` import Ray, and only the CLI's `--ray`
path imports them: without `--ray`, nothing here touches Ray.
"""
