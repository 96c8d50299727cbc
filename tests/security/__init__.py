"""Security tests: hostile input, tenancy, tamper evidence, tokens, the HTTP surface."""
