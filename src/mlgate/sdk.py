"""`mlgate.sdk`: the public Python client of the mlgate REST API."""

from mlgate.interfaces.sdk.client import ApiError, Client, ServerNotFoundError

__all__ = ["ApiError", "Client", "ServerNotFoundError"]
