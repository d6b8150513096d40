"""Rate limiting inside the HTTP clients users already have (aiohttp)."""
