"""The `lbrec` command line: parses, dispatches, prints, exits."""
