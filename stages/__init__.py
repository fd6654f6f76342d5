"""One Typer command per DVC stage. Thin wiring: parse options, read own params section, call capt."""
