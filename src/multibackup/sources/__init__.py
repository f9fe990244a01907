"""Sources: where backup data comes from. Only the local filesystem so far."""
