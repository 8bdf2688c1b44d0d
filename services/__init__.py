"""The HTTP layer (Flask) over the `recsys` library. The library never imports this package."""
