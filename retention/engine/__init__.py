"""The engine: from a pack and a database to the transitions due, and carrying them out in batches."""
