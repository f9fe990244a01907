"""Fixtures for Azurite (Azure Blob) and rclone serve webdav on loopback."""
