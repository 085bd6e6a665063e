"""Feature encoding: frozen text encoder, schema-driven field encoders."""
