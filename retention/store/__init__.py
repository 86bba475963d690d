"""The engine's own database: its tables, its migrations, and how a database URL becomes an engine."""
