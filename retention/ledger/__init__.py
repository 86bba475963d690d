"""The purge ledger: the hash chain, its per-record items, Merkle proofs, queries and the engine's own evidence."""
