"""The engine: torch and numpy only. It never imports FastAPI or the store."""
