"""Fixtures for a real OpenSSH SFTP server on loopback (filled in with the SFTP backend)."""
