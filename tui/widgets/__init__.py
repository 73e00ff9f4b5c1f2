"""The app's widgets: one per view, plus the small pieces they share."""
