"""The control plane: REST API, dashboard, scheduler and in-process worker."""
