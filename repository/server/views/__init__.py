"""Flask blueprints, one per concern: health, device reports, publisher uploads."""
