"""Running the library unattended: on a schedule, over a fleet of databases, on Celery workers."""
