"""Connection methods. Importing this package registers every method in `registry.METHODS`."""
