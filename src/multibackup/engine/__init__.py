"""Engine: the operations users run (backup, restore, check, forget, prune, diff, stats)."""
