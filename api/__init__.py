"""Query API with auth and the live dashboard."""
