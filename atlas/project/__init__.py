"""A project on disk: `atlas new`, the folder markers, the packaged resources."""
