"""Metamodel -> SQLAlchemy Core tables (pure), naming, column types."""
