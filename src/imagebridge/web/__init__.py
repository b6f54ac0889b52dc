"""HTTP composition: the FastAPI application with every surface mounted."""
