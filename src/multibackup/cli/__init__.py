"""The command-line front-end: parses arguments, calls the engine, prints results."""
