"""The pure monitoring engine: events in, decisions out. Imports only the standard library."""
