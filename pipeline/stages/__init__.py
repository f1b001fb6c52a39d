"""Pipeline stages. Each stage: config section -> datatrove steps -> records in, shards + stats out."""
