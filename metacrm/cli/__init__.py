"""The command line (typer). Each command parses, makes one library call, prints, exits.
Library modules are imported inside the commands so that start-up stays fast."""
