"""Model sources and the files tnt reads and writes."""
