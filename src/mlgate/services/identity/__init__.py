"""Identity: users, their role bindings and API tokens, and turning a bearer token into a Principal."""
