"""The demo: one readable script of steps through mlgate's lifecycle, on the embedded defaults.

Each step goes through the public surface (CLI-equivalent SDK calls, plain MLflow code against the
server's door) exactly as a team would, and prints what it did. `lifecycle.run` is the whole script;
`session.Demo` holds the demo's server, accounts and project; `outer` and `monitoring` are its later steps.
"""
