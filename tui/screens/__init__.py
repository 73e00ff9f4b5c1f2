"""The app's screens: the main tabbed screen and its modal dialogs."""
