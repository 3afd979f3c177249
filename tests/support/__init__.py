"""Support code the tests share: the worlds they build (and the session's templates of them, `worlds`), load
generation, a private PostgreSQL."""
