"""Running the engine in production: schedules, fleets of databases, workers, metrics, progress and reports."""
