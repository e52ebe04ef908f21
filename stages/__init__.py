"""One small script per DVC stage; each is run as `python -m stages.<name>` (see dvc.yaml)."""
