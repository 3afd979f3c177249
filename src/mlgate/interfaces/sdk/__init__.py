"""The Python SDK: a thin httpx client of the REST API, which the CLI is built on."""
