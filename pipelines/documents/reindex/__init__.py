"""`refinery run reindex`: the next index version, built incrementally from the corpus against
the champion, with the real-time update log folded in, validated before it is handed on."""
