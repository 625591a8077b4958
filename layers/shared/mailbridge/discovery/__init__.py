"""Email discovery: the provider, the method and the servers an address's domain calls for."""
