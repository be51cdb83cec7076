"""Data in and out of a CRM: the demo, CSV import and export."""
