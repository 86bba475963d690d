"""The engine's Alembic migrations, shipped inside the wheel as ``retention._migrations``."""
