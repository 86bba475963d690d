"""How a plan or a run is shown: the HTML forecast report, Prometheus metrics files, progress bars and log events."""
