"""Request and response bodies of the REST API, one module per area: one schema per direction, never ORM
objects. Import each from its module (`schemas.models`, `schemas.endpoints`, ...); nothing is re-exported here."""
