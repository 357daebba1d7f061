"""pytest plugin for fault campaigns (filled in by the faultlab issue)."""
