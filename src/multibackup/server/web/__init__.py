"""The web dashboard: static files (no build step) and the small router that serves them."""

from multibackup.server.web.pages import STATIC_DIR, mount_static, router

__all__ = ["STATIC_DIR", "mount_static", "router"]
