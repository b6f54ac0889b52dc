"""The SQL index (SQLAlchemy Core): what is stored, where, and how to find it."""
