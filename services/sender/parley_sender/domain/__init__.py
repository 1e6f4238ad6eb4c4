"""The sender's pure core: rules as plain classes and functions, no I/O."""
