"""Database models, the session factory, queries and migrations."""
