"""One module per DVC stage: ``python -m stages.<name>``; each reads its section of params.yaml."""
