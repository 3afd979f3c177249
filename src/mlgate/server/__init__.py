"""The server's composition root: `control_plane` builds and wires every part; `record` writes server.json."""
