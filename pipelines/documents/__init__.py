"""Document pipeline on Ray Data: read, clean, exact and near dedup, chunk, embed, write."""
