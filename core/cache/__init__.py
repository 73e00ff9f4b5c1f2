"""Build cache: how a step's key is made (``keys``)."""
