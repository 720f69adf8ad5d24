"""Built-in dispatchers, registered through the same entry-point group as any plugin."""
