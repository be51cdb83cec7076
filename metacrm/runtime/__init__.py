"""The CRM runtime: connect, records, links, deletes (SQLAlchemy lives here and in storage)."""
