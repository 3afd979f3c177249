"""Support code the tests share: the worlds they build, load generation, a private PostgreSQL."""
