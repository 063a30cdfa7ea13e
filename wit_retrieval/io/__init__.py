"""Readers and writers of the on-disk formats (WIT/EI/MMIR TSV, SQL dumps, parquet shards, runs)."""
