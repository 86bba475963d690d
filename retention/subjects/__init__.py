"""What people ask of the engine about records: legal holds, erasure requests, disposition review."""
