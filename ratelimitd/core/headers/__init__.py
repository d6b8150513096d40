"""Reading providers' rate-limit headers: structured fields, header families, provider profiles."""
