"""The `valorl` command-line interface."""
