"""The service: settings, database, Celery tasks, inference engines, review and the CLI."""
