"""Connection methods: `registry.METHODS` lists them; each builder module is imported when it is used."""
