"""quantum: see README.md."""

__all__: list[str] = []
