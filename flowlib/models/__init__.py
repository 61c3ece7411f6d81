"""Models of flowlib, one file per paper (import them from their modules, e.g. ``flowlib.models.flow.Flow``)."""
