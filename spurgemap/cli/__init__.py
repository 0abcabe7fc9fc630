"""The `spurgemap` command line: thin typer commands over the library (the only typer user)."""
