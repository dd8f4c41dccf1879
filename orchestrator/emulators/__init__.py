"""Stand-in HTTP servers for the providers the orchestrator revokes credentials at."""
