"""multibackup: encrypted, deduplicated, compressed backups to several clouds at once."""

__version__ = "0.1.0"
