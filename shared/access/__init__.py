"""Who may use the service: projects, their limits, and the API keys that act for them (with a role)."""
