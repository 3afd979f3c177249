"""API routers, one per concept."""
