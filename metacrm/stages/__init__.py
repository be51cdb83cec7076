"""Stage graphs: the load-time checks, path analysis and diagrams (networkx lives here)."""
