"""Content-addressed build cache: model keys, the local store, and the remote store."""
