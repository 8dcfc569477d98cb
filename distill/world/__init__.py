"""The deterministic offline demo world: OpenMoji merchandise, template personas, a known utility."""
