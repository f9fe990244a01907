"""The REST API (/api/v1): one router per kind of object, all scoped to the caller's
organisation."""
