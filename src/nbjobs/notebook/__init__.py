"""Everything that reads, parameterises and executes one notebook."""
