"""Readers (HF datasets, Parquet, JSONL, WARC, HTML folders) and the atomic Parquet shard writer."""
