"""crmodel."""
