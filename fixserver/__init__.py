"""fixserver package."""
