"""The `tnt` command line: one module per command, thin wrappers over the library."""
